"""A synchronous QMP client: what `predict --qmp`, `qemu-check` and the QEMU
migration validation use to drive a QEMU (or our own server) they did not
start, or did.

It speaks the protocol as QEMU documents it (docs/interop/qmp-spec): read
the greeting, negotiate with qmp_capabilities, then one command at a time,
skipping the asynchronous events that may arrive between a command and its
reply.  Each command carries an id of this session's, and a reply with
another id is skipped: QEMU's monitor has one connection per chardev, and
a command a client left in flight when it hung up (a watch stopping
mid-poll) can be answered on whichever connection is open when QEMU ends
it: the next client's.  Series run 8 of 10 at 3681a83 read `{}` for a
query-dirty-rate so, every reply one behind (the likeliest cause; not
reproduced in 250 hang-ups here).  A stale reply of a client that sent no
id cannot be told apart.

The peer is not trusted: a reply that is not a JSON object, a line longer
than MAX_LINE, JSON nested deeper than MAX_DEPTH, a closed connection, a
silent or trickling peer each end in one QmpConnectionError naming the
peer, never in a traceback; what its answers contain is checked where they
are used (replies.py).
"""

import collections
import itertools
import json
import os
import socket
import time

from .. import peer, units
from ..errors import HarnessError, QmpError, UsageError

MAX_LINE = 16 << 20  # query-qmp-schema of QEMU 7.2 is ~200 KB; anything near this is not QMP
MAX_DEPTH = 32  # QEMU's replies nest a few levels (the schema 4)
MAX_EVENTS = 1000  # the newest kept; a peer sending events without end costs no memory
DEFAULT_TIMEOUT = 30.0


class QmpConnectionError(HarnessError):
    """The peer is not a QMP server we can talk to (gone, silent, not QMP)."""


def parse_address(address):
    """A unix socket path, or HOST:PORT for TCP (an IPv6 host in brackets,
    [::1]:4444): (family, sockaddr)."""
    if not isinstance(address, str) or not address.strip():
        raise UsageError("the QMP address is empty: give a socket path or HOST:PORT")
    if "/" in address or ":" not in address:
        return socket.AF_UNIX, address
    try:
        host, port = units.parse_tcp_address(address)
    except UsageError as e:
        raise QmpConnectionError(f"{peer.printable(address)} is neither a socket path nor HOST:PORT ({e})") from None
    if port == 0:
        raise QmpConnectionError(f"port 0 in {peer.printable(address)}: give the port QMP listens on")
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)


def _is_reply(msg):
    return "return" in msg or "error" in msg


class QmpClient:
    """One negotiated QMP session.  Use as a context manager.

    Every exchange (the greeting and qmp_capabilities; each command and its
    reply, with the events between) has one deadline, `timeout` seconds:
    a peer that trickles a byte at a time, or sends events without end,
    cannot hold us past it.  Of the events only the newest MAX_EVENTS are
    kept (`events`; `events_dropped` counts the rest)."""

    def __init__(self, address, timeout=DEFAULT_TIMEOUT):
        self.address = address
        self.timeout = timeout
        self.shown = peer.printable(address)
        family, sockaddr = parse_address(address)
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(sockaddr)
        except OSError as e:
            self._sock.close()
            raise QmpConnectionError(f"cannot connect to QMP at {self.shown}: {e.strerror or e}") from None
        self._pending = b""
        self.events = collections.deque(maxlen=MAX_EVENTS)
        self.events_dropped = 0
        self.stale_replies = 0  # replies to another session's commands, skipped
        self._ids = (f"kvmh-{os.urandom(4).hex()}-{n}" for n in itertools.count(1))
        try:
            deadline = peer.Deadline(timeout)
            greeting = self._read(deadline)
            while _is_reply(greeting) and "id" in greeting:  # an earlier session's, before our greeting
                self.stale_replies += 1
                greeting = self._read(deadline)
            if not isinstance(greeting.get("QMP"), dict):
                raise QmpConnectionError(f"{self.shown} did not greet like a QMP server")
            self.greeting = greeting["QMP"]
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    @property
    def version(self):
        """(major, minor, micro) from the greeting, or None."""
        v = self.greeting.get("version") if isinstance(self.greeting, dict) else None
        v = v.get("qemu") if isinstance(v, dict) else None
        try:
            numbers = tuple(v[k] for k in ("major", "minor", "micro"))
        except (TypeError, KeyError):
            return None
        return numbers if all(type(n) is int and 0 <= n < 1 << 16 for n in numbers) else None

    def _read(self, deadline):
        """The next message within `deadline`: a JSON object."""
        try:
            line, self._pending = peer.read_line(self._sock, deadline, MAX_LINE, buffer=self._pending)
        except socket.timeout:
            raise QmpConnectionError(f"QMP at {self.shown} did not answer within {deadline.seconds:g} s") from None
        except EOFError:
            raise QmpConnectionError(f"QMP at {self.shown} closed the connection") from None
        except OverflowError:
            raise QmpConnectionError(f"QMP at {self.shown} sent a line over {MAX_LINE >> 20} MiB") from None
        except OSError as e:
            raise QmpConnectionError(f"QMP at {self.shown}: {e.strerror or e}") from None
        try:
            msg = peer.loads(line, MAX_DEPTH)
        except ValueError as e:
            raise QmpConnectionError(f"QMP at {self.shown} sent something that is not QMP's JSON ({e})") from None
        if not isinstance(msg, dict):
            raise QmpConnectionError(f"QMP at {self.shown} sent a JSON {type(msg).__name__}, not an object")
        return msg

    def execute(self, command, arguments=None):
        """Run one command; its "return" value, or QmpError with QEMU's class
        and description (escaped and cut: peer.printable)."""
        msg = {"execute": command, "id": next(self._ids)}
        if arguments:
            msg["arguments"] = arguments
        deadline = peer.Deadline(self.timeout)
        try:
            deadline.arm(self._sock)
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise QmpConnectionError(f"QMP at {self.shown}: {e.strerror or e}") from None
        while True:
            reply = self._read(deadline)
            if "event" in reply:
                if len(self.events) == self.events.maxlen:
                    self.events_dropped += 1
                self.events.append(reply)
                continue
            if _is_reply(reply) and "id" in reply and reply["id"] != msg["id"]:
                self.stale_replies += 1
                continue
            if "error" in reply:
                err = reply["error"] if isinstance(reply["error"], dict) else {}
                raise QmpError(peer.printable(str(err.get("desc", "unknown error"))),
                               peer.printable(str(err.get("class", "GenericError")), 64))
            if "return" in reply:
                return reply["return"]
            raise QmpConnectionError(f"QMP at {self.shown} sent a reply with neither return nor error")

    def wait_for(self, command, done, timeout, arguments=None, interval=0.01):
        """Run `command` until done(its return) holds; that return.  Polls
        (QEMU's own clients poll query-dirty-rate and query-migrate too)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.execute(command, arguments)
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise QmpConnectionError(f"{command} at {self.shown} did not finish within {timeout:.0f} s")
            time.sleep(interval)

    def abort(self):
        """End the session from another thread: whatever exchange is under
        way fails at once with QmpConnectionError (a watch stopping does not
        wait out a window)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
