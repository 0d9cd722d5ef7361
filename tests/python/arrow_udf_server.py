"""The test functions on RisingWave's arrow-udf UdfServer, following rpcop's
command contract: it listens on RPCOP_BIND and prints the port it bound."""

import os
import sys

from arrow_udf import UdfServer, udf

import functions


def hosted(name):
    inputs, result, batched = functions.SIGNATURES[name]
    # arrow-udf hands a batched function Python lists
    return udf(input_types=inputs, result_type=result, name=name, batch=batched)(functions.plain(name))


if __name__ == "__main__":
    bind = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RPCOP_BIND", "127.0.0.1:0")
    server = UdfServer(location=bind)
    for name in functions.SIGNATURES:
        server.add_function(hosted(name))
    host = bind.rpartition(":")[0]
    print(f"{host}:{server.port}", flush=True)
    server.serve()
