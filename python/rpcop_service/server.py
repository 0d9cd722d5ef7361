"""An rpcop instance: an Arrow Flight server speaking rpcop's protocol.

The contract is ``docs/protocol.md`` of rpcop: every call carries
``authorization: Bearer <token>``; ``DoExchange`` names one function by a
PATH descriptor and carries any number of requests, each a record batch
whose ``app_metadata`` is its sequence number (8 bytes, little-endian, or
empty), each answered by one batch with the same number, in arrival order;
an error ends the exchange with the failed request's number in the
``x-rpcop-seq`` trailer; ``DoAction`` answers ``health``, ``drain``,
``stats`` and ``protocol_version``.
"""

import argparse
import hmac
import json
import os
import signal
import sys
import threading
import time
from typing import Callable, Dict, Iterable, Optional

import pyarrow as pa
import pyarrow.flight as flight

from .function import ScalarFunction

PROTOCOL_VERSION = b"1"
SEQUENCE_STATUS_KEY = "x-rpcop-seq"
SHUTDOWN_GRACE_SECONDS = 10.0
ACTIONS = {
    "health": "is the instance serving? answers 'ok'",
    "drain": "take no new exchange; finish the open ones",
    "stats": "the instance's counters as JSON",
    "protocol_version": "the rpcop protocol version",
}
TOKEN_HINT = "send metadata 'authorization: Bearer <token>' with the region's token"


class _TokenCheck(flight.ServerMiddlewareFactory):
    """Refuses every call without the instance's bearer token."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def start_call(self, info, headers):
        values = headers.get("authorization") or []
        if not values:
            raise flight.FlightUnauthenticatedError(f"missing bearer token: {TOKEN_HINT}")
        given = values[0]
        given = given.encode() if isinstance(given, str) else bytes(given)
        if not hmac.compare_digest(given, self._expected):
            raise flight.FlightUnauthenticatedError(f"wrong bearer token: {TOKEN_HINT}")
        return None


class _Stats:
    """The counters the ``stats`` action reports."""

    def __init__(self, loads: int, startup_ms: int):
        self.lock = threading.Lock()
        self.requests = self.rows = self.errors = 0
        self.in_flight = self.open_streams = 0
        self.loads, self.startup_ms = loads, startup_ms
        self.draining = False
        self.started: Dict[int, float] = {}

    def as_json(self) -> bytes:
        with self.lock:
            now = time.monotonic()
            oldest = min(self.started.values(), default=now)
            return json.dumps(
                {
                    "requests": self.requests,
                    "rows": self.rows,
                    "errors": self.errors,
                    "in_flight": self.in_flight,
                    "open_streams": self.open_streams,
                    "loads": self.loads,
                    "startup_ms": self.startup_ms,
                    "draining": self.draining,
                    "longest_running_ms": int((now - oldest) * 1000),
                    "pid": os.getpid(),
                }
            ).encode()


class _RequestError(Exception):
    """A request's failure: its status class, message and sequence number."""

    def __init__(self, error: Exception, seq: Optional[bytes]):
        super().__init__(str(error))
        self.error, self.seq = error, seq


class InstanceServer(flight.FlightServerBase):
    """Hosts ``functions`` on ``location`` (``grpc://host:port``)."""

    def __init__(self, functions: Iterable[ScalarFunction], location: str, token: str,
                 threads: int = 1, loads: int = 0, startup_ms: int = 0):
        super().__init__(location, middleware={"token": _TokenCheck(token)})
        self.functions: Dict[str, ScalarFunction] = {}
        for function in functions:
            if not isinstance(function, ScalarFunction):
                raise TypeError(f"{function!r} is not a function declared with @udf")
            if function.name in self.functions:
                raise ValueError(f"function '{function.name}' is served twice")
            self.functions[function.name] = function
        self.threads = max(1, threads)
        # evaluations at once, over all exchanges
        self.slots = threading.BoundedSemaphore(self.threads)
        self.stats = _Stats(loads, startup_ms)

    # -- discovery ---------------------------------------------------------

    def _function(self, descriptor) -> ScalarFunction:
        if descriptor is None:
            raise flight.FlightServerError(
                "the first message of an exchange must carry a PATH descriptor naming the function"
            )
        if descriptor.descriptor_type != flight.DescriptorType.PATH:
            raise pa.ArrowInvalid(
                "the descriptor must be of type PATH with one element, the function's name"
            )
        path = [p.decode() if isinstance(p, bytes) else p for p in descriptor.path]
        if len(path) != 1 or not path[0]:
            raise pa.ArrowInvalid(
                f"the descriptor path must be one element, the function's name; got {path}"
            )
        function = self.functions.get(path[0])
        if function is None:
            raise pa.ArrowKeyError(
                f"unknown function '{path[0]}': this instance hosts [{', '.join(sorted(self.functions))}]"
            )
        return function

    def _info(self, function: ScalarFunction) -> flight.FlightInfo:
        schema = pa.schema(list(function.input_schema) + list(function.result_schema))
        return flight.FlightInfo(
            schema, flight.FlightDescriptor.for_path(function.name), [],
            len(function.input_types), -1,
        )

    def get_flight_info(self, context, descriptor):
        return self._info(self._function(descriptor))

    def get_schema(self, context, descriptor):
        return flight.SchemaResult(self._info(self._function(descriptor)).schema)

    def list_flights(self, context, criteria):
        for name in sorted(self.functions):
            yield self._info(self.functions[name])

    # -- actions -----------------------------------------------------------

    def list_actions(self, context):
        return list(ACTIONS.items())

    def do_action(self, context, action):
        kind = action.type
        if kind == "health":
            return [b"ok"]
        if kind == "drain":
            with self.stats.lock:
                self.stats.draining = True
            return [b"draining"]
        if kind == "stats":
            return [self.stats.as_json()]
        if kind == "protocol_version":
            return [PROTOCOL_VERSION]
        raise pa.ArrowInvalid(f"unknown action '{kind}'; actions are: {', '.join(ACTIONS)}")

    def do_get(self, context, ticket):
        raise NotImplementedError("rpcop instances evaluate functions with DoExchange, not DoGet")

    def do_put(self, context, descriptor, reader, writer):
        raise NotImplementedError("rpcop instances evaluate functions with DoExchange, not DoPut")

    # -- evaluation --------------------------------------------------------

    def do_exchange(self, context, descriptor, reader, writer):
        with self.stats.lock:
            draining = self.stats.draining
        if draining:
            raise flight.FlightUnavailableError(
                "instance is draining: it takes no new exchange; send to another instance"
            )
        function = self._function(descriptor)
        with self.stats.lock:
            self.stats.open_streams += 1
        try:
            self._exchange(context, function, reader, writer)
        except _RequestError as failed:
            if failed.seq:
                context.add_trailer(SEQUENCE_STATUS_KEY, str(int.from_bytes(failed.seq, "little")))
            raise failed.error from None
        finally:
            with self.stats.lock:
                self.stats.open_streams -= 1

    def _exchange(self, context, function, reader, writer):
        """Answers each request as it arrives, in order, on this call's own
        thread; at most ``threads`` requests of all exchanges evaluate at
        once. (A request is read only when the one before is answered: a
        read left waiting could not be abandoned when an error ends the
        call, and the caller's next requests wait in gRPC's flow-control
        window meanwhile.)"""
        begun = None
        for chunk in reader:
            if chunk.data is None:
                continue
            seq = chunk.app_metadata.to_pybytes() if chunk.app_metadata else b""
            if len(seq) not in (0, 8):
                raise pa.ArrowInvalid(
                    "app_metadata must be a sequence number of 8 bytes (u64 "
                    f"little-endian), got {len(seq)} bytes"
                )
            with self.slots:
                try:
                    result = self._evaluate(function, chunk.data)
                except Exception as error:
                    raise _RequestError(error, seq) from None
            if begun != result.type:
                if begun is not None:
                    raise flight.FlightServerError("the result type changed within an exchange")
                writer.begin(pa.schema([pa.field(function.name, result.type)]))
                begun = result.type
            batch = pa.RecordBatch.from_arrays([result], names=[function.name])
            if seq:
                writer.write_with_metadata(batch, pa.py_buffer(seq))
            else:
                writer.write_batch(batch)

    def _evaluate(self, function: ScalarFunction, batch: pa.RecordBatch) -> pa.Array:
        """One request, on an evaluation thread: its result, or the error
        the caller sees (``INVALID_ARGUMENT``, with the Python message)."""
        key = threading.get_ident()
        with self.stats.lock:
            self.stats.in_flight += 1
            self.stats.started[key] = time.monotonic()
        try:
            rows = batch.num_rows
            try:
                columns = function.conform(batch)
            except Exception as error:
                types = ", ".join(str(c.type) for c in batch.columns)
                raise pa.ArrowInvalid(
                    f"function '{function.name}' cannot take arguments of types ({types}): {error}"
                ) from None
            if rows == 0:
                result = pa.array([], type=function.result_type)
            else:
                try:
                    result = function.evaluate(columns, rows)
                except Exception as error:
                    raise pa.ArrowInvalid(
                        f"function '{function.name}' failed: {type(error).__name__}: {error}"
                    ) from None
            with self.stats.lock:
                self.stats.requests += 1
                self.stats.rows += rows
            return result
        except Exception:
            with self.stats.lock:
                self.stats.errors += 1
            raise
        finally:
            with self.stats.lock:
                self.stats.in_flight -= 1
                self.stats.started.pop(key, None)


def _arguments(argv):
    parser = argparse.ArgumentParser(description="an rpcop service instance")
    parser.add_argument("--bind", default=os.environ.get("RPCOP_BIND", "127.0.0.1:0"),
                        help="host:port to listen on (RPCOP_BIND; port 0: any free port)")
    parser.add_argument("--token-file", default=os.environ.get("RPCOP_TOKEN_FILE"),
                        help="file holding the token callers send (RPCOP_TOKEN_FILE)")
    parser.add_argument("--threads", type=int, default=None,
                        help="evaluation threads (RPCOP_THREADS; default 1)")
    options, _ = parser.parse_known_args(argv)
    return options


def _watch_lifeline(stop: Callable[[float], None]):
    """Stops the instance when the process that started it is gone (its
    lifeline pipe, fd ``RPCOP_LIFELINE_FD``, reads end-of-file)."""
    fd = os.environ.get("RPCOP_LIFELINE_FD")
    if not fd:
        return

    def watch():
        try:
            while os.read(int(fd), 1):
                pass
        except OSError:
            pass
        stop(1.0)

    threading.Thread(target=watch, name="rpcop-lifeline", daemon=True).start()


def serve(*functions: ScalarFunction, setup: Optional[Callable[[], None]] = None,
          threads: Optional[int] = None, argv=None) -> None:
    """Serves ``functions`` as one rpcop instance until SIGTERM.

    Follows rpcop's command contract: listens on ``RPCOP_BIND`` (or
    ``--bind``), takes the token from ``RPCOP_TOKEN_FILE`` (or
    ``--token-file``), evaluates on ``threads`` threads (else
    ``--threads``, ``RPCOP_THREADS``, or 1), calls ``setup()`` once before
    it is ready (load a model there), prints the address it bound as the
    first line of stdout, and on SIGTERM finishes the open exchanges (up to
    10 s) and exits.
    """
    options = _arguments(sys.argv[1:] if argv is None else argv)
    if not options.token_file:
        sys.exit("rpcop_service: no token: set RPCOP_TOKEN_FILE or pass --token-file")
    with open(options.token_file) as file:
        token = file.read().strip()
    threads = threads or options.threads or int(os.environ.get("RPCOP_THREADS", "1"))
    host, _, port = options.bind.rpartition(":")
    started = time.monotonic()
    if setup is not None:
        setup()
    startup_ms = int((time.monotonic() - started) * 1000)
    server = InstanceServer(functions, f"grpc://{host}:{port}", token, threads,
                            loads=len(functions), startup_ms=startup_ms)
    stopping = threading.Event()

    def stop(grace: float):
        if stopping.is_set():
            return
        stopping.set()
        with server.stats.lock:
            server.stats.draining = True

        def finish():
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                with server.stats.lock:
                    if server.stats.open_streams == 0:
                        break
                time.sleep(0.02)
            os._exit(0)

        threading.Thread(target=finish, name="rpcop-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, lambda *_: stop(SHUTDOWN_GRACE_SECONDS))
    _watch_lifeline(stop)
    print(f"{host}:{server.port}", flush=True)
    server.serve()
