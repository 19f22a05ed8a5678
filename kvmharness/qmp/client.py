"""A synchronous QMP client: what `predict --qmp`, `qemu-check` and the QEMU
migration validation use to drive a QEMU (or our own server) they did not
start, or did.

It speaks the protocol as QEMU documents it (docs/interop/qmp-spec): read
the greeting, negotiate with qmp_capabilities, then one command at a time,
skipping the asynchronous events that may arrive between a command and its
reply.  The peer is not trusted: a reply that is not a JSON object, a line
longer than MAX_LINE, a closed connection or a silent peer each end in one
QmpConnectionError naming the peer, never in a traceback.
"""

import json
import socket
import time

from ..errors import HarnessError, QmpError

MAX_LINE = 16 << 20  # query-qmp-schema of QEMU 7.2 is ~200 KB; anything near this is not QMP
DEFAULT_TIMEOUT = 30.0


class QmpConnectionError(HarnessError):
    """The peer is not a QMP server we can talk to (gone, silent, not QMP)."""


def parse_address(address):
    """A unix socket path, or HOST:PORT for TCP: (family, sockaddr)."""
    if "/" in address or ":" not in address:
        return socket.AF_UNIX, address
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise QmpConnectionError(f"{address!r} is neither a socket path nor HOST:PORT") from None
    if not 0 < number < 65536:
        raise QmpConnectionError(f"port {number} out of range in {address!r}")
    return socket.AF_INET, (host.strip("[]"), number)


class QmpClient:
    """One negotiated QMP session.  Use as a context manager."""

    def __init__(self, address, timeout=DEFAULT_TIMEOUT):
        self.address = address
        family, sockaddr = parse_address(address)
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(sockaddr)
        except OSError as e:
            self._sock.close()
            raise QmpConnectionError(f"cannot connect to QMP at {address}: {e.strerror or e}") from None
        self._file = self._sock.makefile("rb")
        self.events = []
        try:
            greeting = self._read()
            if "QMP" not in greeting:
                raise QmpConnectionError(f"{address} did not greet like a QMP server")
            self.greeting = greeting["QMP"]
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    @property
    def version(self):
        """(major, minor, micro) from the greeting, or None."""
        v = self.greeting.get("version", {}).get("qemu") if isinstance(self.greeting, dict) else None
        try:
            return (int(v["major"]), int(v["minor"]), int(v["micro"]))
        except (TypeError, KeyError, ValueError):
            return None

    def _read(self):
        try:
            line = self._file.readline(MAX_LINE + 1)
        except socket.timeout:
            raise QmpConnectionError(f"QMP at {self.address} did not answer in time") from None
        except OSError as e:
            raise QmpConnectionError(f"QMP at {self.address}: {e.strerror or e}") from None
        if not line:
            raise QmpConnectionError(f"QMP at {self.address} closed the connection")
        if len(line) > MAX_LINE:
            raise QmpConnectionError(f"QMP at {self.address} sent a line over {MAX_LINE >> 20} MiB")
        try:
            msg = json.loads(line)
        except ValueError:
            raise QmpConnectionError(f"QMP at {self.address} sent something that is not JSON") from None
        if not isinstance(msg, dict):
            raise QmpConnectionError(f"QMP at {self.address} sent a JSON {type(msg).__name__}, not an object")
        return msg

    def execute(self, command, arguments=None):
        """Run one command; its "return" value, or QmpError with QEMU's class
        and description."""
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise QmpConnectionError(f"QMP at {self.address}: {e.strerror or e}") from None
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"] if isinstance(reply["error"], dict) else {}
                raise QmpError(str(err.get("desc", "unknown error")), str(err.get("class", "GenericError")))
            if "return" in reply:
                return reply["return"]
            raise QmpConnectionError(f"QMP at {self.address} sent a reply with neither return nor error")

    def wait_for(self, command, done, timeout, arguments=None, interval=0.01):
        """Run `command` until done(its return) holds; that return.  Polls
        (QEMU's own clients poll query-dirty-rate and query-migrate too)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.execute(command, arguments)
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise QmpConnectionError(f"{command} at {self.address} did not finish within {timeout:.0f} s")
            time.sleep(interval)

    def close(self):
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
