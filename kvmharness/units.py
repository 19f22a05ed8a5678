"""Parsing of the quantities users type: sizes, durations, rates.

Sizes are binary, as in QEMU's -m (1G = 1GiB = 2^30 bytes); rates are
decimal SI (3M = 3,000,000 writes/s), as in the seed's "3M wr/sec".
Every parser raises UsageError with the accepted forms in the message.
"""

import re

from .errors import UsageError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "": 1.0, "m": 60.0, "min": 60.0}
_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def _split(text, units, what, examples):
    m = _NUMBER.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in units:
        raise UsageError(f"invalid {what} {text!r}: use a number with a unit, like {examples}")
    return float(m.group(1)), units[unit]


def _whole(text, number, scale, what, of):
    value = number * scale
    if value != int(value):
        raise UsageError(f"invalid {what} {text!r}: not a whole number of {of}")
    return int(value)


def parse_size(text):
    """'512MiB', '1GiB', '4G', '65536' -> bytes (whole bytes only)."""
    number, scale = _split(text, _SIZE_UNITS, "size", "512MiB, 1GiB or 4G")
    return _whole(text, number, scale, "size", "bytes")


def parse_duration(text):
    """'500ms', '2s', '1.5s', '100us' -> seconds."""
    number, scale = _split(text, _DURATION_UNITS, "duration", "500ms or 2s")
    return number * scale


def parse_rate(text):
    """'3M', '250k', '0' (unlimited) -> writes per second."""
    number, scale = _split(text, _RATE_UNITS, "rate", "3M, 250k or 0 (unlimited)")
    return _whole(text, number, scale, "rate", "writes/s")


_BANDWIDTH = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtT]?)(i?)(bit|b|B)(?:/s|ps)?\s*$")
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bandwidth(text):
    """'1Gbit/s', '100Mbit', '10Gbps', '125MB/s', '1GiB/s' -> bits per second.

    b or bit is a bit, B a byte (the usual convention); prefixes are
    decimal, or binary with an i (MiB/s)."""
    m = _BANDWIDTH.match(str(text))
    if not m:
        raise UsageError(f"invalid bandwidth {text!r}: use e.g. 1Gbit/s, 100Mbit/s or 125MB/s")
    scale = (_BINARY if m.group(3) else _DECIMAL)[m.group(2).lower()]
    bits = float(m.group(1)) * scale * (8 if m.group(4) == "B" else 1)
    if bits <= 0:
        raise UsageError(f"invalid bandwidth {text!r}: must be more than 0")
    return bits


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
