"""Migration capabilities and parameters with QEMU's names, defaults, types
and checks (migration/options.c: migrate_caps_check, migrate_params_check;
qapi/migration.json), for QMP's migrate-set-capabilities and
migrate-set-parameters and the CLI's flags.  Messages are QEMU's, byte for
byte, including "either of then" and "greater then"."""

import dataclasses
import json

from ..convergence.trigger import ThrottleParameters
from ..errors import HarnessError

CAPABILITIES = ("auto-converge", "dirty-limit")
# QEMU 10's MigrationCapability enum, in its order (query-migrate-capabilities lists them all): the ones
# we do not implement are reported off, and may be set off but not on.
QEMU_CAPABILITIES = ("xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "events", "postcopy-ram", "x-colo",
                     "release-ram", "return-path", "pause-before-switchover", "multifd", "dirty-bitmaps",
                     "postcopy-blocktime", "late-block-activate", "x-ignore-shared", "validate-uuid",
                     "background-snapshot", "zero-copy-send", "postcopy-preempt", "switchover-ack", "dirty-limit",
                     "mapped-ram")
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
# The rest of QEMU 10's MigrationParameters with QEMU's defaults: query-migrate-parameters reports them (a
# client reads QEMU's keys), and migrate-set-parameters takes each at that value only, since nothing of ours
# would act on another (no TLS, multifd, compression, announce, COLO or postcopy here).
QEMU_ONLY_PARAMETERS = {
    "announce-initial": 50, "announce-max": 550, "announce-rounds": 5, "announce-step": 100,
    "tls-creds": "", "tls-hostname": "", "tls-authz": "", "max-postcopy-bandwidth": 0,
    "avail-switchover-bandwidth": 0, "x-checkpoint-delay": 20000, "multifd-channels": 2,
    "multifd-compression": "none", "multifd-zlib-level": 1, "multifd-qatzip-level": 1, "multifd-zstd-level": 1,
    "xbzrle-cache-size": 64 << 20, "mode": "normal", "zero-page-detection": "multifd", "direct-io": False,
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
        if name not in QEMU_CAPABILITIES:
            raise ParameterError(f"Parameter 'capability' does not accept value '{name[:64]}'")
        if not isinstance(state, bool):
            raise ParameterError(f"Invalid parameter type for '{where}.state', expected: boolean")
        if name not in CAPABILITIES:
            if state:
                raise ParameterError(f"capability '{name}' is not supported by kvmharness (it offers "
                                     f"{' and '.join(CAPABILITIES)})")
            continue
        out[name] = state
    return out


def query_capabilities(caps):
    """query-migrate-capabilities: every capability QEMU 10 names, ours as set."""
    return [{"capability": name, "state": bool(caps.get(name, False))} for name in QEMU_CAPABILITIES]


def query_parameters(params):
    """query-migrate-parameters: QEMU 10's members (ours as set, the rest at
    QEMU's defaults) and our x- ones."""
    return QEMU_ONLY_PARAMETERS | params


def check_types(new):
    """QAPI's visit of migrate-set-parameters' members."""
    for name, value in new.items():
        if name in QEMU_ONLY_PARAMETERS:
            if value != QEMU_ONLY_PARAMETERS[name] or type(value) is not type(QEMU_ONLY_PARAMETERS[name]):
                raise ParameterError(f"Parameter '{name}' is not supported by kvmharness: it may only be "
                                     f"{json.dumps(QEMU_ONLY_PARAMETERS[name])}, QEMU's default")
            continue
        if name not in PARAMETERS:
            raise ParameterError(f"Parameter '{name}' is unexpected")
        kind = PARAMETERS[name][0]
        if kind == "bool":
            if not isinstance(value, bool):
                raise ParameterError(f"Invalid parameter type for '{name}', expected: boolean")
            continue
        if not isinstance(value, int) or isinstance(value, bool):  # QEMU's visitor reads every width as uint64
            raise _expects(name, "uint64")
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
    if p["downtime-limit"] > MAX_DOWNTIME_MS:  # QEMU 10 prints the macro's expression
        raise _expects("downtime_limit", "an integer in the range of 0 to (2000 * 1000) ms")
    if not p["cpu-throttle-initial"] <= p["max-cpu-throttle"] <= 99:
        raise _expects("max_cpu_throttle", "an integer in the range of cpu_throttle_initial to 99")
    if not 1 <= p["x-vcpu-dirty-limit-period"] <= 1000:
        raise _expects("x-vcpu-dirty-limit-period", "a value between 1 and 1000")
    if p["vcpu-dirty-limit"] < 1:
        raise ParameterError("Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s")
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
