"""kvmharness's pytest plugin (entry point pytest11): what our own tests use,
for anyone's tests of KVM dirty tracking.

* markers `kvm` (needs /dev/kvm), `root` (needs root) and `qemu` (needs
  qemu-system-x86_64): such a test skips, with the reason, on a machine
  without them; under CI=true or with --require-kvm the skip is a failure,
  because a CI that claims KVM must prove it (our set-up installs QEMU);
* `running_vm(**VmConfig fields)`: a MicroVm, started and warmed up;
* fixture `micro_vm`: a running MicroVm whose writer writes, configured by
  `@pytest.mark.micro_vm(mem=..., vcpus=..., dirty_ring_entries=..., wps=...,
  pattern=..., any VmConfig field)` or by indirect parametrization with a
  dict of the same; it skips (fails when required) without /dev/kvm;
* fixture `dirty_rate`: `dirty_rate(vm, mode="dirty-bitmap", ms=500)`
  measures one window as calc-dirty-rate would, fails the test if an exact
  mode's count disagrees with replay, and returns (DirtyRateResult,
  WindowCheck) (kvmharness.dirtyrate.verify);
* fixture `qemu_target`: each kind of QEMU in turn (whole-second windows,
  before 8.2; millisecond windows, 8.2+), a kvmharness.qemu.launch.Qemu to
  pass as QemuGuest(qemu=...) or its `.binary` as `--qemu`;
* `cli` fixture / `run_cli(*args)`: the installed `kvmharness` command, run
  as a user would; `default_sigint` to start one a test will signal;
* `replayed(vm, edges)`: what an exact tracker must have counted in a
  window, from replay of the guest's writes between the window's edges;
* `assert_paced(edges, wps, seconds)`: the writer kept writing and never
  faster than asked.
"""

import os
import signal
import subprocess
import sys

import pytest

KVM_DEVICE = "/dev/kvm"
KVMHARNESS = os.path.join(os.path.dirname(sys.executable), "kvmharness")


def pytest_addoption(parser):
    parser.addoption("--require-kvm", action="store_true",
                     help="fail, instead of skipping, tests that need /dev/kvm or root")


def pytest_configure(config):
    config.addinivalue_line("markers", "kvm: needs /dev/kvm (a skip is a failure under CI=true or --require-kvm)")
    config.addinivalue_line("markers", "root: needs root (a skip is a failure under CI=true or --require-kvm)")
    config.addinivalue_line("markers", "qemu: needs QEMU, qemu-system-x86_64 (a skip is a failure under CI=true "
                            "or --require-kvm)")
    config.addinivalue_line("markers", "micro_vm(**options): the micro_vm fixture's VM: mem, vcpus, "
                            "dirty_ring_entries, seed, ... (VmConfig), wps and pattern (the writer)")


def _required(config):
    return config.getoption("--require-kvm") or os.environ.get("CI", "").lower() == "true"


def kvm_missing(device=KVM_DEVICE):
    """Why KVM cannot be used here, or None."""
    if not os.path.exists(device):
        return f"{device} does not exist (is KVM loaded and enabled?)"
    if not os.access(device, os.R_OK | os.W_OK):
        return f"no read/write access to {device} (run as root or join the kvm group)"
    return None


def qemu_missing():
    """Why QEMU cannot be used here, or None."""
    from kvmharness.qemu.launch import find_qemus

    if find_qemus():
        return None
    return "QEMU is not installed (scripts/setup.sh installs Debian's qemu-system-x86 and bookworm-backports')"


# The two kinds of QEMU our users run, which a `qemu_target` test runs against in turn: one whose
# calc-dirty-rate takes whole seconds only (before 8.2; Debian 12's 7.2), and one with the seed's
# millisecond windows (8.2+; bookworm-backports' 10.0).  The newest found of each kind.
QEMU_KINDS = {
    "whole-seconds": (lambda q: not q.millisecond,
                      "no QEMU older than 8.2 (whole-second windows) found: Debian's qemu-system-x86 on "
                      "bookworm, which scripts/setup.sh installs as root"),
    "millisecond": (lambda q: q.millisecond,
                    "no QEMU 8.2+ (millisecond windows) found: scripts/setup.sh unpacks bookworm-backports' "
                    "into .venv/qemu"),
}


def qemu_of_kind(kind):
    """The newest QEMU of `kind` (a QEMU_KINDS key) found here, or None."""
    from kvmharness.qemu.launch import find_qemus

    wanted, _ = QEMU_KINDS[kind]
    found = [q for q in find_qemus() if wanted(q)]
    return found[-1] if found else None


@pytest.fixture(params=tuple(QEMU_KINDS), ids=lambda kind: f"qemu-{kind}")
def qemu_target(request):
    """A QEMU (kvmharness.qemu.launch.Qemu) of each kind in turn; a kind not
    found here skips, and fails under CI=true / --require-kvm."""
    found = qemu_of_kind(request.param)
    if found is None:
        why = QEMU_KINDS[request.param][1]
        (pytest.fail if _required(request.config) else pytest.skip)(f"qemu_target: {why}")
    return found


def pytest_runtest_setup(item):
    reasons = []
    if item.get_closest_marker("qemu"):
        reasons.append(qemu_missing())
    if item.get_closest_marker("kvm"):
        reasons.append(kvm_missing())
    if item.get_closest_marker("root") and os.geteuid() != 0:
        reasons.append("needs root")
    reasons = [r for r in reasons if r]
    if reasons:
        if _required(item.config):
            pytest.fail("required under CI=true / --require-kvm: " + "; ".join(reasons), pytrace=False)
        pytest.skip("; ".join(reasons))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A KVM or root test that skips for any reason fails when required."""
    outcome = yield
    report = outcome.get_result()
    needs = any(item.get_closest_marker(m) for m in ("kvm", "root", "qemu"))
    if report.skipped and needs and _required(item.config):
        report.outcome = "failed"
        report.longrepr = f"skipped, but KVM/root tests may not skip here: {report.longrepr}"


def running_vm(**config):
    """A MicroVm built from VmConfig(**config), started and warmed up (a
    context manager: kvmharness.microvm.running.running_vm)."""
    from kvmharness.microvm.running import running_vm as running

    return running(**config)


MICRO_VM_DEFAULTS = {"mem": 256 << 20, "wps": 1_000_000}


@pytest.fixture
def micro_vm(request):
    """A running MicroVm with its writer writing (see the module docstring);
    the writer is held and the VM torn down after the test."""
    from kvmharness.microvm.machine import VmConfig

    why = kvm_missing()
    if why:
        (pytest.fail if _required(request.config) else pytest.skip)(f"micro_vm: {why}")
    options = dict(MICRO_VM_DEFAULTS)
    marker = request.node.get_closest_marker("micro_vm")
    options.update(marker.kwargs if marker else {})
    options.update(getattr(request, "param", None) or {})
    wps, pattern = options.pop("wps"), options.pop("pattern", None)
    unknown = set(options) - set(VmConfig.__dataclass_fields__)
    if unknown:
        pytest.fail(f"micro_vm: unknown option(s) {', '.join(sorted(unknown))}", pytrace=False)
    with running_vm(**options) as vm:
        vm.run_writer(wps, pattern)
        yield vm
        vm.hold()


@pytest.fixture
def dirty_rate():
    """measure(vm, mode="dirty-bitmap", ms=500, **DirtyRateMonitor options)
    -> (DirtyRateResult, WindowCheck): one window, judged against replay."""
    from kvmharness.dirtyrate import DirtyRateMonitor
    from kvmharness.dirtyrate.verify import check_window

    def measure(vm, mode="dirty-bitmap", ms=500, **options):
        result = DirtyRateMonitor(vm, **options).measure(ms, "millisecond", mode=mode)
        verdict = check_window(vm, result)
        if not verdict.ok:
            pytest.fail(verdict.describe(), pytrace=False)
        return result, verdict

    return measure


def default_sigint():
    """preexec_fn for a command a test signals: SIGINT at its default, as a
    shell starts a foreground command.  A suite started in the background
    (`cmd &`, nohup, some CI agents) inherits SIGINT ignored, and an ignored
    SIGINT stays ignored, as it should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args, timeout=120, env=None, **kw):
    """Run the installed `kvmharness` console script, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([KVMHARNESS, *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, **kw)


@pytest.fixture
def cli():
    return run_cli


def replayed(vm, edges):
    """{"narrow" | "truth" | "wide": (total, per vCPU)} unique pages replayed
    between a window's edges; an exact tracker lies in [narrow, wide]
    (kvmharness.microvm.truth.replay_window)."""
    from kvmharness.microvm.truth import replay_window

    return replay_window(vm, edges)


def assert_paced(edges, wps, seconds):
    """The writer never writes faster than asked, and kept writing
    (kvmharness.microvm.truth.pacing_problem).  `wps` one rate or one per vCPU."""
    from kvmharness.microvm.truth import pacing_problem

    problem = pacing_problem(edges, wps, seconds)
    assert problem is None, problem
