"""Calls a standalone `rpcop serve` with pyarrow's Flight client, from the
wire protocol in docs/protocol.md alone (none of rpcop's client code).

Usage: python3 tests/python/pyarrow_client.py PATH_TO_RPCOP_BINARY
Prints 'N passed, N failed' and exits non-zero on any failure.
"""

import os
import signal
import struct
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.flight as flight

TOKEN = "py-s3cret"


# every blocking call below has a deadline: the whole run is bounded too
DEADLINE_S = 240


def start(binary, token_file):
    proc = subprocess.Popen(
        [binary, "serve", "--bind", "127.0.0.1:0", "--function", "upper",
         "--function", "embed", "--token-file", token_file],
        stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    # the first stdout line: a URL, http://host:port
    address = proc.stdout.readline().strip().removeprefix("http://")
    if not address:
        proc.kill()
        raise RuntimeError("rpcop serve printed no address")
    return proc, address


def options(token=TOKEN):
    return flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {token}".encode())], timeout=20)


def test_exchange_with_sequence_numbers(client):
    descriptor = flight.FlightDescriptor.for_path("upper")
    writer, reader = client.do_exchange(descriptor, options())
    batch = pa.record_batch([pa.array(["a", None, "ß"])], names=["s"])
    writer.begin(batch.schema)
    for seq in (7, 8):
        writer.write_with_metadata(batch, pa.py_buffer(struct.pack("<Q", seq)))
    writer.done_writing()
    seqs = []
    for _ in range(2):
        chunk = reader.read_chunk()
        seqs.append(struct.unpack("<Q", chunk.app_metadata.to_pybytes())[0])
        assert chunk.data.column(0).to_pylist() == ["A", None, "SS"], chunk.data
    writer.close()
    assert seqs == [7, 8], seqs


def test_exchange_without_sequence_numbers(client):
    descriptor = flight.FlightDescriptor.for_path("upper")
    writer, reader = client.do_exchange(descriptor, options())
    batch = pa.record_batch([pa.array(["x"])], names=["s"])
    writer.begin(batch.schema)
    writer.write_batch(batch)
    writer.done_writing()
    table = reader.read_all()
    assert table.column(0).to_pylist() == ["X"], table


def test_flight_info_convention(client):
    info = client.get_flight_info(flight.FlightDescriptor.for_path("embed"), options())
    assert info.total_records == 1, info.total_records
    assert [f.name for f in info.schema][-1] == "embed", info.schema
    names = sorted(i.descriptor.path[0].decode() for i in client.list_flights(options=options()))
    assert names == ["embed", "upper"], names


def test_wrong_token_is_rejected(client):
    try:
        list(client.do_action(flight.Action("health", b""), options("nope")))
    except flight.FlightUnauthenticatedError as error:
        assert "wrong bearer token" in str(error), error
    else:
        raise AssertionError("a wrong token was accepted")


def test_unknown_function_is_named(client):
    descriptor = flight.FlightDescriptor.for_path("nope")
    writer, reader = client.do_exchange(descriptor, options())
    batch = pa.record_batch([pa.array(["x"])], names=["s"])
    try:
        writer.begin(batch.schema)
        writer.write_batch(batch)
        writer.done_writing()
        reader.read_all()
    except (flight.FlightError, KeyError) as error:  # NOT_FOUND is a KeyError
        assert "unknown function 'nope'" in str(error), error
    else:
        raise AssertionError("an unknown function was served")
    health = list(client.do_action(flight.Action("health", b""), options()))
    assert health[0].body.to_pybytes() == b"ok"


def main():
    # SIGALRM ends a run stuck in a read (the default action exits)
    signal.alarm(DEADLINE_S)
    binary = sys.argv[1]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN)
        proc, address = start(binary, token_file)
        try:
            client = flight.connect(f"grpc://{address}")
            for name, test in sorted(globals().items()):
                if name.startswith("test_") and callable(test):
                    try:
                        test(client)
                        passed += 1
                        print(f"ok   {name}")
                    except Exception as error:  # report every failure, then fail
                        failed += 1
                        print(f"FAIL {name}: {error!r}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
