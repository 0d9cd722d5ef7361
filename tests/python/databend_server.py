"""The test functions on databend-udf's UDFServer, following rpcop's command
contract: it listens on RPCOP_BIND and prints the port it bound."""

import os
import sys

from databend_udf import UDFServer, udf

import functions


def hosted(name):
    inputs, result, batched = functions.SIGNATURES[name]
    return udf(input_types=inputs, result_type=result, name=name, batch_mode=batched, io_threads=None)(
        functions.plain(name)
    )


if __name__ == "__main__":
    bind = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RPCOP_BIND", "127.0.0.1:0")
    server = UDFServer(location=bind)
    for name in functions.SIGNATURES:
        server.add_function(hosted(name))
    host = bind.rpartition(":")[0]
    print(f"{host}:{server.port}", flush=True)
    server.serve()
