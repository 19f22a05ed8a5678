"""One host thread per vCPU: it sits in KVM_RUN and answers the guest's exits.

The guest signals the host only through its MMIO doorbell; everything else
(counters, commands) goes through shared memory.  The thread:
  * on EVENT_HELD parks, without burning a host CPU, until the host changes
    the vCPU's control block (gen != seen_gen) or stops the VM;
  * on EVENT_EXITED ends;
  * on Interrupted (a kick) runs what the host asked for and re-enters;
  * on DirtyRingFull calls the dirty ring's reaper hook (which may sleep:
    the dirty limit), then re-enters;
  * owes sleep when CPU throttling asks (request_sleep): pays it outside the
    guest, serving requests and a stop meanwhile, then re-enters.
  * on anything else records a GuestError with the registers and ends.
"""

import signal
import threading
import time

from .._native import lib
from ..errors import GuestError, HarnessError
from ..kvm import exits

KICK_SIGNAL = signal.SIGRTMIN + 2
_kick_handler_installed = False
_install_lock = threading.Lock()


def install_kick_handler():
    """A process-wide C no-op handler for KICK_SIGNAL, without SA_RESTART, so
    that the signal interrupts KVM_RUN (EINTR) in whichever thread gets it."""
    global _kick_handler_installed
    with _install_lock:
        if not _kick_handler_installed:
            if lib.kvmh_install_kick_handler(KICK_SIGNAL) != 0:
                raise HarnessError("sigaction for the vCPU kick signal failed")
            _kick_handler_installed = True


class VcpuThread(threading.Thread):
    def __init__(self, vcpu, control, cond, doorbell_gpa, on_ring_full=None):
        super().__init__(name=f"vcpu{vcpu.id}", daemon=True)
        self.vcpu = vcpu
        self.control = control
        self.cond = cond
        self.doorbell_gpa = doorbell_gpa
        self.on_ring_full = on_ring_full
        self.stopping = False
        self.fault = None
        self.exited = False
        self._requests = []
        self._sleep_owed = 0.0
        self.throttled_seconds = 0.0  # slept outside the guest for CPU throttling or the dirty limit
        self.exits = 0  # times KVM_RUN came back to this thread: a kick, a doorbell, a ring-full, ...

    def run(self):
        try:
            self._loop()
        except BaseException as e:  # reported to the main thread via check()
            self.fault = e
        finally:
            with self.cond:
                self.exited = True
                self.cond.notify_all()

    def _loop(self):
        while not self.stopping:
            exit = self.vcpu.run()
            self.exits += 1
            if isinstance(exit, exits.Interrupted):
                self.vcpu.immediate_exit = False
                self._serve_requests()
                if self._sleep_owed:
                    self.throttle_sleep(self._sleep_owed)
                    self._sleep_owed = 0.0
            elif isinstance(exit, exits.MmioWrite) and exit.addr == self.doorbell_gpa:
                if exit.value == lib.KVMH_EVENT_EXITED:
                    return
                if exit.value != lib.KVMH_EVENT_HELD:
                    raise GuestError(self.vcpu.id, exit, self.vcpu.get_regs())
                self._park()
            elif isinstance(exit, exits.DirtyRingFull) and self.on_ring_full is not None:
                self.on_ring_full(self.vcpu)
            else:
                raise GuestError(self.vcpu.id, exit, self.vcpu.get_regs())

    def _park(self):
        with self.cond:
            while not self.stopping and self.control.gen == self.control.seen_gen:
                self._serve_requests()
                self.cond.wait(0.5)

    def _serve_requests(self):
        while self._requests:
            fn, done = self._requests.pop(0)
            try:
                fn(self.vcpu)
            finally:
                done.set()

    def throttle_sleep(self, seconds):
        """Stay out of the guest for `seconds` on this thread (the vCPU is
        throttled), still serving requests at once and stopping at once:
        a throttled vCPU must not delay a measurement's edge or a
        migration's switch-over by its sleep."""
        t0 = time.monotonic()
        deadline = t0 + seconds
        while not self.stopping:
            self._serve_requests()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self.cond:
                if not self._requests and not self.stopping:
                    self.cond.wait(left)
        self.throttled_seconds += time.monotonic() - t0

    def request_sleep(self, seconds):
        """Have the vCPU leave the guest and sleep `seconds` (CPU throttling:
        QEMU queues such a sleep on every vCPU each timeslice, unless the
        last one is still pending, and so do we)."""
        if not self._sleep_owed:
            self._sleep_owed = seconds
            self.kick()

    def request_outside_guest(self, fn):
        """Have fn(vcpu) run on this thread while the vCPU is out of KVM_RUN;
        returns an Event set once it has run.  Used where the guest must not
        be running, e.g. to flush a vCPU's dirty state before a harvest."""
        done = threading.Event()
        with self.cond:
            self._requests.append((fn, done))
            self.cond.notify_all()
        self.kick()
        return done

    def wait_request(self, done, timeout=5.0):
        if not done.wait(timeout) and not self.exited:
            raise HarnessError(f"vCPU {self.vcpu.id} did not leave the guest")

    def kick(self):
        """Make KVM_RUN return now (signal) or at its next entry (immediate_exit)."""
        self.vcpu.immediate_exit = True
        if self.is_alive() and self.ident is not None:
            try:
                signal.pthread_kill(self.ident, KICK_SIGNAL)
            except ProcessLookupError:
                pass

    def stop(self, timeout=5.0):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.kick()
        self.join(timeout)
        return not self.is_alive()
