"""The test functions on databend-udf's UDFServer, following rpcop's command
contract: it listens on RPCOP_BIND and prints the port it bound."""

from databend_udf import UDFServer, udf

import functions


def hosted(name):
    inputs, result, batched = functions.SIGNATURES[name]
    return udf(input_types=inputs, result_type=result, name=name, batch_mode=batched, io_threads=None)(
        functions.plain(name)
    )


if __name__ == "__main__":
    functions.serve_on(UDFServer, hosted)
