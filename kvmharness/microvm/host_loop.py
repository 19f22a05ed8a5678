"""The guest's writer loop run as a plain host process: the yardstick for
"the guest runs natively".

The guest image's entry is called as a C function in a forked child, over
host memory of the same size, so guest and host execute identical
instructions on an identical working set.  A guest that KVM emulates instead
of running on the hardware manages ~0.07 M writes/s where the host loop
manages ~150 M (docs/platform.md), so the ratio of the two rates tells
"native" from "emulated" on any host, whatever its speed.
"""

import os
import signal
import time
import warnings

from . import guest
from .._native import ffi, lib
from ..errors import HarnessError
from ..kvm.memory import MAP_ANONYMOUS, MAP_SHARED, Mapping

START_TIMEOUT = 10.0


def host_loop_rate(mem, seconds, wps, tsc_hz, catch_up_seconds):
    """Writes/s of the guest loop in a forked host process, over `mem` bytes
    of shared host memory, measured after its warm-up pass."""
    with Mapping(guest.PAGE_SIZE, flags=MAP_SHARED | MAP_ANONYMOUS) as ctl_map, \
            Mapping(mem, flags=MAP_SHARED | MAP_ANONYMOUS) as region:
        region.populate_write()
        ctl = guest.ControlBlock.from_address(ctl_map.addr)
        ctl.base, ctl.npages, ctl.seed = region.addr, mem // guest.PAGE_SIZE, 1
        ctl.cmd, ctl.warm = guest.CMD_RUN, 1
        guest.set_pace(ctl, wps, tsc_hz, catch_up_seconds)
        with warnings.catch_warnings():
            # Python 3.12 warns about fork() beside threads (the vCPU threads)
            # because the child might need a lock one of them held; this child
            # runs nothing but the guest loop's machine code.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # never returns; killed below
            lib.kvmh_guest_run_on_host(ffi.cast("void *", ctl_map.addr))
            os._exit(1)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while ctl.state != lib.KVMH_STATE_RUNNING:
                if time.monotonic() > deadline:
                    raise HarnessError("the host loop did not start")
                time.sleep(0.001)
            time.sleep(0.05)
            c0, t0 = ctl.counter, time.perf_counter()
            time.sleep(seconds)
            c1, t1 = ctl.counter, time.perf_counter()
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            del ctl
    return (c1 - c0) / (t1 - t0)
