"""kvmharness's pytest plugin (entry point pytest11): what our own tests use,
for anyone's tests of KVM dirty tracking.

* markers `kvm` (needs /dev/kvm) and `root` (needs root): such a test skips,
  with the reason, on a machine without them; under CI=true or with
  --require-kvm the skip is a failure, because a CI that claims KVM must
  prove it;
* `running_vm(**VmConfig fields)`: a MicroVm, started and warmed up;
* `cli` fixture / `run_cli(*args)`: the installed `kvmharness` command, run
  as a user would; `default_sigint` to start one a test will signal;
* `replayed(vm, edges)`: what an exact tracker must have counted in a
  window, from replay of the guest's writes between the window's edges;
* `assert_paced(edges, wps, seconds)`: the writer kept writing and never
  faster than asked.
"""

import contextlib
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


def _required(config):
    return config.getoption("--require-kvm") or os.environ.get("CI", "").lower() == "true"


def kvm_missing(device=KVM_DEVICE):
    """Why KVM cannot be used here, or None."""
    if not os.path.exists(device):
        return f"{device} does not exist (is KVM loaded and enabled?)"
    if not os.access(device, os.R_OK | os.W_OK):
        return f"no read/write access to {device} (run as root or join the kvm group)"
    return None


def pytest_runtest_setup(item):
    reasons = []
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
    needs = item.get_closest_marker("kvm") or item.get_closest_marker("root")
    if report.skipped and needs and _required(item.config):
        report.outcome = "failed"
        report.longrepr = f"skipped, but KVM/root tests may not skip here: {report.longrepr}"


@contextlib.contextmanager
def running_vm(**config):
    """A MicroVm built from VmConfig(**config), started and warmed up."""
    from kvmharness.microvm.machine import MicroVm, VmConfig

    with MicroVm(VmConfig(**config)) as vm:
        vm.start()
        vm.wait_ready()
        yield vm


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
    between a window's edges (a DirtyRateResult's `edges`, or query-dirty-rate's
    x-edges).  Each edge records the counters (before, after) it; the guest
    dirties a page one instruction before it counts the write, so the cut lies
    in [before, after + 1] (kvmharness/dirtyrate/window.py): narrow replays
    from the latest start to the earliest end, wide the other way round, and
    truth between the middles.  An exact tracker lies in [narrow, wide]."""
    from kvmharness.microvm import replay

    pairs = list(zip(edges["start"], edges["end"]))
    ranges = {
        "narrow": [(s[1] + 1, e[0]) for s, e in pairs],
        "truth": [((s[0] + s[1] + 1) // 2, (e[0] + e[1] + 1) // 2) for s, e in pairs],
        "wide": [(s[0], e[1] + 1) for s, e in pairs],
    }
    out = {}
    for name, rs in ranges.items():
        per = [replay.unique_pages(vm.logs[k], vm.slot_pages, lo, hi) for k, (lo, hi) in enumerate(rs)]
        # the union: vCPUs that share a region write some pages both
        total = replay.unique_pages([(vm.logs[k], lo, hi) for k, (lo, hi) in enumerate(rs)], vm.slot_pages)
        out[name] = (total, per)
    return out


def assert_paced(edges, wps, seconds):
    """The writer never writes faster than asked (guest/writer.S, "Rate"): of
    the writes a window's edges prove inside it, at most wps * (window +
    catch-up) + 1 per vCPU, and some (it kept writing).  `wps` one rate or
    one per vCPU."""
    from kvmharness.microvm.writer import CATCH_UP_SECONDS

    pairs = list(zip(edges["start"], edges["end"]))
    rates = wps if isinstance(wps, (list, tuple)) else [wps] * len(pairs)
    for k, (((_, start_after), (end_before, _)), rate) in enumerate(zip(pairs, rates)):
        inside = end_before - start_after - 1  # the cut lies in [before, after + 1]
        assert 0 < inside <= rate * (seconds + CATCH_UP_SECONDS) + 1, (k, inside, rate, seconds)
