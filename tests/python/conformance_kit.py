"""The conformance functions as an rpcop instance, with the kit."""

from rpcop_service import serve, udf

from conformance_functions import SIGNATURES

if __name__ == "__main__":
    serve(*[udf(inputs, result, name=name)(body) for name, (body, inputs, result) in SIGNATURES.items()])
