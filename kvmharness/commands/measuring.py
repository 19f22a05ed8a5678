"""A VM set up for measuring, from command-line arguments: built, warmed up,
with the writer running at the asked rate for a settling time."""

import contextlib
import time

from ..dirtyrate.monitor import DirtyRateMonitor
from ..kvm import backing
from ..microvm.dirty_ring import host_max_ring_entries
from ..microvm.machine import MicroVm, VmConfig


def writer_options(args):
    """The workload options of the command line, as WriterControl.set takes them."""
    return {"write_percent": args.write_percent, "burst": args.burst,
            "shared_region": True if args.shared_region else None}


LIMIT_RING_ENTRIES = 1024  # 4 MiB a vCPU: fills often enough for a 100 ms dirty-limit period to see several


def ring_size_for(args):
    """The dirty ring a command's VM gets: --dirty-ring-size, else a small
    one when a dirty limit is asked for (the limit needs a ring), else none."""
    if getattr(args, "dirty_ring_size", None):
        return args.dirty_ring_size
    return LIMIT_RING_ENTRIES if getattr(args, "dirty_limit", None) else None


def quick_backing(prefault, write_percent=100):
    """(backing, prefault) for a VM that only stands in for the guest
    (`predict`), whose set-up is overhead: with transparent huge pages the
    warm-up faults 2 MiB at a time, so 1 GiB is ready in 0.15 s instead of
    2.5 s (4 KiB pages prefaulted, then warmed), and nothing is prefaulted;
    dirty logging maps 4 KiB either way, and the rate under it is the same
    (145 and 144 MiB/s over 1 s on 1 GiB on our runner).  Without THP:
    anonymous memory, prefaulted as asked (a warm-up that faults every 4 KiB
    from the host allocator costs 8.8 s on 1 GiB there), and also when the
    writer reads: KVM marks a page dirty when it maps it writable, and with
    THP it maps whole huge pages on a read (docs/results/measuring-cost)."""
    if write_percent == 100 and backing.thp_mode() in ("always", "madvise"):
        return "anonymous-thp", False
    return "anonymous", prefault


@contextlib.contextmanager
def measurement_vm(args, ring_entries=None):
    """ring_entries: None for no dirty ring, 0 for the host's maximum."""
    if ring_entries == 0:
        ring_entries = host_max_ring_entries()
    config = VmConfig(mem=args.mem, vcpus=args.vcpus, seed=args.seed, prefault=args.prefault,
                      dirty_ring_entries=ring_entries or 0, backing=args.backing, slots=args.slots)
    with MicroVm(config) as vm:
        vm.start()
        vm.wait_ready()
        vm.run_writer(args.wps, args.pattern, **writer_options(args))
        time.sleep(getattr(args, "settle", 0.0))
        yield vm, DirtyRateMonitor(vm)
