"""A QMP server on a unix socket (and optionally TCP) that existing QEMU
clients can drive unchanged (wire contract: QEMU's docs/interop/qmp-spec.rst).

Per connection: greeting, then capabilities negotiation, then commands.
Every reply echoes the command's id and ends in CRLF, as QEMU's do.  Input
is split at JSON object boundaries (framing.py).  A client that sends
garbage gets error replies; one that sends a text over the size limit is
told so and dropped; one that disconnects mid-command is forgotten.  None of
it touches the VM or a running measurement.
"""

import asyncio
import json
import os
import time

from ..convergence.cpu_throttle import CpuThrottle
from ..convergence.dirty_limit import QEMU_PERIOD_MS, DirtyLimit
from ..migration.job import MigrationJob
from .commands import COMMANDS, version
from .framing import FramingError, JsonSplitter
from ..errors import HarnessError, QmpError
from .schema import check_arguments

READ_CHUNK = 65536
MAX_CLIENTS = 64  # more are told so and dropped
MAX_OUTPUT = 1 << 20  # replies and events queued for a client that does not read: then it is dropped


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key '{key[:64]}'")  # QEMU's parser refuses them too
        obj[key] = value
    return obj


def _finite(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:32]} out of range")
    return value


def _not_a_number(name):
    raise ValueError(f"invalid token '{name}'")  # NaN, Infinity: not JSON, and we could not echo them


def parse_json(frame):
    """JSON as QEMU's parser takes it: no NaN or Infinity, no number that
    overflows a double, no duplicate keys (so every id can be echoed back as
    valid JSON)."""
    return json.loads(frame, object_pairs_hook=_no_duplicates, parse_float=_finite,
                      parse_constant=_not_a_number)


def _timestamp():
    now = time.time()
    return {"seconds": int(now), "microseconds": int((now % 1) * 1e6)}


class QmpContext:
    """What command handlers see."""

    def __init__(self, vm, monitor, migration_secret=None, dirty_limit_period_ms=QEMU_PERIOD_MS):
        self.vm = vm
        self.monitor = monitor
        # One of each per VM: QMP's commands and the migration's aid share them.
        self.cpu_throttle = CpuThrottle(vm)
        self.dirty_limit = DirtyLimit(vm, dirty_limit_period_ms)
        self.migration = MigrationJob(vm, migration_secret, self.cpu_throttle, self.dirty_limit)


class Session:
    def __init__(self, server, writer):
        self.server = server
        self.writer = writer
        self.negotiated = False
        self.splitter = JsonSplitter()

    def send(self, obj):
        if self.writer.is_closing():
            return
        self.writer.write(json.dumps(obj).encode() + b"\r\n")
        transport = getattr(self.writer, "transport", None)
        if transport is not None and transport.get_write_buffer_size() > MAX_OUTPUT:
            transport.abort()  # it does not read what we send: drop it, do not buffer without end

    async def handle(self, frame):
        """One framed text (or framing error) in, one reply out."""
        if isinstance(frame, FramingError):
            self.send({"error": {"class": "GenericError", "desc": frame.desc}})
            return not frame.fatal
        reply_id, has_id = None, False
        try:
            try:
                msg = parse_json(frame)
            except (UnicodeDecodeError, ValueError) as e:
                raise QmpError(f"JSON parse error, {e}") from None
            except RecursionError:  # deeper than Python's parser goes, within the framing's limit
                raise QmpError("JSON parse error, nesting too deep") from None
            if not isinstance(msg, dict):
                raise QmpError("QMP input must be a JSON object")
            has_id, reply_id = "id" in msg, msg.get("id")
            result = await self.dispatch(msg)
        except QmpError as e:
            reply = {"error": {"class": e.qmp_class, "desc": e.desc}}
        except HarnessError as e:  # a command that failed: QEMU's GenericError
            reply = {"error": {"class": "GenericError", "desc": str(e)}}
        else:
            if result is _QUIT:
                self.send({"return": {}, **({"id": reply_id} if has_id else {})})
                self.server.request_quit()
                return False
            reply = {"return": result}
        if has_id:
            reply["id"] = reply_id
        self.send(reply)
        return True

    async def dispatch(self, msg):
        for key in msg:
            if key not in ("execute", "arguments", "id"):
                raise QmpError(f"QMP input member '{key}' is unexpected")
        if "execute" not in msg:
            raise QmpError("QMP input lacks member 'execute'")
        name = msg["execute"]
        if not isinstance(name, str):
            raise QmpError("QMP input member 'execute' must be a string")
        arguments = msg.get("arguments", {})
        if not isinstance(arguments, dict):
            raise QmpError("QMP input member 'arguments' must be an object")
        if not self.negotiated and name != "qmp_capabilities":
            raise QmpError("Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound")
        command = COMMANDS.get(name)
        if command is None:
            raise QmpError(f"The command {name} has not been found", "CommandNotFound")
        args = check_arguments(command.schema, arguments)
        if name == "qmp_capabilities":
            if self.negotiated:
                raise QmpError("Capabilities negotiation is already complete, command ignored",
                               "CommandNotFound")
            for cap in args.get("enable", []):
                raise QmpError(f"Capability '{cap}' not available")
            self.negotiated = True
            return {}
        if name == "quit":
            return _QUIT
        if command.blocking:
            return await asyncio.to_thread(command.handler, self.server.context, args)
        return command.handler(self.server.context, args)


_QUIT = object()


class QmpServer:
    def __init__(self, vm, monitor, migration_secret=None, dirty_limit_period_ms=QEMU_PERIOD_MS):
        self.context = QmpContext(vm, monitor, migration_secret, dirty_limit_period_ms)
        self.sessions = set()
        self._servers = []
        self._loop = None
        self._quit = None
        self._handlers = set()  # the tasks serving connected clients
        monitor.listeners.append(self._measured)
        self.context.migration.listeners.append(self._migration_status)

    async def start(self, unix_path=None, tcp=None):
        self._loop = asyncio.get_running_loop()
        self._quit = asyncio.Event()
        if unix_path is not None:
            old = os.umask(0o177)  # the socket is created 0600: no window where others could connect
            try:
                self._servers.append(await asyncio.start_unix_server(self._serve, unix_path))
            finally:
                os.umask(old)
        if tcp is not None:
            host, port = tcp
            self._servers.append(await asyncio.start_server(self._serve, host, port))
        return self

    def tcp_port(self):
        for server in self._servers:
            for sock in server.sockets:
                if sock.family.name.startswith("AF_INET"):
                    return sock.getsockname()[1]
        return None

    async def serve_until_quit(self):
        await self._quit.wait()
        await self.close()

    def request_quit(self, reason="host-qmp-quit"):
        """Stop serving; `reason` is QEMU's ShutdownCause (host-signal for a signal)."""
        if not self._quit.is_set():
            self.broadcast("SHUTDOWN", {"guest": False, "reason": reason})
            self._quit.set()

    async def close(self):
        """Stop listening, drop every client, and wait for their handlers:
        nothing is left running when the event loop ends."""
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            session.writer.close()
        handlers = [t for t in self._handlers if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    def broadcast(self, event, data):
        message = {"event": event, "data": data, "timestamp": _timestamp()}
        for session in list(self.sessions):
            if session.negotiated:
                session.send(message)

    def broadcast_threadsafe(self, event, data):
        """broadcast() from another thread (measurement, migration): on the loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.broadcast, event, data)

    def _measured(self, monitor, result, error):
        mode = monitor.state().request.mode
        self.broadcast_threadsafe("X_DIRTY_RATE_MEASURED", {
            "status": "measured", "mode": mode, "dirty-rate": result.dirty_rate if result else -1})

    def _migration_status(self, status):
        """A MIGRATION event, as QEMU sends."""
        self.broadcast_threadsafe("MIGRATION", {"status": status})

    async def _serve(self, reader, writer):
        if len(self.sessions) >= MAX_CLIENTS:
            writer.write(json.dumps({"error": {"class": "GenericError", "desc":
                                               f"too many QMP clients (at most {MAX_CLIENTS})"}}).encode() + b"\r\n")
            writer.close()
            return
        session = Session(self, writer)
        self.sessions.add(session)
        self._handlers.add(asyncio.current_task())
        try:
            session.send({"QMP": {"version": version(), "capabilities": []}})
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                keep = True
                for frame in session.splitter.feed(data):
                    keep = await session.handle(frame)
                    if not keep:
                        break
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a client that went, or the server closing: nothing to report
        finally:
            self.sessions.discard(session)
            self._handlers.discard(asyncio.current_task())
            writer.close()
