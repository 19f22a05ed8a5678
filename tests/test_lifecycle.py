"""Creation, teardown and faults on real /dev/kvm."""

import os
import signal
import subprocess
import time

import pytest

from kvmharness.pytest_plugin import KVMHARNESS, default_sigint, running_vm
from kvmharness.errors import GuestError
from kvmharness.kvm import exits
from kvmharness.microvm.machine import MicroVm, VmConfig

pytestmark = pytest.mark.kvm
MiB = 1 << 20


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _mappings():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def test_100_cycles_leak_no_fds_or_mappings():
    def cycle():
        with MicroVm(VmConfig(mem=64 * MiB, vcpus=2, warm=False, prefault=False)) as vm:
            vm.start()
            vm.wait_ready()
            vm.run_writer(0)
            vm.hold()

    cycle()  # first use loads libraries, installs the kick handler
    fds, maps = _fds(), _mappings()
    for _ in range(100):
        cycle()
    assert _fds() == fds
    assert _mappings() == maps


def test_guest_triple_fault_is_reported_with_registers():
    """Point the writer at an address the guest page tables do not map: the
    page fault has no IDT to go to, so the vCPU triple-faults."""
    with MicroVm(VmConfig(mem=64 * MiB, warm=False, prefault=False)) as vm:
        vm.writer.controls[0].base = 0x4000_0000  # 1 GiB: unmapped
        vm.start()
        vm.wait_ready()
        with pytest.raises(GuestError) as info:
            vm.run_writer(0)  # the guest takes the command up, then faults
            vm.hold()
        err = info.value
        assert isinstance(err.exit, exits.Shutdown)
        assert "KVM_EXIT_SHUTDOWN" in str(err) and "RIP=" in str(err)
        assert 0x4000 <= err.regs.rip < 0x8000  # inside the guest code


def _start_run(*extra):
    return subprocess.Popen(
        [KVMHARNESS, "run", "--mem", "256MiB", "--wps", "1M",
         "--duration", "60s", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )


@pytest.mark.parametrize("signo,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_run_tears_down(signo, status):
    proc = _start_run()
    try:
        time.sleep(3.0)  # past VM creation and warm-up: the writer is running
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signo)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert "Traceback" not in err


@pytest.mark.kvm
def test_stopped_vcpus_stay_out_until_the_block_ends():
    """vcpus_stopped's timeout bounds how long the vCPUs take to come out,
    not how long they stay out: a migration's final copy or a ring edge
    relies on the guest not running for the whole block, however long."""
    with running_vm(mem=64 * MiB, seed=71) as vm:
        vm.run_writer(1_000_000)
        with vm.vcpus_stopped(timeout=0.2):
            frozen = vm.counters()
            time.sleep(0.6)
            assert vm.counters() == frozen
        time.sleep(0.05)
        assert vm.counter_total() > sum(frozen)
