"""A VM set up for measuring, from command-line arguments: built, warmed up,
with the writer running at the asked rate for a settling time."""

import contextlib
import time

from ..dirtyrate.monitor import DirtyRateMonitor
from ..microvm.dirty_ring import host_max_ring_entries
from ..microvm.machine import MicroVm, VmConfig


@contextlib.contextmanager
def measurement_vm(args, ring_entries=None):
    """ring_entries: None for no dirty ring, 0 for the host's maximum."""
    if ring_entries == 0:
        ring_entries = host_max_ring_entries()
    config = VmConfig(mem=args.mem, vcpus=args.vcpus, seed=args.seed, prefault=args.prefault,
                      dirty_ring_entries=ring_entries or 0)
    with MicroVm(config) as vm:
        vm.start()
        vm.wait_ready()
        vm.run_writer(args.wps, args.pattern)
        time.sleep(getattr(args, "settle", 0.0))
        yield vm, DirtyRateMonitor(vm)
