"""Computes a test function directly in Python: reads {"function": name,
"rows": [[arg, ...], ...]} as JSON on stdin, prints the results as a JSON
list (an error's message as {"error": message}). Floats travel both ways
as {"f64_bits": n}, their exact IEEE bits."""

import json
import struct
import sys

import functions


def main():
    request = json.load(sys.stdin)
    name = request["function"]
    rows = [[decoded(v) for v in row] for row in request["rows"]]
    body = functions.plain(name)
    _, _, batched = functions.SIGNATURES[name]
    if batched:
        results = body(*[list(column) for column in zip(*rows)]) if rows else []
    else:
        results = []
        for row in rows:
            try:
                results.append(body(*row))
            except Exception as error:
                results.append({"error": f"{type(error).__name__}: {error}"})
    json.dump([exact(v) for v in results], sys.stdout)


def decoded(value):
    """A float sent as its IEEE bits, or any other value as it is."""
    if isinstance(value, dict) and "f64_bits" in value:
        return struct.unpack("<d", struct.pack("<Q", value["f64_bits"]))[0]
    return value


def exact(value):
    """A float as its IEEE bits (JSON's decimal text may not round-trip)."""
    if isinstance(value, float):
        return {"f64_bits": struct.unpack("<Q", struct.pack("<d", value))[0]}
    return value


if __name__ == "__main__":
    main()
