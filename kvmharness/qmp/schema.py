"""Argument checking as QEMU's QAPI input visitor does it, with its messages:
members in schema order (missing, then wrong type or bad enum value), then
anything left over is unexpected."""

import math
from dataclasses import dataclass

from ..errors import HarnessError, QmpError


@dataclass(frozen=True)
class Arg:
    name: str
    type: str  # int | uint64 | number | str | bool | array | enum | any (the handler checks it)
    required: bool = False
    values: tuple = ()  # enum values
    parse: object = None  # value -> the handler's value, raising HarnessError with the reply's text

    def check(self, value):
        if self.type == "any":
            return value
        if self.type == "uint64":  # QEMU's visitor: anything but an integer "expects uint64"
            if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64):
                raise QmpError(f"Parameter '{self.name}' expects uint64")
            return value
        expected = {"int": "integer", "number": "number", "str": "string", "bool": "boolean", "array": "array",
                    "enum": "string"}[self.type]
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63,
            "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
            "array": isinstance(value, list),
            "enum": isinstance(value, str),
        }[self.type]
        if not ok:
            raise QmpError(f"Invalid parameter type for '{self.name}', expected: {expected}")
        if self.type == "enum" and value not in self.values:
            raise QmpError(f"Parameter '{self.name}' does not accept value '{value}'")
        if self.parse is not None:
            try:
                return self.parse(value)
            except HarnessError as e:
                raise QmpError(str(e)) from None
        return value


def check_arguments(schema, arguments):
    """Validated arguments as a dict keyed by the QMP member names."""
    out = {}
    for arg in schema:
        if arg.name not in arguments:
            if arg.required:
                raise QmpError(f"Parameter '{arg.name}' is missing")
            continue
        out[arg.name] = arg.check(arguments[arg.name])
    for name in arguments:
        if name not in out:
            raise QmpError(f"Parameter '{name}' is unexpected")
    return out
