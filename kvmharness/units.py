"""Parsing of the quantities users type: sizes, durations, rates.

Sizes are binary, as in QEMU's -m (1G = 1GiB = 2^30 bytes); rates are
decimal SI (3M = 3,000,000 writes/s), as in the seed's "3M wr/sec".
Every parser raises UsageError with the accepted forms in the message.
"""

import re
from fractions import Fraction

from .errors import UsageError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}
_DURATION_UNITS = {"us": Fraction(1, 10**6), "ms": Fraction(1, 1000), "s": 1, "": 1, "m": 60, "min": 60}
_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
# ASCII digits only (\d would take "１" or "٣"), at most MAX_DIGITS of them:
# every number is exact (a Fraction, never a float that overflows to inf).
MAX_DIGITS = 24
_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$", re.ASCII)

MAX_SIZE = 1 << 50  # 1 PiB: far past any host, far from any overflow
MAX_DURATION = 10**6  # seconds (11.6 days)
MIN_DURATION = Fraction(1, 10**6)  # the finest a duration can mean here
MAX_RATE = 10**12  # writes/s
MAX_BANDWIDTH = 10**15  # bits/s
MIN_BANDWIDTH = 1000  # bits/s: below 1 kbit/s a 4 KiB page takes half a minute; 1e-7 bit/s was taken


def _split(text, units, what, examples):
    m = _NUMBER.match(text) if isinstance(text, str) else None
    unit = m.group(2).lower() if m else None
    if not m or unit not in units or len(m.group(1)) > MAX_DIGITS + 1:
        raise UsageError(f"invalid {what} {_shown(text)}: use a number with a unit, like {examples}")
    return Fraction(m.group(1)), units[unit]


def _shown(text):
    """The user's text in a message: quoted, and cut if it is long."""
    shown = repr(str(text))
    return shown if len(shown) <= 42 else shown[:38] + "...'"


def _bounded(text, value, high, what, unit):
    if value > high:
        raise UsageError(f"invalid {what} {_shown(text)}: at most {high:g} {unit}")
    return value


def _whole(text, value, what, of):
    if value.denominator != 1:
        raise UsageError(f"invalid {what} {_shown(text)}: not a whole number of {of}")
    return int(value)


def parse_size(text):
    """'512MiB', '1GiB', '4G', '65536' -> bytes (whole bytes only)."""
    number, scale = _split(text, _SIZE_UNITS, "size", "512MiB, 1GiB or 4G")
    return _whole(text, _bounded(text, number * scale, MAX_SIZE, "size", "bytes"), "size", "bytes")


def parse_duration(text):
    """'500ms', '2s', '1.5s', '100us' -> seconds (0, or 1 us to 10^6 s)."""
    number, scale = _split(text, _DURATION_UNITS, "duration", "500ms or 2s")
    value = _bounded(text, number * scale, MAX_DURATION, "duration", "s")
    if 0 < value < MIN_DURATION:
        raise UsageError(f"invalid duration {_shown(text)}: shorter than 1us")
    return float(value)


def parse_rate(text):
    """'3M', '250k', '0' (unlimited) -> writes per second."""
    number, scale = _split(text, _RATE_UNITS, "rate", "3M, 250k or 0 (unlimited)")
    return _whole(text, _bounded(text, number * scale, MAX_RATE, "rate", "writes/s"), "rate", "writes/s")


_BANDWIDTH = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMgGtT]?)(i?)(bit|b|B)(?:/s|ps)?\s*$",
                        re.ASCII)
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bandwidth(text):
    """'1Gbit/s', '100Mbit', '10Gbps', '125MB/s', '1GiB/s' -> bits per second.

    b or bit is a bit, B a byte (the usual convention); prefixes are
    decimal, or binary with an i (MiB/s)."""
    m = _BANDWIDTH.match(text) if isinstance(text, str) else None
    if not m or len(m.group(1)) > MAX_DIGITS + 1:
        raise UsageError(f"invalid bandwidth {_shown(text)}: use e.g. 1Gbit/s, 100Mbit/s or 125MB/s")
    scale = (_BINARY if m.group(3) else _DECIMAL)[m.group(2).lower()]
    bits = Fraction(m.group(1)) * scale * (8 if m.group(4) == "B" else 1)
    if bits < MIN_BANDWIDTH:
        raise UsageError(f"invalid bandwidth {_shown(text)}: at least 1kbit/s")
    return float(_bounded(text, bits, MAX_BANDWIDTH, "bandwidth", "bit/s"))


def parse_count(text, what="count", low=1, high=1 << 32):
    """A whole number typed by a user (vCPUs, runs, iterations): ASCII digits."""
    if not isinstance(text, str) or not re.fullmatch(r"\s*[0-9]{1,%d}\s*" % MAX_DIGITS, text, re.ASCII):
        raise UsageError(f"invalid {what} {_shown(text)}: use a whole number")
    value = int(text)
    if value < low:
        raise UsageError(f"invalid {what} {_shown(text)}: must be at least {low}")
    if value > high:
        raise UsageError(f"invalid {what} {_shown(text)}: must be at most {high}")
    return value


def parse_port(text):
    """A TCP port, 0..65535 (0: any free port)."""
    return parse_count(text, "port", 0, 65535)


def parse_tcp_address(text, default_host="127.0.0.1"):
    """'[HOST:]PORT', the host a name, an IPv4 address or a bracketed IPv6
    one ('[::1]:4444') -> (host, port)."""
    if not isinstance(text, str):
        raise UsageError(f"invalid TCP address {_shown(text)}: use [HOST:]PORT")
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"invalid TCP address {_shown(text)}: write an IPv6 host in brackets, [::1]:PORT")
    try:
        if sep and not host:
            raise UsageError("no host before the colon")
        return host or default_host, parse_port(port)
    except UsageError:
        raise UsageError(f"invalid TCP address {_shown(text)}: use [HOST:]PORT, the port 0..65535") from None


def format_bandwidth(bits):
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g} {unit}"
    return f"{bits:g} bit/s"


def format_rate(wps):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if wps >= scale:
            return f"{wps / scale:.3f} {unit}"
    return f"{wps:.0f} "
