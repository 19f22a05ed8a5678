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


def parse_size(text):
    """'512MiB', '1GiB', '4G', '65536' -> bytes (whole bytes only)."""
    number, scale = _split(text, _SIZE_UNITS, "size", "512MiB, 1GiB or 4G")
    value = number * scale
    if value != int(value):
        raise UsageError(f"invalid size {text!r}: not a whole number of bytes")
    return int(value)


def parse_duration(text):
    """'500ms', '2s', '1.5s', '100us' -> seconds."""
    number, scale = _split(text, _DURATION_UNITS, "duration", "500ms or 2s")
    return number * scale


def parse_rate(text):
    """'3M', '250k', '0' (unlimited) -> writes per second."""
    number, scale = _split(text, _RATE_UNITS, "rate", "3M, 250k or 0 (unlimited)")
    value = number * scale
    if value != int(value):
        raise UsageError(f"invalid rate {text!r}: not a whole number of writes/s")
    return int(value)


def format_rate(wps):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if wps >= scale:
            return f"{wps / scale:.3f} {unit}"
    return f"{wps:.0f} "
