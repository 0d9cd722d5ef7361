"""A misbehaving instance for the tests: rpcop's kit, whose answers are
wrong on purpose. `short` answers one value too few, `wrong_type` answers
text where a BIGINT is due. Everything else (token, stats, sequence
numbers) is the kit's, so only the answers are at fault."""

import pyarrow as pa

from rpcop_service import serve, udf
from rpcop_service import server as kit


@udf(input_types=["BIGINT"], result_type="BIGINT")
def short(x):
    return x


@udf(input_types=["BIGINT"], result_type="BIGINT")
def wrong_type(x):
    return x


_evaluate = kit.InstanceServer._evaluate


def _misbehave(self, function, batch):
    result = _evaluate(self, function, batch)
    if function.name == "short":
        return result.slice(0, max(len(result) - 1, 0))
    if function.name == "wrong_type":
        return pa.array(["not a number"] * len(result))
    return result


kit.InstanceServer._evaluate = _misbehave

if __name__ == "__main__":
    serve(short, wrong_type)
