"""The test functions as an rpcop instance, with the kit (rpcop_service)."""

import pyarrow as pa

from rpcop_service import serve, udf

import functions


def hosted(name):
    inputs, result, batched = functions.SIGNATURES[name]
    body = functions.plain(name)
    if batched:
        # the kit hands a batched function pyarrow arrays
        def batch(*arrays):
            return body(*[a.to_pylist() for a in arrays])

        batch.__name__ = name
        return udf(input_types=inputs, result_type=result, batch=True)(batch)
    return udf(input_types=inputs, result_type=result, name=name)(body)


if __name__ == "__main__":
    serve(*[hosted(name) for name in functions.SIGNATURES])
