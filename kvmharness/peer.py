"""Reading from a peer we do not trust: the migration handshake and the
QMP client (issue 25).

Three rules, each the fix of a hostile test:

* one deadline per exchange, not per receive: a peer that sends a byte
  every 6 s never trips a 10 s silence bound, and held our single-threaded
  listener 75 s (`Deadline` sets each receive's timeout to what is left);
* JSON nested deeper than a bound is refused before it is parsed: 2040
  `[` in 4 KiB raised RecursionError out of json.loads (`loads`);
* peer text reaches our terminal only escaped and cut short: a 5 MB error
  with ANSI escapes was printed raw (`printable`).
"""

import json
import re
import socket
import time

import numpy as np

MAX_DEPTH = 64  # our handshake nests 1 deep, QMP's schema 4; QEMU's own parser allows 1024
MAX_SHOWN = 300  # characters of peer text in one of our messages
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class Deadline:
    """`seconds` from now, for everything one exchange reads."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self):
        return self.end - time.monotonic()

    def arm(self, sock):
        """Set `sock`'s timeout to what is left; socket.timeout once it is spent."""
        left = self.remaining()
        if left <= 0:
            raise socket.timeout(f"no complete answer within {self.seconds:g} s")
        sock.settimeout(left)


def nesting_depth(data):
    """How deep `data` (JSON text, bytes) nests arrays and objects, strings
    skipped; computed without recursion, in C-speed passes."""
    bare = _STRING.sub(b'""', data)
    codes = np.frombuffer(bare, dtype=np.uint8)
    step = (np.isin(codes, (0x5B, 0x7B)).astype(np.int32) - np.isin(codes, (0x5D, 0x7D)).astype(np.int32))
    return int(np.cumsum(step).max(initial=0))


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads(data, max_depth=MAX_DEPTH):
    """json.loads for a peer's text: ValueError (never RecursionError) for
    anything that is not plain JSON nested at most `max_depth` deep; NaN
    and Infinity, which Python accepts and JSON does not, are refused."""
    if nesting_depth(data) > max_depth:
        raise ValueError(f"nested deeper than {max_depth}")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth}") from None


def printable(text, limit=MAX_SHOWN):
    """A peer's text fit for one line of our output: control characters,
    terminal escapes and bidirectional overrides shown as \\x.. / \\u....,
    at most `limit` characters, the rest counted."""
    if not isinstance(text, str):
        text = repr(text)
    cut = text[:limit]
    shown = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                             else f"\\u{ord(m.group()):04x}", cut)
    return shown + (f"... ({len(text) - limit} more characters)" if len(text) > limit else "")


def read_line(sock, deadline, limit, one_byte=False, buffer=None):
    """One newline-terminated line from `sock` within `deadline`: (line,
    bytes read past it).  `one_byte` reads a byte at a time so that nothing
    after the line is consumed (the migration stream follows the
    handshake); otherwise `buffer` holds what the last call read past its
    line.  Raises EOFError (peer hung up), OverflowError (over `limit`
    bytes) or socket.timeout (deadline spent)."""
    buf = bytearray(buffer or b"")
    while True:
        end = buf.find(b"\n")
        if end >= 0:
            if end + 1 > limit:
                raise OverflowError(f"a line over {limit} bytes")
            return bytes(buf[: end + 1]), bytes(buf[end + 1 :])
        if len(buf) > limit:
            raise OverflowError(f"a line over {limit} bytes")
        deadline.arm(sock)
        chunk = sock.recv(1 if one_byte else 65536)
        if not chunk:
            raise EOFError("hung up")
        buf += chunk
