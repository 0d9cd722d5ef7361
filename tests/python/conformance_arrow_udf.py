"""The conformance functions on RisingWave's arrow-udf UdfServer."""

import os

from arrow_udf import UdfServer, udf

from conformance_functions import SIGNATURES

if __name__ == "__main__":
    bind = os.environ.get("RPCOP_BIND", "127.0.0.1:0")
    server = UdfServer(location=bind)
    for name, (body, inputs, result) in SIGNATURES.items():
        server.add_function(udf(input_types=inputs, result_type=result, name=name)(body))
    print(f"{bind.rpartition(':')[0]}:{server.port}", flush=True)
    server.serve()
