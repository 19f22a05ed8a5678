"""Test policy: tests that need /dev/kvm or root are marked `kvm` / `root`.
On a machine without them they skip with the reason; under CI=true or with
--require-kvm any skip of such a test is a failure, because our CI has KVM
and must prove it."""

import contextlib
import os
import subprocess
import sys

import pytest

KVM_DEVICE = "/dev/kvm"


def pytest_addoption(parser):
    parser.addoption("--require-kvm", action="store_true",
                     help="fail, instead of skipping, tests that need /dev/kvm or root")


def _required(config):
    return config.getoption("--require-kvm") or os.environ.get("CI", "").lower() == "true"


def _kvm_missing():
    if not os.path.exists(KVM_DEVICE):
        return f"{KVM_DEVICE} does not exist (is KVM loaded and enabled?)"
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return f"no read/write access to {KVM_DEVICE} (run as root or join the kvm group)"
    return None


def pytest_runtest_setup(item):
    reasons = []
    if item.get_closest_marker("kvm"):
        reasons.append(_kvm_missing())
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
    from kvmharness.machine import MicroVm, VmConfig

    with MicroVm(VmConfig(**config)) as vm:
        vm.start()
        vm.wait_ready()
        yield vm


KVMHARNESS = os.path.join(os.path.dirname(sys.executable), "kvmharness")


def run_cli(*args, timeout=120, env=None, **kw):
    """Run the installed `kvmharness` console script, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([KVMHARNESS, *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, **kw)


@pytest.fixture
def cli():
    return run_cli


def assert_paced(edges, wps, seconds):
    """The writer never writes faster than asked (guest/writer.S, "Rate"): of
    the writes a window's edges prove inside it, at most wps * (window +
    catch-up) + 1 per vCPU, and some (it kept writing).  `edges` as in a
    DirtyRateResult or query-dirty-rate's x-edges; `wps` one rate or one
    per vCPU."""
    from kvmharness.machine import CATCH_UP_SECONDS

    pairs = list(zip(edges["start"], edges["end"]))
    rates = wps if isinstance(wps, (list, tuple)) else [wps] * len(pairs)
    for k, (((_, start_after), (end_before, _)), rate) in enumerate(zip(pairs, rates)):
        inside = end_before - start_after - 1  # the cut lies in [before, after + 1]
        assert 0 < inside <= rate * (seconds + CATCH_UP_SECONDS) + 1, (k, inside, rate, seconds)
