"""The guest side of the contract, seen from the host: the guest image, the
layout constants of guest/layout.h, and the writer's control block.

All numbers come from the native extension, which was compiled from the same
guest/layout.h as the guest itself, so host and guest cannot disagree.
"""

import ctypes

from .._native import ffi, lib
from ..errors import BuildMismatch

PAGE_SIZE = lib.KVMH_PAGE_SIZE
PAGE_SHIFT = lib.KVMH_PAGE_SHIFT
MAX_VCPUS = lib.KVMH_MAX_VCPUS
WARM_TAG = lib.KVMH_WARM_TAG

CMD_HOLD, CMD_RUN, CMD_EXIT = lib.KVMH_CMD_HOLD, lib.KVMH_CMD_RUN, lib.KVMH_CMD_EXIT
STATES = {
    lib.KVMH_STATE_BOOT: "boot",
    lib.KVMH_STATE_WARMING: "warming",
    lib.KVMH_STATE_HELD: "held",
    lib.KVMH_STATE_RUNNING: "running",
    lib.KVMH_STATE_EXITED: "exited",
    lib.KVMH_STATE_DONE: "done",
}
EVENT_HELD, EVENT_EXITED = lib.KVMH_EVENT_HELD, lib.KVMH_EVENT_EXITED

GOLDEN, MIX1, MIX2 = lib.KVMH_GOLDEN, lib.KVMH_MIX1, lib.KVMH_MIX2


def guest_image():
    """The assembled guest/writer.S, entry point at offset 0."""
    pp = ffi.new("const unsigned char **")
    size = lib.kvmh_guest_image(pp)
    if size > lib.KVMH_CODE_MAX:
        raise BuildMismatch(f"guest image of {size} bytes exceeds KVMH_CODE_MAX")
    return bytes(ffi.buffer(pp[0], size))


def _control_fields():
    """(name, offset) of every control block field, ordered by offset."""
    skip = {"KVMH_CTL_GPA", "KVMH_CTL_STRIDE", "KVMH_CTL_SIZE"}
    fields = [
        (name[len("KVMH_CTL_") :].lower(), getattr(lib, name))
        for name in dir(lib)
        if name.startswith("KVMH_CTL_") and name not in skip
    ]
    return sorted(fields, key=lambda f: f[1])


def _control_block_type():
    layout, pos = [], 0
    for name, offset in _control_fields():
        if offset < pos or offset % 8:
            raise BuildMismatch(f"control block field {name} overlaps or is misaligned")
        if offset > pos:
            layout.append((f"_pad_{pos:x}", ctypes.c_uint8 * (offset - pos)))
        layout.append((name, ctypes.c_uint64))
        pos = offset + 8
    if pos != lib.KVMH_CTL_SIZE:
        raise BuildMismatch("KVMH_CTL_SIZE does not match the control block fields")
    return type("ControlBlock", (ctypes.Structure,), {"_fields_": layout})


ControlBlock = _control_block_type()
ControlBlock.__doc__ = """One vCPU's control block (guest/layout.h), aliasing guest RAM.

Host-written fields (gen, cmd, wps, interval*, backlog, seed, base, npages,
pattern, warm, limit) are read by the guest after `gen` changes;
guest-written fields (counter, state, seen_gen, seen_counter, warm_begin/end,
resets, dropped, run_begin/end) are
read by the host at any time without an exit: aligned 8-byte loads and stores
are atomic on x86, and TSO keeps each side's stores in order."""


def control_block_gpa(vcpu):
    return lib.KVMH_CTL_GPA + vcpu * lib.KVMH_CTL_STRIDE


def set_pace(ctl, wps, tsc_hz, catch_up_seconds):
    """Program a control block's rate: `wps` writes/s (0: unlimited) as a
    32.32 fixed-point TSC interval, and the most lag the writer catches up
    before it restarts its schedule (guest/writer.S, "Rate")."""
    ctl.wps = int(wps)
    if wps:
        fixed = (int(tsc_hz) << 32) // int(wps)
        ctl.interval, ctl.interval_frac = fixed >> 32, fixed & 0xFFFFFFFF
    ctl.backlog = int(tsc_hz * catch_up_seconds)
