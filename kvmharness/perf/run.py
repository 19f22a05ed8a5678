"""`perf`: dirty_log_perf_test's procedure (tools/testing/selftests/kvm/
dirty_log_perf_test.c, with lib/memstress.c's guest) on our micro-VM, each
harvest checked against replay.

The selftest: every vCPU makes one pass over its memory (populate), dirty
logging is enabled, then each iteration lets every vCPU make one more pass
(one access per page of its region: in order, or as many random picks with
-a; a write with probability -w %), waits for all of them, and times
KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG over every memslot; at the end
logging is disabled.  Our writer does the same passes: a run of exactly
`pages` accesses (guest/writer.S "Limit") stops each vCPU out of the guest,
as the selftest's GUEST_SYNC does.

What we add: before enabling logging, the same number of iterations
without it (the guest's cost of being tracked is the difference in the
vCPUs' own time per pass, from the guest's TSC); and after each logged
iteration the harvest is checked against replay of the pass (the writers
are stopped at both ends, so nothing is in flight): every page it wrote
must be reported, and no page it did not touch.  A page it only read may
be reported too, and is counted apart: a read fault that installs a new
4 KiB mapping in a dirty-logged slot installs it writable and marks the
page dirty (x86 make_spte), which happens on this host after huge
mappings are dropped for logging (all such pages, 0 on 4 KiB backing).
With INITIALLY_SET the first harvest is every page, as KVM documents.
"""

import contextlib
import dataclasses
import os
import time

import numpy as np

from ..errors import HarnessError, UsageError
from ..microvm.dirty_ring import host_max_ring_entries
from ..microvm.machine import MicroVm, VmConfig
from ..microvm.truth import accessed_since, written_since
from .log import log_for
from .result import PerfIteration, PerfResult

MODES = ("dirty-bitmap", "dirty-ring")


def check_config(config):
    if config.mode not in MODES:
        raise UsageError(f"perf logs with one of {', '.join(MODES)}, not {config.mode[:40]!r}")
    if config.iterations < 1:
        raise UsageError("perf needs at least one iteration")
    if not 0 <= config.write_percent <= 100:
        raise UsageError("the write percentage must be 0..100")
    if config.pin and len(config.pin) not in (config.vcpus, config.vcpus + 1):
        raise UsageError(f"--pin takes one pCPU per vCPU ({config.vcpus}), optionally one more for the main "
                         f"thread, not {len(config.pin)}")
    allowed = os.sched_getaffinity(0)
    for cpu in config.pin:
        if cpu not in allowed:
            raise UsageError(f"cannot pin to CPU {cpu}: this process may run on {sorted(allowed)}")


@contextlib.contextmanager
def _main_thread_pinned(cpu):
    """The calling thread on `cpu` for the block (None: left alone)."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _vm_config(config):
    ring = 0
    if config.mode == "dirty-ring":
        ring = config.ring_entries or host_max_ring_entries()
    return VmConfig(mem=config.mem, vcpus=config.vcpus, seed=config.seed, warm=True, prefault=config.prefault,
                    dirty_ring_entries=ring, manual_protect=config.manual_protect, backing=config.backing,
                    slots=config.slots)


def run_perf(config):
    """Build the VM, run the procedure, return a PerfResult."""
    check_config(config)
    pages = config.mem // 4096 if config.overlap else config.vcpu_bytes // 4096
    timeout = 60.0 + pages * 200e-6  # 200 us per access is a very slow (nested, ring-full) host
    with MicroVm(_vm_config(config)) as vm:
        if config.manual_protect and config.mode == "dirty-bitmap" and not vm.manual_protect:
            raise HarnessError("this host's KVM has no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2; use --no-manual-protect")
        main_cpu = config.pin[config.vcpus] if len(config.pin) > config.vcpus else None
        with _main_thread_pinned(main_cpu):
            t0 = time.perf_counter()
            vm.start()
            if config.pin:
                vm.pin_vcpus(config.pin[: config.vcpus])
            vm.wait_ready(timeout)
            populate = time.perf_counter() - t0
            options = {"write_percent": config.write_percent, "shared_region": True if config.overlap else None}
            pattern = "random" if config.random_access else "sequential"

            def one_pass(number, log=None):
                start = vm.counters()
                if log is not None:
                    log.begin()
                t = time.perf_counter()
                vm.writer.run_accesses(pages, pattern, **options)
                vm.writer.wait_done(timeout)
                seconds = time.perf_counter() - t
                vcpu = vm.writer.run_seconds()
                if log is None:
                    return PerfIteration(number, False, seconds, vcpu, pages)
                harvest = log.collect()
                stop = vm.counters()
                want, touched = written_since(vm, start, stop), accessed_since(vm, start, stop)
                if log.initially_set and number == 1:
                    want[:] = touched[:] = True  # KVM_DIRTY_LOG_INITIALLY_SET: every bit set at enable
                got = harvest.pages
                return PerfIteration(number, True, seconds, vcpu, pages, harvest.get_seconds, harvest.clear_seconds,
                                     int(got.sum()), int(want.sum()), int(np.count_nonzero(want & ~got)),
                                     int(np.count_nonzero(got & ~touched)), harvest.ring_full_exits,
                                     int(np.count_nonzero(got & touched & ~want)))

            baseline = tuple(one_pass(n) for n in range(1, config.iterations + 1))
            log = log_for(vm)
            t = time.perf_counter()
            log.enable()
            enable = time.perf_counter() - t
            iterations = tuple(one_pass(n, log) for n in range(1, config.iterations + 1))
            t = time.perf_counter()
            log.disable()
            disable = time.perf_counter() - t
            vm.hold()
        if vm.ring is not None:
            config = dataclasses.replace(config, ring_entries=vm.ring.entries)  # the size used, not 0
        return PerfResult(config, vm.manual_protect if config.mode == "dirty-bitmap" else 0, populate, enable,
                          disable, baseline, iterations)
