"""The functions rpcop's language tests serve: plain Python, with their SQL
signatures, so that the kit, arrow-udf and databend-udf servers host the
very same code, and `direct.py` computes the expected results with it."""

import math
import os
import resource
import sys
import time


def reverse_text(s):
    if s == "boom":
        raise ValueError("cannot reverse boom")
    return None if s is None else s[::-1]


def gcd(x, y):
    if x is None or y is None:
        return None
    while y:
        x, y = y, x % y
    return abs(x)


def word_count(texts):
    """Batched: a list of strings in, a list of counts out."""
    return [None if t is None else len(t.split()) for t in texts]


def slow_square(x):
    """Row-wise, 2 ms a row: a query over it runs long enough to lose an
    instance in the middle."""
    time.sleep(0.002)
    return None if x is None else x * x


def nap(ms):
    """Row-wise: sleeps `ms` milliseconds and returns them, for tests of
    cancellation."""
    if ms is None:
        return None
    time.sleep(ms / 1000)
    return ms


def hypot(x, y):
    if x is None or y is None:
        return None
    return math.hypot(x, y)


def add_one(x):
    """The trivial function of the Python bench (row-wise)."""
    return None if x is None else x + 1


def add_one_batch(xs):
    """The same, batched: a list in, a list out."""
    return [None if x is None else x + 1 for x in xs]


def instance_info(x):
    """Where the row was evaluated: the instance's contract variables."""
    keys = ["RPCOP_SERVICE", "RPCOP_INSTANCE", "CUDA_VISIBLE_DEVICES", "RPCOP_MEMORY_LIMIT", "EXTRA"]
    data_limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    return "|".join([os.environ.get(k, "") for k in keys] + [str(data_limit), os.getcwd()])


# name: (argument types, result type, batched)
SIGNATURES = {
    "reverse_text": (["VARCHAR"], "VARCHAR", False),
    "gcd": (["BIGINT", "BIGINT"], "BIGINT", False),
    "word_count": (["VARCHAR"], "BIGINT", True),
    "slow_square": (["BIGINT"], "BIGINT", False),
    "nap": (["BIGINT"], "BIGINT", False),
    "hypot": (["FLOAT64", "FLOAT64"], "FLOAT64", False),
    "instance_info": (["BIGINT"], "VARCHAR", False),
    "add_one": (["BIGINT"], "BIGINT", False),
    "add_one_batch": (["BIGINT"], "BIGINT", True),
}


def plain(name):
    return globals()[name]


def serve_on(server_class, hosted):
    """Serves every function on a Flight UDF server of `server_class`
    (arrow-udf's or databend-udf's), following rpcop's command contract: it
    listens on argv[1] or RPCOP_BIND and prints the address it bound."""
    bind = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RPCOP_BIND", "127.0.0.1:0")
    server = server_class(location=bind)
    for name in SIGNATURES:
        server.add_function(hosted(name))
    print(f"{bind.rpartition(':')[0]}:{server.port}", flush=True)
    server.serve()
