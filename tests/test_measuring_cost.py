"""What a measurement costs the guest (dirtyrate/cost.py), and how it stops
dirty logging (dirtyrate/log_stop.py), on real /dev/kvm.

Nothing here asserts a host's speed: on a host with EPT and PML a window
may cost the guest nothing after it.  What holds everywhere is the
accounting: the writes lost by the host's readings (the rate before times
the time, less what the guest wrote) equal what the paced writer says it
gave up, and a VM whose memslots were re-created for the log stop is still
measured exactly and still holds what the guest wrote."""

import json
import time

import pytest

from kvmharness.dirtyrate import DirtyRateMonitor, log_stop
from kvmharness.dirtyrate.cost import Reading, RecoveryWatch, at, measure_cost, recovery
from kvmharness.microvm.truth import tag_mismatches
from kvmharness.microvm.writer import CATCH_UP_SECONDS, SNAPSHOT_SLOP
from kvmharness.pytest_plugin import replayed, running_vm
from kvmharness.qmp.hmp import format_dirty_rate_info
from kvmharness.qmp.qapi import dirty_rate_info
from qmp_helpers import RawClient, serving

MiB = 1 << 20
WPS = 1_000_000
CLOCK_DRIFT = 1e-3  # the writer paces by the TSC, readings are CLOCK_MONOTONIC (NTP slews it)


def _readings(rates, step=0.01, t0=0.0):
    """Readings every `step` seconds of a guest writing at rates[i] in interval i."""
    out, writes = [Reading(t0, 0, 0.0)], 0
    for i, r in enumerate(rates):
        writes += r * step
        out.append(Reading(t0 + (i + 1) * step, round(writes), 0.0))
    return out


def test_recovery_is_the_first_reading_whose_hold_is_back_within_tolerance():
    slow, back = [100_000] * 150, [1_000_000] * 100
    readings = _readings(slow + back)
    i = recovery(readings, 1_000_000, tolerance=0.1, hold=0.5)
    assert readings[i].time == pytest.approx(1.5 - 0.05, abs=0.011)  # 0.05 s of slow still averages >= 90 %
    assert recovery(readings, 1_000_000, tolerance=0.1, hold=0.5, since=1.6) == i + 15


def test_a_short_dip_does_not_postpone_recovery_and_a_guest_never_back_is_none():
    readings = _readings([1_000_000] * 30 + [0] * 2 + [1_000_000] * 60)  # a 20 ms preemption
    assert recovery(readings, 1_000_000, tolerance=0.1, hold=0.5) == 0
    assert recovery(_readings([500_000] * 300), 1_000_000) is None
    assert recovery(_readings([1_000_000] * 30), 1_000_000, hold=0.5) is None  # its hold not over yet


def test_the_watch_decides_as_readings_come_what_recovery_decides_at_once():
    rates = [50_000] * 80 + [400_000] * 40 + [1_000_000] * 20 + [700_000] * 5 + [1_000_000] * 90
    readings = _readings(rates, t0=-0.3)
    watch = RecoveryWatch(0.9 * 1_000_000, 0.5)
    seen = [k for k in range(1, len(readings) + 1) if watch(readings[:k]) is not None]
    assert watch(readings) == recovery(readings, 1_000_000)
    assert readings[seen[0] - 1].time - readings[watch(readings)].time >= 0.5  # decided once its hold was over


def test_log_stop_names():
    assert log_stop.resolve(None) == log_stop.CLEAR_FLAG == log_stop.QEMU
    assert log_stop.resolve("recreate-slot") == "recreate-slot"
    with pytest.raises(Exception, match="x-log-stop"):
        log_stop.resolve("zap")


def _assert_lost_is_the_writers_own_account(cost):
    """Writes lost by the readings (rate before x time - done) against the
    paced writer's account (asked x schedule it gave up).  The two differ by
    (before - asked) x span, by the writer's backlog at each end (up to its
    catch-up), by the readings' slop and by the clocks' drift; and a writer
    writes a stall off only when it runs again (test_writer.py): a stall
    under way at the request began after the last reading the guest wrote
    after, and one under way at recovery is written off by the first reading
    after which it wrote again."""
    readings = cost.readings
    q = readings.index(at(readings, cost.request_time))
    r = readings.index(at(readings, cost.recovery_seconds))
    p = max(k for k in range(q) if readings[k + 1].writes > readings[k].writes)
    s = next(k for k in range(r + 1, len(readings)) if readings[k].writes > readings[r].writes)
    span = readings[r].time - readings[q].time
    gave_up_least = readings[r].dropped - readings[q].dropped - (readings[q].time - readings[p].time)
    gave_up_most = readings[s].dropped - readings[q].dropped
    shift = (cost.before_wps - cost.asked_wps) * span
    slack = cost.asked_wps * (2 * CATCH_UP_SECONDS + 2 * SNAPSHOT_SLOP + CLOCK_DRIFT * span) + 2
    print(f"{cost.mode} {cost.log_stop}: before {cost.before_wps:.0f}/s, window {cost.window_wps:.0f}/s, "
          f"back after {cost.recovery_seconds:.3f} s, lost {cost.writes_lost:.0f} writes, the writer's account "
          f"{cost.schedule_lost:.0f} (+ {shift:.0f} for its rate before)")
    assert cost.asked_wps * gave_up_least + shift - slack <= cost.writes_lost
    assert cost.writes_lost <= cost.asked_wps * gave_up_most + shift + slack


@pytest.mark.kvm
@pytest.mark.parametrize("stop", [log_stop.CLEAR_FLAG, log_stop.RECREATE_SLOT])
def test_cost_of_a_bitmap_window_is_the_writers_own_account(stop):
    with running_vm(mem=128 * MiB, seed=41) as vm:
        vm.run_writer(WPS)
        monitor = DirtyRateMonitor(vm)
        cost = measure_cost(vm, monitor, "dirty-bitmap", 200, stop)
        result = monitor.state().result
        vm.hold()
    assert cost.recovered and cost.log_stop == stop and result.log_stop == stop
    assert cost.asked_wps == WPS and cost.window_wps == result.guest_wps
    assert result.guest_wps == pytest.approx(result.guest_writes / (result.window_us / 1e6))
    assert all(a.time < b.time and a.writes <= b.writes for a, b in zip(cost.readings, cost.readings[1:]))
    assert cost.request_time < -cost.window_seconds <= 0 <= cost.recovery_seconds
    _assert_lost_is_the_writers_own_account(cost)


@pytest.mark.kvm
@pytest.mark.parametrize("ring,slots", [(0, 1), (4096, 1), (0, 4)], ids=["bitmap", "ring", "bitmap-4-memslots"])
def test_a_recreated_slot_is_measured_exactly_and_keeps_the_guests_memory(ring, slots):
    """Deleting and re-adding the data memslots for the log stop maps the
    same host memory again: the next windows count exactly what replay
    says, and every page holds what the guest last wrote there.  (The guest
    writes only: a page it merely reads is dirty to a window that maps it
    anew, log_stop.py.)"""
    mode = "dirty-ring" if ring else "dirty-bitmap"
    with running_vm(mem=128 * MiB, seed=43, dirty_ring_entries=ring, slots=slots) as vm:
        vm.run_writer(WPS)
        monitor = DirtyRateMonitor(vm)
        results = [monitor.measure(100, "millisecond", mode=mode, log_stop=log_stop.RECREATE_SLOT)
                   for _ in range(3)]
        vm.hold()
        mismatches = tag_mismatches(vm)
        brackets = [replayed(vm, r.edges) for r in results]
    for result, bracket in zip(results, brackets):
        assert result.log_stop == log_stop.RECREATE_SLOT
        assert bracket["narrow"][0] <= result.dirty_pages <= bracket["wide"][0]
    assert mismatches == (0, 0)


@pytest.mark.kvm
def test_page_sampling_protects_nothing_and_stops_no_log():
    with running_vm(mem=128 * MiB, seed=47) as vm:
        vm.run_writer(WPS)
        cost = measure_cost(vm, DirtyRateMonitor(vm), "page-sampling", 200)
        vm.hold()
    assert cost.log_stop is None and cost.recovered


@pytest.mark.kvm
def test_every_result_carries_the_guests_rate_against_the_rate_asked():
    """QMP's x-guest-rate, HMP's line after QEMU's, per vCPU the rate asked."""
    with running_vm(mem=128 * MiB, vcpus=2, seed=53) as vm:
        vm.run_writer(WPS)
        vm.set_writer(wps=0, vcpu=1)
        monitor = DirtyRateMonitor(vm)
        monitor.measure(100, "millisecond", mode="dirty-bitmap", log_stop="clear-flag")
        unlimited = dirty_rate_info(monitor.state(), "millisecond")
        vm.set_writer(wps=WPS, vcpu=1)
        monitor.measure(100, "millisecond", mode="page-sampling")
        paced = dirty_rate_info(monitor.state(), "millisecond")
        vm.hold()
    assert unlimited["x-guest-rate"]["asked-wps"] is None and unlimited["x-guest-rate"]["ratio"] is None
    assert [v["asked-wps"] for v in unlimited["x-vcpu"]] == [WPS, 0]
    assert unlimited["x-log-stop"] == "clear-flag" and "x-log-stop" not in paced
    rate = paced["x-guest-rate"]
    assert rate["asked-wps"] == 2 * WPS
    assert rate["wps"] == pytest.approx(paced["x-guest-writes"] / (paced["x-window-us"] / 1e6), rel=1e-3)
    assert rate["ratio"] == pytest.approx(rate["wps"] / rate["asked-wps"], abs=1e-4)
    lines = format_dirty_rate_info(paced).splitlines()
    assert lines.index(f"Guest rate in the window: {rate['wps']:.0f} writes/s of {2 * WPS} asked "
                       f"({rate['ratio']:.1%})") > lines.index(f"Mode: {paced['mode']}")


@pytest.mark.kvm
def test_calc_dirty_rate_json_carries_the_guests_rate(cli):
    out = cli("calc-dirty-rate", "--mem", "128MiB", "--wps", "1M", "--calc-time", "100", "--calc-time-unit",
              "millisecond", "--mode", "dirty-bitmap", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["x-guest-rate"]["asked-wps"] == WPS and info["x-guest-rate"]["wps"] > 0
    assert info["x-log-stop"] == log_stop.resolve(None)


def test_the_cli_spells_the_log_stops_of_the_table():
    from kvmharness.commands.calc import LOG_STOP_NAMES

    assert LOG_STOP_NAMES == log_stop.NAMES


@pytest.mark.kvm
def test_bench_measuring_cost_writes_its_table_and_plots(cli, tmp_path):
    out = cli("bench", "--measuring-cost", "--quick", "--sizes", "64MiB", "--out", str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("table.md", "results.json", "recovery.png", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    cells = {(c["mode"], c["log-stop"], c["calc-time-ms"]) for c in results["cells"]}
    assert cells == {(m, s, ms) for ms in (100, 500) for m, s in
                     (("page-sampling", None), ("dirty-bitmap", "clear-flag"), ("dirty-bitmap", "recreate-slot"),
                      ("dirty-ring", "clear-flag"), ("dirty-ring", "recreate-slot"))}
    for w in results["windows"]:
        assert w["asked-wps"] == 3_000_000 and w["before-wps"] > 0 and w["curve"]
    table = (tmp_path / "table.md").read_text()
    assert table.count("| 0.0625 GiB |") == 10


@pytest.mark.kvm
def test_qmp_takes_x_log_stop_and_says_which_ran(tmp_path):
    with running_vm(mem=128 * MiB, seed=59) as vm:
        vm.run_writer(WPS)
        with serving(vm, DirtyRateMonitor(vm), tmp_path / "qmp.sock") as server:
            client = RawClient(server.path)
            bad = client.cmd("calc-dirty-rate", **{"calc-time": 100, "calc-time-unit": "millisecond",
                                                   "mode": "dirty-bitmap", "x-log-stop": "zap"})
            assert bad["error"]["desc"] == "Parameter 'x-log-stop' does not accept value 'zap'"
            assert client.cmd("calc-dirty-rate", **{"calc-time": 100, "calc-time-unit": "millisecond",
                                                    "mode": "dirty-bitmap", "x-log-stop": "recreate-slot"}) == \
                {"return": {}}
            for _ in range(500):
                info = client.cmd("query-dirty-rate", **{"calc-time-unit": "millisecond"})["return"]
                if info["status"] == "measured":
                    break
                time.sleep(0.01)
            hmp = client.cmd("human-monitor-command", **{"command-line": "info dirty_rate"})["return"]
            client.close()
        vm.hold()
    assert info["x-log-stop"] == "recreate-slot" and info["x-guest-rate"]["asked-wps"] == WPS
    assert "Guest rate in the window: " in hmp
