"""What a QMP peer's answers must be before we compute with them (issue 25).

The client checks that a reply is a JSON object; what is inside is the
peer's word.  A hostile (or broken) peer answered memory sizes as lists,
strings, NaN, 1e400 or 4000 digits, CPU lists as numbers, dirty rates of
-1, 1e300 or "fast", and 27 of 69 such answers ended `predict --qmp` in a
traceback; a failed measurement (QEMU's dirty-rate -1) became a negative
curve that "converges".  Each accessor here returns the value in the type
and range QEMU's schema gives it (qapi/*.json) or raises
QmpConnectionError naming the peer, the command and what came, escaped
and cut short.
"""

from .. import peer
from .client import QmpConnectionError

MAX_RAM = 1 << 50  # 1 PiB of guest RAM: past any VM, far from float trouble
MAX_DIRTY_RATE = 1 << 40  # MiB/s: a million TiB/s; QEMU's int64 field, bounded to what a guest can mean
MAX_VCPUS = 1 << 16


def _refuse(client, command, what, value, expected):
    shown = peer.printable(repr(value), 60)
    return QmpConnectionError(f"QMP at {client.shown}: {command} answered {what} {shown}, not {expected}")


def obj(client, command, value, what="with"):
    """`value` as a JSON object (dict)."""
    if not isinstance(value, dict):
        raise _refuse(client, command, what, value, "an object")
    return value


def items(client, command, value, what="with", low=0, high=MAX_VCPUS):
    """`value` as a JSON array of low..high entries."""
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise _refuse(client, command, what, value, f"a list of {low}..{high} entries")
    return value


def whole(client, command, reply, field, low=0, high=1 << 63):
    """reply[field] as an integer low..high: JSON's whole numbers only
    (not true, 1.5, 1e400, NaN or a numeral string)."""
    value = obj(client, command, reply).get(field)
    if type(value) is not int or not low <= value <= high:
        raise _refuse(client, command, f"{field}", value, f"a whole number {low}..{high}")
    return value


def text(client, command, value, what="with"):
    if not isinstance(value, str):
        raise _refuse(client, command, what, value, "a string")
    return value


def status(client, command, reply):
    """reply["status"], a string (query-status, query-migrate,
    query-dirty-rate)."""
    return text(client, command, obj(client, command, reply).get("status"), "status")
