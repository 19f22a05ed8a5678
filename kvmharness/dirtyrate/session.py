"""A VM set up for measuring, from command-line arguments: built, warmed up,
with the writer running at the asked rate for a settling time."""

import contextlib
import time

from ..dirty_ring import GFN_SIZE, max_ring_bytes
from ..kvm import Kvm
from ..kvm.system import DEFAULT_DEVICE
from ..machine import MicroVm, VmConfig
from .monitor import DirtyRateMonitor


def host_max_ring_entries(device=DEFAULT_DEVICE):
    with Kvm(device) as kvm:
        return max_ring_bytes(kvm)[0] // GFN_SIZE


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
