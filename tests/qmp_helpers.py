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
