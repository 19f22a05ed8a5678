"""MicroVm: a VM with a control slot, a data slot and N vCPUs running the
guest writer, ready to be measured.  It owns the resources (fds, mappings,
vCPU threads) and their teardown; the writer's control protocol and ground
truth are microvm/writer.py's (`vm.writer`).

Guest physical map (guest/layout.h):
    0x0000_0000  control slot (memslot 0): page tables, guest code, one
                 control block per vCPU
    0xC000_0000  MMIO doorbell: mapped by the guest, backed by no memslot
    0x1_0000_0000 data region (memslots 2.., one by default): the writer's
                 region, split into disjoint, equal slices, one per vCPU
                 (or shared by all); with `slots` > 1 it is cut into that
                 many memslots at 2 MiB boundaries, all over one host
                 mapping, as QEMU's RAM is one RAMBlock in two memslots
                 around the PCI hole (and dirty_log_perf_test's -x)
    next 1 GiB boundary after it: table slot (memslot 1), two alias tables
                 per vCPU for the hotcold and zipf patterns (8 bytes per
                 data page each); the guest only reads it and it is never
                 dirty-logged.  Its memory is touched only when a table
                 pattern runs.
"""

import contextlib
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import cpu_setup, guest, paging
from .dirty_ring import DirtyRings, max_ring_bytes, ring_bytes
from .._native import lib
from ..errors import CapabilityMissing, HarnessError, UsageError
from ..kvm import Kvm, uapi
from ..kvm.system import DEFAULT_DEVICE
from ..kvm import backing
from ..kvm.memory import Mapping, check_host_can_back
from .page_hash import hash_pages
from .replay import WriterLog, WriterStream, splitmix64
from .vcpu_thread import VcpuThread, install_kick_handler
from .workload import table_seed, vcpu_region
from .writer import WriterControl, WriterHost

CONTROL_SLOT, TABLE_SLOT, FIRST_DATA_SLOT = 0, 1, 2
MIN_DATA = 64 << 20
SLOT_ALIGN = paging.SIZE_2M  # data memslots start at 2 MiB boundaries: whole bitmap words, whole huge pages


@dataclass(frozen=True)
class DataSlot:
    """One memslot of the data region: KVM's slot id and which of the
    region's pages it holds."""

    id: int
    first_page: int
    pages: int

    @property
    def gpa(self):
        return lib.KVMH_DATA_GPA + self.first_page * guest.PAGE_SIZE


def data_slots(mem, slots):
    """The data region cut into `slots` memslots at 2 MiB boundaries, as
    evenly as that allows."""
    if slots == 1:
        return (DataSlot(FIRST_DATA_SLOT, 0, mem // guest.PAGE_SIZE),)
    units = mem // SLOT_ALIGN
    per_unit = SLOT_ALIGN // guest.PAGE_SIZE
    bounds = [units * k // slots * per_unit for k in range(slots + 1)]
    return tuple(DataSlot(FIRST_DATA_SLOT + k, bounds[k], bounds[k + 1] - bounds[k]) for k in range(slots))


@dataclass(frozen=True)
class VmConfig:
    """What to build.  `mem` is the data slot in bytes (a multiple of 4 KiB)."""

    mem: int
    vcpus: int = 1
    seed: int = 1
    warm: bool = True  # touch every page once before the first command
    prefault: bool = True  # MADV_POPULATE_WRITE the data slot before boot
    dirty_ring_entries: int = 0  # per vCPU; 0: no dirty ring (bitmap logging)
    manual_protect: bool = True  # KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 where the host has it
    device: str = DEFAULT_DEVICE
    backing: str = backing.DEFAULT  # kvm/backing.py: the host memory behind the data region
    slots: int = 1  # memslots the data region is cut into


def vcpu_seed(seed, vcpu):
    """Each vCPU's PRNG seed: SplitMix64 of its index, so streams never overlap."""
    return int(splitmix64(np.array([vcpu], dtype=np.uint64), seed)[0])


def table_slot(config):
    """(guest physical address, size) of the table slot: the next 1 GiB
    boundary after the data slot, two tables of 8 bytes per data page for
    each vCPU (a vCPU may write the whole slot when the region is shared)."""
    gpa = -(-(lib.KVMH_DATA_GPA + config.mem) // paging.SIZE_1G) * paging.SIZE_1G
    size = 2 * config.vcpus * (config.mem // guest.PAGE_SIZE) * 8
    return gpa, -(-size // paging.SIZE_2M) * paging.SIZE_2M


def control_slot_size(config):
    """Bytes of the control slot: the page tables (built once to learn how
    far they reach) rounded up to 2 MiB.  What a migration's switch-over
    sends besides the pages (migration/predict.py counts it)."""
    tables = paging.build(lib.KVMH_PD_GPA, lib.KVMH_DATA_GPA, config.mem, [table_slot(config)])
    return -(-tables.end // paging.SIZE_2M) * paging.SIZE_2M


def check_vcpu_count(kvm, vcpus):
    """Refuse more vCPUs than KVM's hard limit (KVM_CAP_MAX_VCPUS, else
    NR_VCPUS, else 4 as the API documentation says) or than we have control
    blocks for."""
    limit = kvm.check_extension("KVM_CAP_MAX_VCPUS") or kvm.check_extension("KVM_CAP_NR_VCPUS") or 4
    if vcpus > limit:
        raise UsageError(f"{vcpus} vCPUs asked, but this host's KVM allows at most {limit}")
    if vcpus > guest.MAX_VCPUS:
        raise UsageError(f"{vcpus} vCPUs asked, but kvmharness supports at most {guest.MAX_VCPUS}")


class MicroVm(WriterHost):
    """Owns every fd, mapping and thread of one VM; close() (or `with`)
    releases them in reverse order of creation."""

    def __init__(self, config):
        self.config = config
        self._validate(config)
        self._stack = contextlib.ExitStack()
        try:
            self._build(config)
        except BaseException:
            self._stack.close()
            raise
        self._closed = False

    # ---- construction ------------------------------------------------------
    @staticmethod
    def _validate(config):
        if config.mem < MIN_DATA:
            raise UsageError(f"the data slot must be at least {MIN_DATA >> 20} MiB")
        if config.mem % guest.PAGE_SIZE:
            raise UsageError("the data slot size must be a multiple of 4 KiB")
        if config.mem + lib.KVMH_DATA_GPA > paging.MAX_MAPPED:
            raise UsageError("the data slot cannot exceed 508 GiB")
        if sum(table_slot(config)) > paging.MAX_MAPPED:
            raise UsageError(f"{config.mem >> 30} GiB with {config.vcpus} vCPUs leaves no room for the pattern "
                             f"tables (16 bytes per data page per vCPU) below 512 GiB: fewer vCPUs or less memory")
        if config.vcpus < 1:
            raise UsageError("a VM needs at least one vCPU")
        if not 0 <= config.seed < 1 << 64:
            raise UsageError("the seed must be an unsigned 64-bit number")
        backing.check_size(backing.source(config.backing), config.mem)
        if config.slots < 1:
            raise UsageError("the data region needs at least one memslot")
        if config.slots > 1 and (config.mem % SLOT_ALIGN or config.mem // SLOT_ALIGN < config.slots):
            raise UsageError(f"{config.slots} memslots need a data region of whole 2 MiB units, at least one "
                             f"per slot ({config.mem >> 20} MiB given)")

    def _build(self, config):
        kvm = self.kvm = self._stack.enter_context(Kvm(config.device))
        kvm.require()
        check_vcpu_count(kvm, config.vcpus)
        self.slot_pages = config.mem // guest.PAGE_SIZE
        if self.slot_pages // config.vcpus < 1:
            raise UsageError("fewer pages than vCPUs")

        table_gpa, table_size = table_slot(config)
        extra = [(table_gpa, table_size)]
        control_size = control_slot_size(config)
        tables = paging.build(control_size, lib.KVMH_DATA_GPA, config.mem, extra)
        # a hugetlb source comes from the host's reserved pool, which
        # MemAvailable does not count; backing.map_backing checks the pool
        hugetlb = backing.source(config.backing).hugetlb
        check_host_can_back((0 if hugetlb else config.mem) + control_size)
        self.data_slots = data_slots(config.mem, config.slots)
        nr_slots = kvm.check_extension("KVM_CAP_NR_MEMSLOTS") or 32
        if FIRST_DATA_SLOT + config.slots > nr_slots:
            raise UsageError(f"{config.slots} data memslots asked, but this host's KVM has "
                             f"{nr_slots - FIRST_DATA_SLOT} left (KVM_CAP_NR_MEMSLOTS {nr_slots})")

        vm = self.vm = self._stack.enter_context(kvm.create_vm())
        self.ring = None
        self.manual_protect = 0
        if config.dirty_ring_entries:
            # Before any vCPU exists (Vm enforces it); excludes bitmap logging.
            max_bytes, acq_rel = max_ring_bytes(vm)
            if not max_bytes:
                raise CapabilityMissing("this host's KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)")
            vm.enable_dirty_log_ring(ring_bytes(config.dirty_ring_entries, max_bytes), acq_rel)
        elif config.manual_protect:
            supported = vm.check_extension("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2")
            if supported & uapi.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE:
                vm.enable_cap("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", supported)
                self.manual_protect = supported

        self.control = self._stack.enter_context(Mapping(control_size))
        self.data = self._stack.enter_context(backing.map_backing(config.backing, config.mem))
        if config.prefault:
            self.data.populate_write()
        vm.set_user_memory_region(CONTROL_SLOT, 0, control_size, self.control.addr)
        self.data_flags = 0
        self._logging_owners = set()
        self._set_data_slots(0)
        self.tables = self._stack.enter_context(Mapping(table_size))
        vm.set_user_memory_region(TABLE_SLOT, table_gpa, table_size, self.tables.addr)

        tables.write_into(self.control)
        self.control.write(lib.KVMH_CODE_GPA, guest.guest_image())
        controls, logs = [], []
        for k in range(config.vcpus):
            ctl = guest.ControlBlock.from_address(self.control.addr + guest.control_block_gpa(k))
            first, npages = vcpu_region(self.slot_pages, config.vcpus, k)
            seed = vcpu_seed(config.seed, k)
            ctl.seed, ctl.npages = seed, npages
            ctl.base = lib.KVMH_DATA_GPA + first * guest.PAGE_SIZE
            ctl.pattern = lib.KVMH_PATTERN_RANDOM
            ctl.cmd = guest.CMD_HOLD
            ctl.warm = 1 if config.warm else 0
            controls.append(ctl)
            stream = WriterStream(seed, first, npages, "random", 0, table_seed(config.seed, first, npages))
            logs.append(WriterLog(((0, stream),)))

        cpuid = kvm.get_supported_cpuid()
        self.vcpus = []
        for k in range(config.vcpus):
            vcpu = self._stack.enter_context(vm.create_vcpu(k))
            vcpu.set_cpuid2(cpuid)
            cpu_setup.enter_long_mode_cpl3(vcpu, lib.KVMH_PML4_GPA)
            cpu_setup.set_entry(vcpu, lib.KVMH_CODE_GPA, guest.control_block_gpa(k))
            self.vcpus.append(vcpu)
        if config.dirty_ring_entries:
            self.ring = self._stack.enter_context(
                DirtyRings(vm, self.vcpus, config.dirty_ring_entries, self.data_slots)
            )
        self.tsc_khz = self.vcpus[0].get_tsc_khz()
        if self.tsc_khz <= 0:
            raise CapabilityMissing("KVM_GET_TSC_KHZ returned no TSC frequency")

        self.cond = threading.Condition()
        self.threads = []
        self.writer = WriterControl(controls, logs, self.tsc_khz * 1000, self.cond, self.check,
                                    slot_pages=self.slot_pages, vm_seed=config.seed, tables=self.tables,
                                    table_gpa=table_gpa)
        self._stack.callback(self.writer.detach)  # runs before the mappings go
        self._stack.callback(self._stop_threads)

    # ---- lifecycle ---------------------------------------------------------
    def start(self):
        """Start the vCPUs: the guest warms its region up, then holds."""
        install_kick_handler()
        for vcpu, ctl in zip(self.vcpus, self.writer.controls):
            thread = VcpuThread(
                vcpu, ctl, self.cond, lib.KVMH_DOORBELL_GPA,
                on_ring_full=self.ring.on_ring_full if self.ring else None,
            )
            self.threads.append(thread)
            thread.start()
        return self

    def wait_ready(self, timeout=None):
        """Wait for every vCPU to finish its warm-up; returns the warm-up
        time in seconds (the slowest vCPU's, from the guest's TSC stamps)."""
        if timeout is None:
            timeout = 30.0 + self.config.mem / (50 << 20)  # 50 MiB/s is very slow
        self.writer.wait(lambda c: c.state == lib.KVMH_STATE_HELD and c.seen_gen == c.gen, timeout,
                         "finish its warm-up")
        return self.writer.warm_seconds() if self.config.warm else 0.0

    def pin_vcpus(self, cpus):
        """Pin vCPU k's thread to host CPU cpus[k] (dirty_log_perf_test's
        -c: less variance between runs); after start()."""
        for thread, cpu in zip(self.threads, cpus):
            try:
                os.sched_setaffinity(thread.native_id, {cpu})
            except OSError as e:
                raise UsageError(f"cannot pin {thread.name} to CPU {cpu}: {e.strerror or e}") from None

    def add_teardown(self, fn):
        """Have fn() run first when the VM closes, before the vCPU threads stop
        and before any memory is unmapped: for whatever else runs threads
        that touch guest memory (a measurement, a migration)."""
        self._stack.callback(fn)

    def close(self):
        if not getattr(self, "_closed", True):
            self._closed = True
            self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stop_threads(self):
        stuck = [t.name for t in self.threads if not t.stop()]
        if stuck:
            raise HarnessError(f"vCPU threads did not stop: {', '.join(stuck)}")

    def check(self):
        """Raise the first fault any vCPU thread has met, or that one has
        stopped running."""
        for t in self.threads:
            if t.fault is not None:
                fault, t.fault = t.fault, None
                if isinstance(fault, HarnessError):
                    raise fault
                raise HarnessError(f"vCPU thread {t.name} failed: {fault!r}") from fault
        for k, t in enumerate(self.threads):
            if t.exited and not t.stopping:
                raise HarnessError(f"vCPU {k} has stopped running")

    @contextlib.contextmanager
    def vcpus_stopped(self, timeout=5.0, on_stop=None):
        """Hold every vCPU outside the guest (in its own thread, out of
        KVM_RUN) for the duration of the block; `on_stop(vcpu)` runs first,
        on the vCPU's thread.  `timeout` bounds the wait for the vCPUs to
        come out.  They stay out until the block ends, however long that
        takes: a vCPU that went back in on a timer while the block still
        relied on it being out (an exact ring edge, a migration's final
        copy and hashes) would make the block's results wrong without a
        word.  The block's end always releases them (finally)."""
        release = threading.Event()
        all_out = threading.Event()
        arrived = []
        targets = [t for t in self.threads if not t.exited]

        def park(vcpu):
            if on_stop is not None:
                on_stop(vcpu)
            arrived.append(vcpu.id)
            if len(arrived) == len(targets):
                all_out.set()
            release.wait()

        # Block, not poll, while waiting: a polling thread keeps taking the GIL
        # back, and the vCPU threads need it to come out.
        requests = [(t, t.request_outside_guest(park)) for t in targets]
        try:
            deadline = time.monotonic() + timeout
            while requests and not all_out.wait(0.1):
                self.check()
                if any(t.exited for t in targets) or time.monotonic() > deadline:
                    raise HarnessError("vCPUs did not leave the guest when asked")
            yield
        finally:
            release.set()
        for thread, done in requests:
            thread.wait_request(done, timeout)

    def throttle_sleep(self, k, seconds):
        """On vCPU k's own thread (a ring-full hook): stay out of the guest
        for `seconds`, still serving requests (vcpu_thread.py)."""
        self.threads[k].throttle_sleep(seconds)

    def request_sleep(self, k, seconds):
        """From any thread: have vCPU k leave the guest and sleep `seconds`."""
        self.threads[k].request_sleep(seconds)

    def throttled_seconds(self):
        """Per vCPU, the seconds slept outside the guest so far for CPU
        throttling or the dirty limit."""
        return [t.throttled_seconds for t in self.threads]

    def vcpu_exits(self):
        """Per vCPU, how many times KVM_RUN has come back to its thread: an
        exact count of everything that took it out of the guest to us."""
        return [t.exits for t in self.threads]

    def retire_vcpus(self):
        """Make every vCPU thread end instead of re-entering the guest (the
        guest has moved elsewhere); used inside vcpus_stopped()."""
        for thread in self.threads:
            thread.stopping = True

    @property
    def paused(self):
        """Whether every vCPU was retired (a migration away) and none runs."""
        return bool(self.threads) and all(t.stopping for t in self.threads)

    def resume_retired(self, timeout=5.0):
        """New threads for retired vCPUs, whose state is still in KVM: a
        switch-over the destination never confirmed leaves the guest
        paused here, and an operator who knows it does not run there
        resumes it (QMP cont)."""
        if not self.paused:
            raise HarnessError("the guest is not paused")
        for t in self.threads:
            t.join(timeout)
            if t.is_alive():
                raise HarnessError(f"vCPU thread {t.name} has not ended; try again")
        self.threads = []
        self.start()

    def restore_vcpu(self, k, tsc, regs, sregs):
        """Load a vCPU's state from elsewhere (migration), before start()."""
        vcpu = self.vcpus[k]
        vcpu.set_sregs(sregs)
        vcpu.set_regs(regs)
        vcpu.set_msrs({uapi.MSR_IA32_TSC: tsc})

    # ---- memory ---------------------------------------------------------------
    def get_dirty_log(self, bitmap_addr):
        """KVM_GET_DIRTY_LOG of every data memslot into the one bitmap of the
        data region at `bitmap_addr` (slots start at whole 64-bit words)."""
        for slot in self.data_slots:
            self.vm.get_dirty_log(slot.id, bitmap_addr + slot.first_page // 8)

    def clear_dirty_log(self, bitmap_addr):
        """KVM_CLEAR_DIRTY_LOG of the data region's pages set in the bitmap,
        slot by slot."""
        for slot in self.data_slots:
            self.vm.clear_dirty_log(slot.id, 0, slot.pages, bitmap_addr + slot.first_page // 8)

    def _set_data_slots(self, flags):
        for slot in self.data_slots:
            self.vm.set_user_memory_region(slot.id, slot.gpa, slot.pages * guest.PAGE_SIZE,
                                           self.data.addr + slot.first_page * guest.PAGE_SIZE, flags)
        self.data_flags = flags

    def set_dirty_logging(self, enabled, owner, recreate=False):
        """Ask for KVM_MEM_LOG_DIRTY_PAGES on the data memslots on behalf of
        `owner` (a tracker, a migration, the dirty limit), or give it up:
        the flag stays on while anyone holds it, as QEMU's global dirty
        log is on while any of its users (migration, dirty rate, dirty
        limit) wants it.  When the last owner gives it up with `recreate`,
        the data memslots are deleted and added again instead of having
        the flag cleared (dirtyrate/log_stop.py says why)."""
        if enabled:
            self._logging_owners.add(owner)
        else:
            self._logging_owners.discard(owner)
        flags = uapi.KVM_MEM_LOG_DIRTY_PAGES if self._logging_owners else 0
        if flags == self.data_flags:
            return
        if recreate and not flags:
            self._recreate_data_slots()
        else:
            self._set_data_slots(flags)

    def _recreate_data_slots(self):
        """Delete the data memslots and add them again without dirty
        logging: KVM zaps every SPTE that maps them (kvm_arch_flush_shadow_memslot),
        so no page stays write-protected.  The vCPUs stay out of the guest
        meanwhile, since a guest access to a deleted slot would exit to us
        as MMIO; the dirty rings are emptied first, as their entries name
        the slots (a reset after the re-add would protect pages again)."""
        with self.vcpus_stopped():
            if self.ring is not None:
                self.ring.harvest()
            for slot in self.data_slots:
                self.vm.set_user_memory_region(slot.id, slot.gpa, 0,
                                               self.data.addr + slot.first_page * guest.PAGE_SIZE)
            self._set_data_slots(0)

    def data_words(self):
        """The data slot as a uint64 array (a view: valid until close)."""
        words = self.data.array(np.ctypeslib.ctypes.c_uint64, self.config.mem // 8)
        return np.ctypeslib.as_array(words)

    def data_pages(self):
        """The data slot as an [npages, 4096] uint8 array (a view: valid until close)."""
        raw = self.data.array(np.ctypeslib.ctypes.c_uint8, self.config.mem)
        return np.ctypeslib.as_array(raw).reshape(self.slot_pages, guest.PAGE_SIZE)

    def page_hashes(self):
        """XXH64 (seed 1) of every data-slot page, as page-sampling hashes them."""
        return hash_pages(self.data.addr, np.arange(self.slot_pages, dtype=np.uint64))

    def page_tags(self):
        """The tag (first 8 bytes) of every data-slot page, as a copy."""
        return self.data_words()[:: guest.PAGE_SIZE // 8].copy()
