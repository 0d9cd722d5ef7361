"""The test functions on RisingWave's arrow-udf UdfServer, following rpcop's
command contract: it listens on RPCOP_BIND and prints the port it bound."""

from arrow_udf import UdfServer, udf

import functions


def hosted(name):
    inputs, result, batched = functions.SIGNATURES[name]
    # arrow-udf hands a batched function Python lists
    return udf(input_types=inputs, result_type=result, name=name, batch=batched)(functions.plain(name))


if __name__ == "__main__":
    functions.serve_on(UdfServer, hosted)
