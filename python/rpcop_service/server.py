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
import collections
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
CANCEL_PREFIX = b"rpcop-cancel"
ENDING = b"rpcop-ending"
ENDING_HEADER = "x-rpcop-ending"
# requests read ahead of their evaluation on each exchange, as rpcop's own
# instances do; more wait in HTTP/2 flow control
READ_AHEAD = 1024
SHUTDOWN_GRACE_SECONDS = 10.0
ACTIONS = {
    "health": "is the instance serving? answers 'ok'",
    "drain": "take no new exchange; finish the open ones",
    "stats": "the instance's counters as JSON",
    "protocol_version": "the rpcop protocol version",
}
TOKEN_HINT = "send metadata 'authorization: Bearer <token>' with the region's token"


class _Caller(flight.ServerMiddleware):
    """What a call's caller said of itself: whether it half-closes an
    exchange on ``rpcop-ending`` (header ``x-rpcop-ending``)."""

    def __init__(self, ending: bool):
        self.ending = ending


def _ending(context) -> bool:
    caller = context.get_middleware("token")
    return caller is not None and caller.ending


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
        return _Caller(ENDING_HEADER in headers)


class _Stats:
    """The counters the ``stats`` action reports."""

    def __init__(self, loads: int, startup_ms: int):
        self.lock = threading.Lock()
        self.requests = self.rows = self.errors = 0
        self.in_flight = self.open_streams = 0
        self.loads, self.startup_ms = loads, startup_ms
        self.draining = False
        self.started: Dict[int, float] = {}
        self.cancelled = self.outstanding = self.peak_outstanding = 0

    def queued(self, change: int):
        """Requests read and not yet answered, over all exchanges."""
        with self.lock:
            self.outstanding += change
            self.peak_outstanding = max(self.peak_outstanding, self.outstanding)

    def skipped(self):
        """A request skipped, unevaluated, because its caller cancelled it."""
        with self.lock:
            self.cancelled += 1

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
                    "cancelled": self.cancelled,
                    "outstanding": self.outstanding,
                    "peak_outstanding": self.peak_outstanding,
                }
            ).encode()


class _RequestError(Exception):
    """A request's failure: its status class, message and sequence number."""

    def __init__(self, error: Exception, seq: Optional[bytes]):
        super().__init__(str(error))
        self.error, self.seq = error, seq


def _cancel_of(app_metadata) -> Optional[bytes]:
    """The sequence number a cancel message names, if it is one."""
    if app_metadata is None or app_metadata.size != len(CANCEL_PREFIX) + 8:
        return None
    raw = app_metadata.to_pybytes()
    return raw[len(CANCEL_PREFIX):] if raw.startswith(CANCEL_PREFIX) else None


class _Requests:
    """One exchange's requests, in arrival order, with the caller's cancels
    applied to them.

    For a caller that sends ``x-rpcop-ending`` (rpcop's client), a thread
    of its own reads ahead of the evaluation (up to ``READ_AHEAD``
    requests), so that a cancel reaches a request still queued or running.
    Other callers are read one request at a time on the call's thread: a
    read left waiting could not be abandoned when an error ends the call,
    and a caller that does not know ``rpcop-ending`` would not half-close
    to end it.
    """

    def __init__(self, reader, stats: "_Stats", ahead: bool):
        self._reader, self._stats = reader, stats
        self._ready = threading.Condition()
        self._queue = collections.deque()  # (seq, batch) or an exception
        self._outstanding = set()  # numbers read and not yet done
        self._cancelled = set()  # of those, the ones the caller gave up
        self._ended = self._stopped = False
        self._thread = None
        if ahead:
            self._thread = threading.Thread(target=self._read_ahead, name="rpcop-read", daemon=True)
            self._thread.start()

    def _take(self, chunk) -> bool:
        """Queues a request, or applies a cancel; false once stopped."""
        if chunk.data is None:
            cancelled = _cancel_of(chunk.app_metadata)
            with self._ready:
                if cancelled in self._outstanding:
                    self._cancelled.add(cancelled)
            return not self._stopped
        seq = chunk.app_metadata.to_pybytes() if chunk.app_metadata else b""
        item = (seq, chunk.data)
        if len(seq) not in (0, 8):
            item = pa.ArrowInvalid(
                "app_metadata must be a sequence number of 8 bytes (u64 "
                f"little-endian), got {len(seq)} bytes"
            )
        with self._ready:
            while len(self._queue) >= READ_AHEAD and not self._stopped:
                self._ready.wait()
            if self._stopped:
                return False
            if seq and not isinstance(item, Exception):
                self._outstanding.add(seq)
            self._queue.append(item)
            self._stats.queued(1)
            self._ready.notify_all()
        return True

    def _end(self, error: Optional[Exception]):
        with self._ready:
            if error is not None and not self._stopped:
                self._queue.append(error)
                self._stats.queued(1)
            self._ended = True
            self._ready.notify_all()

    def _read_ahead(self):
        error = None
        try:
            for chunk in self._reader:
                self._take(chunk)  # once stopped, read on to the half-close
        except Exception as failed:  # the call broke, or undecodable input
            error = failed
        self._end(error)

    def next(self):
        """The next request, ``None`` once the caller half-closed; raises
        what ended the reading otherwise."""
        if self._thread is None:
            while not self._queue and not self._ended:
                try:
                    chunk = self._reader.read_chunk()
                except StopIteration:
                    self._end(None)
                except Exception as error:
                    self._end(error)
                else:
                    self._take(chunk)
        with self._ready:
            while not self._queue and not self._ended:
                self._ready.wait()
            if not self._queue:
                return None
            item = self._queue.popleft()
            self._ready.notify_all()
        if isinstance(item, Exception):
            self._stats.queued(-1)
            raise item
        return item

    def cancelled(self, seq: bytes) -> bool:
        """Has the caller given up request ``seq``?"""
        with self._ready:
            return seq in self._cancelled

    def done(self, seq: bytes):
        """Request ``seq`` was answered, skipped or failed."""
        with self._ready:
            self._outstanding.discard(seq)
            self._cancelled.discard(seq)
        self._stats.queued(-1)

    def stop(self) -> bool:
        """Drops the queued requests; true if a read is still waiting on
        the caller, which should be asked to half-close."""
        with self._ready:
            self._stopped = True
            self._stats.queued(-len(self._queue))
            self._queue.clear()
            self._ready.notify_all()
            return self._thread is not None and not self._ended

    def join(self):
        if self._thread is not None:
            self._thread.join()


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
        """Answers each request in arrival order, on this call's own thread;
        at most ``threads`` requests of all exchanges evaluate at once. A
        cancelled request is skipped, or its answer dropped.

        When requests are read ahead (see ``_Requests``), the reading
        thread may be waiting on the caller, and the call must not end
        under it: an error first asks the caller to half-close
        (``rpcop-ending``), then waits for the reading to end."""
        ahead = _Requests(reader, self.stats, _ending(context))
        begun = None
        try:
            while True:
                request = ahead.next()
                if request is None:
                    break
                seq, batch = request
                try:
                    with self.slots:
                        if ahead.cancelled(seq):
                            self.stats.skipped()
                            continue
                        try:
                            result = self._evaluate(function, batch)
                        except Exception as error:
                            raise _RequestError(error, seq) from None
                    if ahead.cancelled(seq):
                        continue  # the caller ignores its answer
                    if begun != result.type:
                        if begun is not None:
                            raise flight.FlightServerError("the result type changed within an exchange")
                        writer.begin(pa.schema([pa.field(function.name, result.type)]))
                        begun = result.type
                    answer = pa.RecordBatch.from_arrays([result], names=[function.name])
                    if seq:
                        writer.write_with_metadata(answer, pa.py_buffer(seq))
                    else:
                        writer.write_batch(answer)
                finally:
                    ahead.done(seq)
        except BaseException:
            if ahead.stop():
                try:
                    writer.write_metadata(pa.py_buffer(ENDING))
                except Exception:
                    pass  # the caller is gone; the read ends by itself
            raise
        finally:
            ahead.join()

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
