"""Helpers for QMP tests: an in-process server around a real VM, and a raw
socket client for checking replies byte for byte."""

import asyncio
import contextlib
import json
import socket
import threading


class ServerThread:
    """A QmpServer on its own event loop thread, serving `vm`."""

    def __init__(self, vm, monitor, path):
        from kvmharness.qmp import QmpServer

        self.loop = asyncio.new_event_loop()
        self.server = QmpServer(vm, monitor)
        self.path = path
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start(path))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def serving(vm, monitor, path):
    server = ServerThread(vm, monitor, str(path))
    try:
        yield server
    finally:
        server.close()


class RawClient:
    """Line-oriented QMP over a plain socket, negotiated or not."""

    def __init__(self, path, negotiate=True):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.greeting = self.recv()
        if negotiate:
            assert self.cmd("qmp_capabilities") == {"return": {}}

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else json.dumps(data).encode())

    def recv(self):
        """The next message that is not an event."""
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("server closed the connection")
            assert line.endswith(b"\r\n")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name, **arguments):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.send(msg)
        return self.recv()

    def close(self):
        self.file.close()
        self.sock.close()


GOOD_ANSWERS = {
    "qmp_capabilities": {},
    "query-memory-size-summary": {"base-memory": 64 << 20},
    "query-cpus-fast": [{"cpu-index": 0}],
    "calc-dirty-rate": {},
    "query-dirty-rate": {"status": "measured", "dirty-rate": 100, "calc-time": 1, "mode": "page-sampling"},
    "human-monitor-command": "",
}
GREETING = {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": ""}, "capabilities": []}}


class HostileQmp:
    """A QMP peer written to break a client (issue 25): it greets like QEMU
    10 and answers each command from `answers` (GOOD_ANSWERS by default;
    a value of type bytes is sent raw, as the whole line), with `events`
    events before each reply after qmp_capabilities (None: without end) and its greeting
    trickled a byte every `trickle` seconds where set.  Unknown commands
    get QEMU's CommandNotFound.  Serves on a unix socket `path` from a
    thread until close()."""

    def __init__(self, path, answers=None, events=0, trickle=None, greeting=GREETING):
        self.path = str(path)
        self.answers = dict(GOOD_ANSWERS, **(answers or {}))
        self.events, self.trickle, self.greeting = events, trickle, greeting
        self.commands = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(self.path)
        self._listener.listen(4)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with conn, contextlib.suppress(OSError):
                self._session(conn)

    def _session(self, conn):
        conn.settimeout(60)
        greeting = self.greeting if isinstance(self.greeting, bytes) else json.dumps(self.greeting).encode() + b"\n"
        if self.trickle:
            for byte in greeting:
                if self._stop.wait(self.trickle):
                    return
                conn.sendall(bytes([byte]))
        else:
            conn.sendall(greeting)
        for line in conn.makefile("rb"):
            if self._stop.is_set():
                return
            command = json.loads(line)["execute"]
            self.commands.append(command)
            sent = 0
            event = json.dumps({"event": "X", "data": {"pad": "e" * 1000}, "timestamp": {}}).encode() + b"\n"
            while command != "qmp_capabilities" and (self.events is None or sent < self.events):
                if self._stop.is_set():
                    return
                conn.sendall(event * 64)
                sent += 64
            if command not in self.answers:
                conn.sendall(json.dumps({"error": {"class": "CommandNotFound",
                                                   "desc": f"The command {command} has not been found"}}).encode()
                             + b"\n")
                continue
            answer = self.answers[command]
            conn.sendall(answer if isinstance(answer, bytes) else json.dumps({"return": answer}).encode() + b"\n")

    def close(self):
        self._stop.set()
        self._listener.close()
        self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
