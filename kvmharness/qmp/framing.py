"""Splitting a QMP byte stream into JSON texts.

QMP clients (qemu.qmp among them) write JSON objects with no newline after
them, so input must be split at object boundaries, not at newlines.  This is
a small brace matcher that knows about strings and escapes; json.loads then
parses each text.  Limits keep a hostile client from growing our buffers:
a text larger than `max_size` or nested deeper than `max_depth` is fatal for
that connection (QEMU's json-streamer has similar limits).  Bytes between
texts that are not whitespace are reported once per run and skipped, so the
stream resynchronises at the next object.
"""

from dataclasses import dataclass

WHITESPACE = frozenset(b" \t\r\n")
OPEN, CLOSE = frozenset(b"{["), frozenset(b"}]")
QUOTE, BACKSLASH = ord('"'), ord("\\")


@dataclass(frozen=True)
class FramingError:
    desc: str
    fatal: bool = False


class JsonSplitter:
    def __init__(self, max_size=1 << 20, max_depth=1024):
        self.max_size = max_size
        self.max_depth = max_depth
        self._buf = bytearray()
        self._pos = 0  # next byte to scan
        self._start = None  # where the current text began
        self._depth = 0
        self._in_string = False
        self._escape = False

    def feed(self, data):
        """Bytes in; complete texts (bytes) and FramingErrors out, in order."""
        out = []
        buf = self._buf
        buf += data
        i, n = self._pos, len(buf)
        while i < n:
            c = buf[i]
            if self._depth == 0:
                if c in WHITESPACE:
                    i += 1
                elif c in OPEN:
                    self._start, self._depth = i, 1
                    i += 1
                else:
                    while i < n and buf[i] not in WHITESPACE and buf[i] not in OPEN:
                        i += 1
                    out.append(FramingError("JSON parse error, invalid input outside a JSON object"))
                continue
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == BACKSLASH:
                    self._escape = True
                elif c == QUOTE:
                    self._in_string = False
            elif c == QUOTE:
                self._in_string = True
            elif c in OPEN:
                self._depth += 1
                if self._depth > self.max_depth:
                    return self._fatal(out, f"JSON parse error, nesting deeper than {self.max_depth}")
            elif c in CLOSE:
                self._depth -= 1
                if self._depth == 0:
                    out.append(bytes(buf[self._start : i + 1]))
                    self._start = None
            i += 1
            if self._depth and i - self._start > self.max_size:
                return self._fatal(out, f"JSON parse error, message larger than {self.max_size} bytes")
        if self._depth == 0:
            del buf[:]
            self._pos = 0
        else:
            del buf[: self._start]
            self._pos = i - self._start
            self._start = 0
        return out

    def _fatal(self, out, desc):
        del self._buf[:]
        self._pos, self._start, self._depth = 0, None, 0
        self._in_string = self._escape = False
        out.append(FramingError(desc, fatal=True))
        return out
