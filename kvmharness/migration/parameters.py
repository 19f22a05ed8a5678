"""Migration capabilities and parameters with QEMU's names, defaults, types
and checks (migration/options.c: migrate_caps_check, migrate_params_check;
qapi/migration.json), for QMP's migrate-set-capabilities and
migrate-set-parameters and the CLI's flags.  Messages are QEMU's, byte for
byte, including "either of then" and "greater then"."""

import dataclasses

from ..convergence.trigger import ThrottleParameters
from ..errors import HarnessError

CAPABILITIES = ("auto-converge", "dirty-limit")
MAX_DOWNTIME_MS = 2000 * 1000  # MAX_MIGRATE_DOWNTIME

CONFLICT = "dirty-limit conflicts with auto-converge either of then available currently"
LIMIT_NEEDS_RING = "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set"
MIGRATION_ACTIVE = "There's a migration process in progress"


class ParameterError(HarnessError):
    """A capability or parameter QEMU would refuse, with its message."""


def _expects(name, what):
    return ParameterError(f"Parameter '{name}' expects {what}")


# QMP name -> (QAPI width, default).  The throttle parameters are
# ThrottleParameters' fields; downtime-limit and max-bandwidth QEMU's;
# x-max-iterations ours (QEMU has no iteration cap).
PARAMETERS = {
    "throttle-trigger-threshold": ("uint8", 50),
    "cpu-throttle-initial": ("uint8", 20),
    "cpu-throttle-increment": ("uint8", 10),
    "cpu-throttle-tailslow": ("bool", False),
    "max-cpu-throttle": ("uint8", 99),
    "x-vcpu-dirty-limit-period": ("uint64", 1000),
    "vcpu-dirty-limit": ("uint64", 1),
    "downtime-limit": ("uint64", 300),
    "max-bandwidth": ("size", 0),
    "x-max-iterations": ("uint64", 30),
}
WIDTH = {"uint8": (1 << 8, "uint8_t"), "uint64": (1 << 64, "uint64"), "size": (1 << 64, "size")}


def defaults():
    return {name: default for name, (_, default) in PARAMETERS.items()}


def check_capabilities(caps, has_ring):
    """QEMU's migrate_caps_check on the capabilities as they would be."""
    if caps.get("dirty-limit"):
        if caps.get("auto-converge"):
            raise ParameterError(CONFLICT)
        if not has_ring:
            raise ParameterError(LIMIT_NEEDS_RING)


def parse_capabilities(items):
    """migrate-set-capabilities' list of {capability, state} -> {name: bool}."""
    if not isinstance(items, list):
        raise ParameterError("Invalid parameter type for 'capabilities', expected: array")
    out = {}
    for k, item in enumerate(items):
        where = f"capabilities[{k}]"
        if not isinstance(item, dict):
            raise ParameterError(f"Invalid parameter type for '{where}', expected: object")
        if "capability" not in item:
            raise ParameterError(f"Parameter '{where}.capability' is missing")
        if "state" not in item:
            raise ParameterError(f"Parameter '{where}.state' is missing")
        extra = set(item) - {"capability", "state"}
        if extra:
            raise ParameterError(f"Parameter '{where}.{sorted(extra)[0]}' is unexpected")
        name, state = item["capability"], item["state"]
        if not isinstance(name, str):
            raise ParameterError(f"Invalid parameter type for '{where}.capability', expected: string")
        if name not in CAPABILITIES:
            raise ParameterError(f"Parameter '{where}.capability' does not accept value '{name[:64]}'")
        if not isinstance(state, bool):
            raise ParameterError(f"Invalid parameter type for '{where}.state', expected: boolean")
        out[name] = state
    return out


def check_types(new):
    """QAPI's visit of migrate-set-parameters' members."""
    for name, value in new.items():
        if name not in PARAMETERS:
            raise ParameterError(f"Parameter '{name}' is unexpected")
        kind = PARAMETERS[name][0]
        if kind == "bool":
            if not isinstance(value, bool):
                raise ParameterError(f"Invalid parameter type for '{name}', expected: boolean")
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise ParameterError(f"Invalid parameter type for '{name}', expected: integer")
        high, qapi_name = WIDTH[kind]
        if not 0 <= value < high:
            raise _expects(name, qapi_name)


def check_parameters(p):
    """QEMU's migrate_params_check, in its order, on the parameters as they
    would be after the change (QEMU checks the merged set too)."""
    if not 1 <= p["throttle-trigger-threshold"] <= 100:
        raise _expects("throttle_trigger_threshold", "an integer in the range of 1 to 100")
    if not 1 <= p["cpu-throttle-initial"] <= 99:
        raise _expects("cpu_throttle_initial", "an integer in the range of 1 to 99")
    if not 1 <= p["cpu-throttle-increment"] <= 99:
        raise _expects("cpu_throttle_increment", "an integer in the range of 1 to 99")
    if p["downtime-limit"] > MAX_DOWNTIME_MS:
        raise _expects("downtime_limit", f"an integer in the range of 0 to {MAX_DOWNTIME_MS} ms")
    if not p["cpu-throttle-initial"] <= p["max-cpu-throttle"] <= 99:
        raise _expects("max_cpu_throttle", "an integer in the range of cpu_throttle_initial to 99")
    if not 1 <= p["x-vcpu-dirty-limit-period"] <= 1000:
        raise _expects("x-vcpu-dirty-limit-period", "a value between 1 and 1000")
    if p["vcpu-dirty-limit"] < 1:
        raise _expects("vcpu_dirty_limit", "is invalid, it must greater then 1 MB/s")
    if p["x-max-iterations"] < 1:
        raise _expects("x-max-iterations", "a value of 1 or more")


def merged(current, new):
    """The parameters after migrate-set-parameters `new`, checked."""
    check_types(new)
    out = dict(current) | new
    check_parameters(out)
    return out


def throttle_parameters(p):
    """The aids' part of a parameter dict, as the trigger takes it."""
    return ThrottleParameters(**{f.name: p[f.name.replace("_", "-")]
                                 for f in dataclasses.fields(ThrottleParameters)})


def aid_name(caps):
    return next((name for name in CAPABILITIES if caps.get(name)), None)
