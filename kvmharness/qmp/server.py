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

from ..migration.job import MigrationJob
from .commands import COMMANDS, version
from .framing import FramingError, JsonSplitter
from ..errors import HarnessError, QmpError
from .schema import check_arguments

READ_CHUNK = 65536


def _timestamp():
    now = time.time()
    return {"seconds": int(now), "microseconds": int((now % 1) * 1e6)}


class QmpContext:
    """What command handlers see."""

    def __init__(self, vm, monitor):
        self.vm = vm
        self.monitor = monitor
        self.migration = MigrationJob(vm)


class Session:
    def __init__(self, server, writer):
        self.server = server
        self.writer = writer
        self.negotiated = False
        self.splitter = JsonSplitter()

    def send(self, obj):
        if not self.writer.is_closing():
            self.writer.write(json.dumps(obj).encode() + b"\r\n")

    async def handle(self, frame):
        """One framed text (or framing error) in, one reply out."""
        if isinstance(frame, FramingError):
            self.send({"error": {"class": "GenericError", "desc": frame.desc}})
            return not frame.fatal
        reply_id, has_id = None, False
        try:
            try:
                msg = json.loads(frame)
            except (UnicodeDecodeError, ValueError) as e:
                raise QmpError(f"JSON parse error, {e}") from None
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
    def __init__(self, vm, monitor):
        self.context = QmpContext(vm, monitor)
        self.sessions = set()
        self._servers = []
        self._loop = None
        self._quit = None
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

    def request_quit(self):
        self.broadcast("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        self._quit.set()

    async def close(self):
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            session.writer.close()
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
        session = Session(self, writer)
        self.sessions.add(session)
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
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.sessions.discard(session)
            writer.close()
