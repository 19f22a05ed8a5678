"""Every user mistake: its message, a non-zero exit, never a traceback."""

import ctypes
import os
import stat

import pytest


def _fails(result, status, *fragments):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.mark.parametrize("args,fragment", [
    (["run", "--mem", "lots"], "invalid size 'lots'"),
    (["run", "--mem", "1.5"], "invalid size '1.5'"),
    (["run", "--duration", "soon"], "invalid duration 'soon'"),
    (["run", "--wps", "fast"], "invalid rate 'fast'"),
    (["run", "--vcpus", "0"], "must be at least 1"),
    (["run", "--pattern", "zigzag"], "invalid pattern 'zigzag'"),
    (["run", "--pattern", "hotcold:0.1:2"], "the hot access fraction P of hotcold:H:P must lie in [0, 1]"),
    (["run", "--write-percent", "-1"], "invalid write percentage '-1'"),
    (["run", "--burst", "0/1s"], "each burst phase must last at least 1ms"),
    (["run", "--duration", "0s"], "the duration must be more than 0"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_malformed_arguments(cli, args, fragment):
    _fails(cli(*args), 2, fragment)


def test_cli_mode_names_are_the_mode_table():
    """commands/args.py spells the modes out to keep start-up light; they must be the table's."""
    from kvmharness.commands.args import MODE_NAMES
    from kvmharness.dirtyrate import modes

    assert MODE_NAMES == modes.NAMES


def test_missing_device(cli):
    result = cli("run", "--mem", "64MiB", env={"KVMHARNESS_DEVICE": "/nonexistent/kvm"})
    _fails(result, 1, "/nonexistent/kvm does not exist. Is KVM loaded and enabled?")


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _drop_dac_capabilities():
    """In the child before exec: root without the capabilities that bypass
    file permissions, so permission bits apply to it as to any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.kvm
@pytest.mark.root
def test_permission_denied(cli, tmp_path):
    """The real KVM device, through a node of mode 0000, opened by a process
    that cannot override permissions: EACCES, as for a user outside the kvm
    group."""
    node = tmp_path / "kvm"
    st = os.stat("/dev/kvm")
    os.mknod(node, 0o000 | stat.S_IFCHR, st.st_rdev)
    os.chmod(node, 0)
    result = cli("run", "--mem", "64MiB", env={"KVMHARNESS_DEVICE": str(node)},
                 preexec_fn=_drop_dac_capabilities)
    _fails(result, 1, f"permission denied opening {node}", "run as root, or add your user")


@pytest.mark.kvm
def test_more_memory_than_the_host_has(cli):
    _fails(cli("run", "--mem", "400GiB"), 1, "needs 400.0 GiB but the host has only", "available")


def test_slot_too_small_or_unaligned(cli):
    _fails(cli("run", "--mem", "1MiB"), 2, "at least 64 MiB")
    _fails(cli("run", "--mem", "67108865"), 2, "multiple of 4 KiB")


@pytest.mark.kvm
def test_more_vcpus_than_kvm_allows(cli):
    _fails(cli("run", "--mem", "64MiB", "--vcpus", "100000"), 2,
           "100000 vCPUs asked, but this host's KVM allows at most")


@pytest.mark.kvm
def test_more_vcpus_than_we_support(cli):
    _fails(cli("run", "--mem", "64MiB", "--vcpus", "65"), 2, "kvmharness supports at most 64")


@pytest.mark.parametrize("args,status,fragment", [
    (["migrate-listen", "--port", "99999"], 2, "invalid port '99999'"),
    (["migrate", "--to", "nowhere"], 2, "invalid TCP address 'nowhere'"),
    (["migrate", "--to", "127.0.0.1:1", "--mem", "64MiB"], 1, "cannot connect to 127.0.0.1:1"),
    (["predict", "--mem", "64MiB", "--downtime", "1h", "--bandwidth", "1Gbit/s"], 2, "invalid duration '1h'"),
    (["bench", "--sizes", "1GiB,lots"], 2, "invalid size 'lots'"),
    (["calc-dirty-rate", "--calc-time", "10", "--calc-time-unit", "millisecond"], 2,
     "Calculation time is out of range [50ms, 60000ms]."),
    (["calc-dirty-rate", "--calc-time", "1", "--sample-pages", "64"], 2, "sample-pages is out of range[128, 16384]."),
])
def test_bad_arguments_of_the_other_commands(cli, args, status, fragment):
    _fails(cli(*args), status, fragment)
