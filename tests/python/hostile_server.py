"""A misbehaving instance for the tests: rpcop's kit, whose answers are
wrong on purpose. `short` answers one value too few, `wrong_type` answers
text where a BIGINT is due, `misplaced` says its answer's body lies in the
caller's shared memory, far outside it. Everything else (token, stats,
sequence numbers) is the kit's, so only the answers are at fault."""

import struct
import threading

import pyarrow as pa

from rpcop_service import serve, udf
from rpcop_service import server as kit


@udf(input_types=["BIGINT"], result_type="BIGINT")
def short(x):
    return x


@udf(input_types=["BIGINT"], result_type="BIGINT")
def wrong_type(x):
    return x


@udf(input_types=["BIGINT"], result_type="BIGINT")
def misplaced(x):
    return x


# docs/protocol.md, "A placed body": the prefix, slot (u32), offset and
# length (u64s), little-endian, after the message's own app_metadata
FORGED_PLACEMENT = b"rpcop-shm" + struct.pack("<IQQ", 0, 1 << 40, 4096)
_answering = threading.local()


_evaluate = kit.InstanceServer._evaluate


def _misbehave(self, function, batch):
    result = _evaluate(self, function, batch)
    if function.name == "short":
        return result.slice(0, max(len(result) - 1, 0))
    if function.name == "wrong_type":
        return pa.array(["not a number"] * len(result))
    # the answer's sequence number, next, gets the forged placement
    _answering.misplaced = function.name == "misplaced"
    return result


class _Forging:
    """pyarrow as the kit sees it, but the sequence number of a `misplaced`
    answer (the next 8-byte buffer this thread makes) carries a placement."""

    def __getattr__(self, name):
        return getattr(pa, name)

    def py_buffer(self, data):
        if getattr(_answering, "misplaced", False) and len(data) == 8:
            _answering.misplaced = False
            data = bytes(data) + FORGED_PLACEMENT
        return pa.py_buffer(data)


kit.InstanceServer._evaluate = _misbehave
kit.pa = _Forging()

if __name__ == "__main__":
    serve(short, wrong_type, misplaced)
