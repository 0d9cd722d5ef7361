"""The kit on its own: types, the @udf surface, and an instance served in
this process, called with a plain pyarrow Flight client."""

import json
import struct
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest

from rpcop_service import InstanceServer, to_data_type, udf

TOKEN = "kit-test-token"
AUTH = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
# a caller like rpcop's: it half-closes on rpcop-ending, so the kit reads
# its requests ahead; the deadline bounds a test that would otherwise hang
READS_AHEAD = flight.FlightCallOptions(
    headers=[(b"authorization", f"Bearer {TOKEN}".encode()), (b"x-rpcop-ending", b"1")], timeout=20
)
PLAIN = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {TOKEN}".encode())], timeout=20)
GATE = threading.Event()
# set once request 1 of `gated` is evaluating (waiting at the gate)
AT_GATE = threading.Event()


@udf(input_types=["VARCHAR"], result_type="VARCHAR")
def reverse_text(s):
    if s == "boom":
        raise ValueError("cannot reverse boom")
    return None if s is None else s[::-1]


@udf(input_types=["BIGINT", "BIGINT"], result_type="BIGINT", batch=True)
def add(a, b):
    return pc.add(a, b)


@udf(input_types=["INT"], result_type="VARCHAR", batch=True)
def wrong_length(a):
    return ["only one"]


@udf(input_types=["BIGINT"], result_type="BIGINT")
def gated(x):
    """Request 1 waits until the test opens the gate."""
    if x == 1:
        AT_GATE.set()
        if not GATE.wait(10):
            raise TimeoutError("the gate stayed shut")
    return x


@pytest.fixture(scope="module")
def server():
    instance = InstanceServer([reverse_text, add, wrong_length, gated], "grpc://127.0.0.1:0", TOKEN, threads=2)
    thread = threading.Thread(target=instance.serve, daemon=True)
    thread.start()
    yield instance
    instance.shutdown()
    thread.join(10)


@pytest.fixture()
def client(server):
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as c:
        yield c


def seq(n):
    return pa.py_buffer(struct.pack("<Q", n))


def exchange(client, function, batches, numbers=None):
    """Sends `batches` on one exchange; returns [(column, seq)] or raises."""
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path(function), options=AUTH)
    answers = []
    with writer:
        writer.begin(batches[0].schema)
        for i, batch in enumerate(batches):
            if numbers is None:
                writer.write_batch(batch)
            else:
                writer.write_with_metadata(batch, seq(numbers[i]))
        writer.done_writing()
        for chunk in reader:
            if chunk.data is None:
                continue  # not an answer
            number = struct.unpack("<Q", chunk.app_metadata.to_pybytes())[0] if chunk.app_metadata else None
            answers.append((chunk.data.column(0).to_pylist(), number))
    return answers


def test_sql_type_names():
    assert to_data_type("varchar") == pa.string()
    assert to_data_type("BIGINT") == pa.int64()
    assert to_data_type("REAL[]") == pa.list_(pa.float32())
    assert to_data_type("DECIMAL(10, 2)") == pa.decimal128(10, 2)
    assert to_data_type("STRUCT<a:INT, b:STRUCT<c:VARCHAR>>") == pa.struct(
        [("a", pa.int32()), ("b", pa.struct([("c", pa.string())]))]
    )
    assert to_data_type(pa.float64()) == pa.float64()
    with pytest.raises(ValueError, match="unsupported type 'WIDGET'"):
        to_data_type("WIDGET")


def test_udf_keeps_the_function_callable():
    assert reverse_text("abc") == "cba"
    assert reverse_text.name == "reverse_text"
    assert add.batch and not reverse_text.batch
    assert reverse_text.input_schema.names == ["s"]


def test_requests_are_answered_in_order_with_their_numbers(client):
    batches = [pa.record_batch([pa.array([f"r{i}", None])], names=["a"]) for i in range(5)]
    answers = exchange(client, "reverse_text", batches, numbers=[7, 258, 2**32, 0, 9])
    assert answers == [([f"{i}r", None], n) for i, n in enumerate([7, 258, 2**32, 0, 9])]


def test_batched_functions_and_argument_casts(client):
    # Int32 arguments are cast to the declared BIGINT
    batch = pa.record_batch([pa.array([1, 2, None], pa.int32()), pa.array([10, 20, 30], pa.int32())], names=["a", "b"])
    assert exchange(client, "add", [batch]) == [([11, 22, None], None)]


def test_zero_rows_get_zero_rows(client):
    batch = pa.record_batch([pa.array([], pa.string())], names=["a"])
    assert exchange(client, "reverse_text", [batch], numbers=[1]) == [([], 1)]


def test_a_python_exception_is_the_requests_error(client, server):
    before = json.loads(list(client.do_action("stats", options=AUTH))[0].body.to_pybytes())
    batches = [pa.record_batch([pa.array(x)], names=["a"]) for x in (["ok"], ["boom"], ["never"])]
    with pytest.raises(pa.ArrowException) as failed:
        exchange(client, "reverse_text", batches, numbers=[1, 2, 3])
    assert "function 'reverse_text' failed: ValueError: cannot reverse boom" in str(failed.value)
    after = json.loads(list(client.do_action("stats", options=AUTH))[0].body.to_pybytes())
    assert after["errors"] == before["errors"] + 1
    # the instance goes on
    ok = exchange(client, "reverse_text", [pa.record_batch([pa.array(["ab"])], names=["a"])])
    assert ok == [(["ba"], None)]


def test_a_wrong_result_length_is_an_error(client):
    with pytest.raises(pa.ArrowException, match="returned 1 values for 2 rows"):
        exchange(client, "wrong_length", [pa.record_batch([pa.array([1, 2], pa.int32())], names=["a"])])


def test_arguments_that_do_not_fit_are_refused(client):
    batch = pa.record_batch([pa.array(["x"]), pa.array(["y"])], names=["a", "b"])
    with pytest.raises(pa.ArrowException, match=r"function 'reverse_text' cannot take arguments of types \(string, string\)"):
        exchange(client, "reverse_text", [batch])


def test_the_token_is_required(server):
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as c:
        with pytest.raises(flight.FlightUnauthenticatedError, match="missing bearer token"):
            list(c.do_action("health"))
        wrong = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer nope")])
        with pytest.raises(flight.FlightUnauthenticatedError, match="wrong bearer token"):
            list(c.do_action("health", options=wrong))


def test_discovery_follows_the_flight_udf_convention(client):
    info = client.get_flight_info(flight.FlightDescriptor.for_path("add"), options=AUTH)
    assert info.total_records == 2
    assert info.schema.types == [pa.int64(), pa.int64(), pa.int64()]
    assert info.schema.names[-1] == "add"
    names = sorted(i.descriptor.path[0].decode() for i in client.list_flights(options=AUTH))
    assert names == ["add", "gated", "reverse_text", "wrong_length"]
    with pytest.raises(pa.ArrowException, match=r"unknown function 'nope': this instance hosts \[add, gated, reverse_text, wrong_length\]"):
        client.get_flight_info(flight.FlightDescriptor.for_path("nope"), options=AUTH)


def test_actions(client):
    def action(name):
        return list(client.do_action(name, options=AUTH))[0].body.to_pybytes()

    assert action("health") == b"ok"
    assert action("protocol_version") == b"1"
    stats = json.loads(action("stats"))
    assert set(stats) >= {"requests", "rows", "errors", "in_flight", "open_streams", "loads", "startup_ms", "draining"}
    with pytest.raises(pa.ArrowException, match="unknown action 'nope'; actions are: health, drain, stats, protocol_version"):
        action("nope")
    assert sorted(a.type for a in client.list_actions(options=AUTH)) == ["drain", "health", "protocol_version", "stats"]


def test_bad_app_metadata_is_refused(client):
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("reverse_text"), options=AUTH)
    with pytest.raises(pa.ArrowException, match="app_metadata must be a sequence number of 8 bytes"):
        with writer:
            batch = pa.record_batch([pa.array(["a"])], names=["a"])
            writer.begin(batch.schema)
            writer.write_with_metadata(batch, pa.py_buffer(b"abc"))
            writer.done_writing()
            reader.read_all()


def stats(client):
    return json.loads(list(client.do_action("stats", options=AUTH))[0].body.to_pybytes())


def one(value, type_=pa.int64()):
    return pa.record_batch([pa.array([value], type_)], names=["a"])


def cancel(n):
    return pa.py_buffer(b"rpcop-cancel" + struct.pack("<Q", n))


def test_cancels_skip_queued_requests_and_drop_running_ones(client, server):
    GATE.clear()
    AT_GATE.clear()
    before = stats(client)
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("gated"), options=READS_AHEAD)
    with writer:
        writer.begin(one(0).schema)
        for n in range(1, 11):
            writer.write_with_metadata(one(n), seq(n))
        # the cancels go once request 1 runs: sent earlier, they could be
        # read before it starts, and it would be skipped, not dropped
        assert AT_GATE.wait(10), "request 1 never started"
        for n in range(1, 10):
            writer.write_metadata(cancel(n))
        writer.write_metadata(cancel(99))  # not outstanding: ignored
        writer.write_with_metadata(one(11), seq(11))
        # request 1 holds the only evaluation of this exchange at the gate
        # until all eleven are read, and so the cancels sent before the last
        deadline = time.monotonic() + 10
        while server.stats.outstanding < 11 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert server.stats.outstanding == 11
        GATE.set()
        writer.done_writing()
        answers = [(c.data.column(0).to_pylist(), struct.unpack("<Q", c.app_metadata.to_pybytes())[0])
                   for c in reader if c.data is not None]
    # 1 ran and its answer was dropped; 2..9 were skipped unevaluated
    assert answers == [([10], 10), ([11], 11)]
    after = stats(client)
    assert after["cancelled"] - before["cancelled"] == 8
    assert after["requests"] - before["requests"] == 3
    assert after["peak_outstanding"] >= 11
    assert server.stats.outstanding == 0


def test_an_error_asks_a_caller_that_reads_ahead_to_half_close(client):
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("reverse_text"), options=READS_AHEAD)
    asked = False
    with pytest.raises(pa.ArrowException, match="cannot reverse boom"), writer:
        writer.begin(one("ok", pa.string()).schema)
        writer.write_with_metadata(one("ok", pa.string()), seq(1))
        writer.write_with_metadata(one("boom", pa.string()), seq(2))
        answer = reader.read_chunk()
        assert answer.data.column(0).to_pylist() == ["ko"]
        # the kit's reading waits on this caller: it asks it to half-close
        ending = reader.read_chunk()
        assert ending.data is None and ending.app_metadata.to_pybytes() == b"rpcop-ending"
        asked = True
        writer.done_writing()
        reader.read_chunk()
    assert asked


def test_a_plain_caller_gets_an_error_without_half_closing(client):
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("reverse_text"), options=PLAIN)
    with pytest.raises(pa.ArrowException, match="cannot reverse boom"), writer:
        writer.begin(one("ok", pa.string()).schema)
        writer.write_with_metadata(one("ok", pa.string()), seq(1))
        assert reader.read_chunk().data.column(0).to_pylist() == ["ko"]
        writer.write_with_metadata(one("boom", pa.string()), seq(2))
        reader.read_chunk()


def test_drain_refuses_new_exchanges_last(server):
    # run last in the module: draining cannot be undone
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as c:
        assert list(c.do_action("drain", options=AUTH))[0].body.to_pybytes() == b"draining"
        with pytest.raises(flight.FlightUnavailableError, match="instance is draining"):
            exchange(c, "reverse_text", [pa.record_batch([pa.array(["a"])], names=["a"])])
