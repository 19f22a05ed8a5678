import json

import pytest

from kvmharness.microvm.writer import CATCH_UP_SECONDS

pytestmark = pytest.mark.kvm


def test_probe_json_reports_host_and_calibrations(cli):
    result = cli("probe", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["host-kind"] in ("vmx", "svm", "nested")
    assert report["api-version"] == 12
    caps = report["capabilities"]
    for name in ("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", "KVM_CAP_DIRTY_LOG_RING", "KVM_CAP_MAX_VCPUS"):
        assert name in caps
    assert report["dirty-ring-max-entries"] == max(
        caps["KVM_CAP_DIRTY_LOG_RING_ACQ_REL"], caps["KVM_CAP_DIRTY_LOG_RING"]) // 16
    assert report["tsc-khz"] > 100_000
    cal = report["calibration"]
    # native, not emulated: ~1x the same loop as a host process (emulated: ~0.0005x)
    assert cal["guest-to-host-loop"] > 0.25
    assert cal["guest-to-host-loop"] == pytest.approx(
        cal["loop-writes-per-second"] / cal["host-loop-writes-per-second"], rel=1e-3)
    assert cal["first-write-under-dirty-logging-us"] > 0
    # one 500 ms dirty-bitmap window on 1 GiB, followed until the guest is back: recreate-slot, then QEMU's
    after = cal["after-window"]
    assert report["mmu"] in ("ept", "npt", "shadow")
    if after["skipped"] is None:
        stops = [c["log-stop"] for c in after["log-stops"]]
        assert stops in (["recreate-slot", "clear-flag"], ["recreate-slot"])
        assert len(stops) == 2 or after["log-stops"][0]["recovery-seconds"] is None
        for c in after["log-stops"]:
            assert 0 < c["window-ratio"] and c["before-wps"] > 0
    # every QEMU found, each with what its own --version says and whether it has the seed's windows
    from kvmharness.qemu.launch import find_qemus, qemu_version

    listed = {q["binary"]: q for q in report["qemu"]}
    assert set(listed) == {q.binary for q in find_qemus()}
    for binary, q in listed.items():
        version = qemu_version(binary)
        assert q["version"] == ".".join(map(str, version)) and q["millisecond-windows"] == (version >= (8, 2))


@pytest.mark.qemu
def test_probe_lists_each_kind_of_qemu_the_set_up_brings(qemu_target, cli):
    result = cli("probe", "--json")
    assert result.returncode == 0, result.stderr
    assert qemu_target.to_json() in json.loads(result.stdout)["qemu"]


def test_run_json_has_total_and_per_vcpu_rates(cli):
    result = cli("run", "--mem", "128MiB", "--wps", "500k", "--vcpus", "2", "--duration", "1s", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [v["id"] for v in out["vcpu"]] == [0, 1]
    for v in out["vcpu"]:
        # Two spinning vCPUs on a two-core host leave no core for the host's
        # own work; what a stall takes from the writer's schedule is given up,
        # not caught up, and reported.  The rest of the schedule is exact.
        owed = 500_000 * (out["seconds"] - v["schedule-dropped-seconds"])
        assert abs(v["writes"] / owed - 1) < 0.02  # see test_writer.PACING_TOLERANCE
        assert v["writes"] <= 500_000 * (out["seconds"] + CATCH_UP_SECONDS) + 1
    assert out["writes-per-second"] == pytest.approx(sum(v["writes-per-second"] for v in out["vcpu"]), rel=1e-3)
    assert out["warmup-seconds"] > 0
