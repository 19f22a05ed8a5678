"""`watch` and `exporter` (issue 26): VMs served over QMP by our own server
(in this process, so the guests' writes can be replayed), their readings
checked against replay and against `predict --qmp` run beside them, the
exporter scraped by real HTTP clients and parsed with prometheus-client's
own parser, a VM killed mid-watch, and signals."""

import collections
import contextlib
import json
import math
import random
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from qmp_helpers import serving
from kvmharness.pytest_plugin import KVMHARNESS, default_sigint, replayed, running_vm

MIB = 1 << 20
PAGE = 4096


def _fleet(paths, links, mode, every=1.0, measure=None):
    """A Fleet (not started) and what it read: {address: [Reading, ...]}
    in full (its history keeps them without their windows)."""
    from kvmharness.watch.fleet import Fleet, measure_once

    seen = collections.defaultdict(list)
    fleet = Fleet([str(p) for p in paths], links, 0.3, mode, every, on_reading=lambda r: seen[r.address].append(r),
                  measure=measure or measure_once)
    return fleet, seen


def _wait(condition, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _assert_windows_replay(vm, reading):
    """Each window of a reading from our own server lies within what replay
    of the guest says it dirtied between the window's edges (x-edges),
    less QEMU's whole-MiB/s truncation; the number of windows checked."""
    checked = 0
    for (ms, pages), (edges, window_us) in zip(reading.windows, reading.replay, strict=True):
        r = replayed(vm, edges)
        narrow, wide = r["narrow"][0], r["wide"][0]
        # QEMU's dirty-rate is whole MiB/s over the window, read back over calc-time
        low = narrow * ms * 1000 / window_us - MIB / PAGE * ms / 1000 - 1
        assert low <= pages <= wide + 1, (reading.address, ms, pages, narrow, wide)
        checked += 1
    return checked


def _assert_windows_truth(guest, reading):
    """Each window of a reading from a QEMU lies within its truth as
    qemu-check defines it (issue "QEMU as a target"): the guest's writes
    replayed between our calc-dirty-rate and QEMU's "measured" (the
    counter read meanwhile).  QEMU counts N pages (+ its window's extra,
    docs/results/qemu10) over its window of w ms and reports
    floor(floor(N / 256) x 1000 / w) MiB/s: so rate x w is at most every
    page written within the brackets, and at least the fewest pages any
    placement of calc-time within them holds (qemu/check.fewest_pages: every
    placement, not window_truth's five, since the guest's pace is not
    steady under new dirty logging) less 256 pages and 256 pages a
    second."""
    from kvmharness.qemu.check import bracketed_pages, fewest_pages

    assert len(reading.answers) == len(reading.windows) and reading.answers
    for m in reading.answers:
        assert m.window_ms >= m.calc_ms, (m.calc_ms, m.window_ms)  # QEMU's dirty_stat_wait: never shorter
        counted = m.dirty_rate * MIB / PAGE * m.window_ms / 1000
        lowest, most = fewest_pages(guest, m), bracketed_pages(guest, m)
        assert lowest - 256 - 256 * m.window_ms / 1000 <= counted <= most, (reading.address, m.calc_ms, counted,
                                                                           lowest, most)
    return len(reading.answers)


@pytest.mark.kvm
@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.parametrize("qemu_target", ["millisecond"], indirect=True)
def test_watching_three_vms_for_30_s_reads_their_truth_and_predict_s_verdicts(tmp_path, qemu_target):
    """Two QEMU 10 VMs running our writer (1 k and 200 k writes/s) and one
    `kvmharness qmp` VM (50 k), watched for 30 s in dirty-bitmap mode:
    every window of every reading lies within its truth (replay of the
    guest: the QEMUs' through the counter read while QEMU measured, ours
    through its window's edges), and the verdicts equal predict --qmp's, run
    beside the watch.  The rates are far from any verdict's edge on either
    link: 1 k writes/s dirty 1.2 MB in the downtime, a third of what
    100 Mbit/s moves in it; 50 k writes/s and more dirty tens of MB/s on
    64 MiB under logging on any host we met, slowed or not by the window
    before (a page's first write faults at most ~25 us: 40 k pages/s); and
    64 MiB cross 10 Gbit/s in 0.05 s.  So a watch and a predict a few
    seconds apart agree."""
    from kvmharness.dirtyrate import DirtyRateMonitor
    from kvmharness.migration.model import Link
    from kvmharness.qemu.curve import predict_over_qmp
    from kvmharness.qemu.guest import QemuGuest
    from kvmharness.qmp.client import QmpClient
    from kvmharness.watch.fleet import measure_once

    links = [Link(100e6), Link(10e9)]
    with contextlib.ExitStack() as stack:
        guests = {}
        for name, seed, wps in (("slow", 71, 1_000), ("fast", 72, 200_000)):
            sock = str(tmp_path / f"{name}.sock")
            guest = stack.enter_context(QemuGuest(64 * MIB, seed=seed, qemu=qemu_target, extra_qmp=sock))
            guest.wait_ready()
            guest.run_writer(wps, "random")
            guests[sock] = guest
        ours = stack.enter_context(running_vm(mem=64 * MIB, seed=73))
        server = stack.enter_context(serving(ours, DirtyRateMonitor(ours), tmp_path / "ours"))
        ours.run_writer(50_000)
        counters = {sock: (lambda g=g: g.counters()[0]) for sock, g in guests.items()}

        def measure(address, *args, **options):  # the QEMU guests' counters are read while QEMU measures
            return measure_once(address, *args, counter=counters.get(address), **options)

        addresses = [*guests, str(server.path)]
        fleet, seen = _fleet(addresses, links, "dirty-bitmap", every=1.0, measure=measure)
        fleet.start()
        try:
            time.sleep(30)
            _wait(lambda: all(seen[a] for a in addresses))
        finally:
            fleet.stop(timeout=120)
        for address in addresses:  # a window the stopped watch had begun runs on to its end, as in QEMU
            with QmpClient(address, timeout=10) as client:
                client.wait_for("query-dirty-rate", lambda r: r["status"] != "measuring", 30)
        beside = {a: predict_over_qmp(a, links, [0.3], "dirty-bitmap", 30)[2] for a in addresses}
        checked = collections.Counter()
        for address in addresses:
            assert len(seen[address]) >= 2, (address, len(seen[address]))
            for reading in seen[address]:
                assert reading.up, (address, reading.error)
                checked[address] += (_assert_windows_truth(guests[address], reading) if address in guests
                                     else _assert_windows_replay(ours, reading))
            for link, v in zip(links, fleet.readings()[address].links, strict=True):
                assert v.converges == beside[address][(link, 0.3)].model.converges, (address, link)
    print(f"windows checked: {dict(checked)}")
    rates = [fleet.readings()[a].rate_pages for a in addresses]
    assert rates[0] < rates[2] and rates[0] < rates[1]  # 1 k writes/s dirties least
    verdicts = [[v.converges for v in fleet.readings()[a].links] for a in addresses]
    assert verdicts == [[True, True], [False, True], [False, True]], verdicts


@pytest.mark.kvm
def test_a_vm_someone_else_measures_is_refused_not_down_then_measured(tmp_path):
    """Someone else's calc-dirty-rate runs (5 s): the watch's is refused
    with QEMU's words, the VM shows REFUSED and stays up in the metrics
    (it answered), and once the other window is over it is measured."""
    from kvmharness.dirtyrate import DirtyRateMonitor
    from kvmharness.migration.model import Link
    from kvmharness.qmp.client import QmpClient
    from kvmharness.watch import render
    from kvmharness.watch.metrics import FleetCollector

    with running_vm(mem=64 * MIB, seed=69) as vm, serving(vm, DirtyRateMonitor(vm), tmp_path / "q") as s:
        vm.run_writer(10_000)
        path = str(s.path)
        with QmpClient(path, timeout=10) as other:
            other.execute("calc-dirty-rate", {"calc-time": 5, "mode": "page-sampling"})
            other.wait_for("query-dirty-rate", lambda r: r["status"] == "measuring", 10)
            fleet, seen = _fleet([path], [Link(1e9)], "page-sampling", every=1.0)
            fleet.start()
            try:
                _wait(lambda: seen[path])
                metrics = {(m.name, s.labels.get("result")): s.value for m in FleetCollector(fleet).collect()
                           for s in m.samples}
                _wait(lambda: any(r.up for r in seen[path]), 60)
            finally:
                fleet.stop(timeout=120)
    first = seen[path][0]
    assert not first.up and first.refused and "already being measured" in first.error, first
    assert render.line(first, None).split("] ", 1)[1].startswith("REFUSED: ")
    assert metrics[("kvmharness_vm_up", None)] == 1 and metrics[("kvmharness_vm_measurement_refused", None)] == 1
    assert metrics[("kvmharness_vm_measurements", "refused")] >= 1
    assert fleet.counts()[path]["refused"] >= 1 and fleet.counts()[path]["down"] == 0


def test_a_hundred_vms_are_measured_a_bounded_number_at_a_time_in_bounded_memory():
    """Pure logic (no VM: the measuring is a stand-in that takes 20 ms and
    returns a reading heavy with windows): 100 VMs, concurrency 8.  At most
    8 measure at once, and 8 do; one VM's measurements never overlap;
    every VM is measured; its history keeps at most HISTORY readings, and
    those without their windows; stopping ends every thread."""
    from kvmharness.migration.model import Link
    from kvmharness.watch.fleet import HISTORY, Fleet, Reading

    lock = threading.Lock()
    busy, peak, overlaps = set(), [0], []

    def measure(address, links, downtime, mode, max_iterations, opened=None):
        with lock:
            if address in busy:
                overlaps.append(address)
            busy.add(address)
            peak[0] = max(peak[0], len(busy))
        time.sleep(0.02)
        with lock:
            busy.discard(address)
        return Reading(address, time.time(), True, mode=mode, windows=tuple((ms, 1.0) for ms in range(1000)),
                       replay=((list(range(1000)), 1000),) * 5)

    def watching():
        return [t for t in threading.enumerate() if t.name.startswith("watch /run/vm") and t.is_alive()]

    addresses = [f"/run/vm{k}.qmp" for k in range(100)]
    fleet = Fleet(addresses, [Link(1e9)], 0.3, every=0.001, concurrency=8, measure=measure)
    fleet.start()
    try:
        _wait(lambda: all(c["up"] >= 3 for c in fleet.counts().values()), 60)
        assert len(watching()) == 100
    finally:
        fleet.stop(timeout=30)
    assert not watching()
    assert peak[0] == 8 and not overlaps
    for address in addresses:
        history = fleet.history(address)
        assert 3 <= len(history) <= HISTORY and all(r.windows == () and r.replay == () for r in history)
        assert len(fleet.readings()[address].windows) == 1000  # the latest stays whole


def test_a_fleet_stopped_before_all_its_threads_started_stops_cleanly():
    """Pure logic: a Ctrl-C can land while start() is still starting the
    VMs' threads (a fresh-clone run's exporter got one there, and stop()
    raised "cannot join thread before it is started" over the
    KeyboardInterrupt).  stop() joins only what was started."""
    from kvmharness.migration.model import Link
    from kvmharness.watch.fleet import Fleet, Reading

    def measure(address, links, downtime, mode, max_iterations, opened=None):
        time.sleep(0.01)
        return Reading(address, time.time(), True, mode=mode)

    fleet = Fleet(["/run/a.qmp", "/run/b.qmp"], [Link(1e9)], 0.3, every=0.001, measure=measure)
    fleet._threads[0].start()  # as if the signal came before the second thread's start
    fleet.stop(timeout=10)
    assert not fleet._threads[0].is_alive() and fleet._threads[1].ident is None


@contextlib.contextmanager
def _one_to_go_and_one_to_stay(tmp_path, seed, rate):
    """Two 64 MiB VMs served over QMP, writing 10 k and `rate` writes/s:
    (the first's server, to close with __exit__ mid-test, and both
    servers)."""
    from kvmharness.dirtyrate import DirtyRateMonitor

    with running_vm(mem=64 * MIB, seed=seed) as one, running_vm(mem=64 * MIB, seed=seed + 1) as two, \
            serving(two, DirtyRateMonitor(two), tmp_path / "two") as b:
        one.run_writer(10_000)
        two.run_writer(rate)
        gone = serving(one, DirtyRateMonitor(one), tmp_path / "one")
        a = gone.__enter__()
        try:
            yield gone, a, b
        finally:
            gone.__exit__(None, None, None)


@pytest.mark.kvm
def test_a_vm_that_goes_away_is_down_and_the_others_go_on(tmp_path):
    from kvmharness.migration.model import Link

    with _one_to_go_and_one_to_stay(tmp_path, 63, 10_000) as (gone, a, b):
        fleet = _fleet([a.path, b.path], [Link(1e9)], "page-sampling", every=0.3)[0].start()
        try:
            _wait(lambda: all(r is not None and r.up for r in fleet.readings().values()))
            gone.__exit__(None, None, None)  # its server goes; its VM would be next
            _wait(lambda: fleet.readings()[a.path] is not None and not fleet.readings()[a.path].up)
            before = fleet.counts()[b.path]["up"]
            _wait(lambda: fleet.counts()[b.path]["up"] >= before + 2)
        finally:
            fleet.stop(timeout=120)
    assert "cannot connect" in fleet.readings()[a.path].error or "closed" in fleet.readings()[a.path].error
    assert fleet.vms[a.path].good is not None  # its last good reading is kept, marked down


@pytest.mark.kvm
def test_the_exporter_serves_fifty_scrapers_and_a_killed_vm_goes_to_up_0(tmp_path):
    """Scraped over real HTTP, parsed with prometheus-client's own text
    parser; 50 scrapers at once all served; a VM that goes away reads
    up 0 while the other's metrics keep updating."""
    from prometheus_client.parser import text_string_to_metric_families

    with _one_to_go_and_one_to_stay(tmp_path, 65, 30_000) as (gone, a, b):
        proc = subprocess.Popen([KVMHARNESS, "exporter", "--listen", "127.0.0.1:0", "--qmp", a.path, "--qmp", b.path,
                                 "--every", "1s", "--bandwidth", "1Gbit/s"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            url = proc.stdout.readline().split()[2]

            def scrape():
                with urllib.request.urlopen(url, timeout=30) as r:
                    assert r.status == 200
                    families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
                return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values()
                        for s in f.samples}

            def up(metrics, path):
                return metrics.get(("kvmharness_vm_up", (("vm", path),)))

            _wait(lambda: up(scrape(), a.path) == 1 and up(scrape(), b.path) == 1)
            metrics = scrape()
            rate = metrics[("kvmharness_vm_dirty_rate_bytes_per_second", (("mode", "page-sampling"), ("vm", b.path)))]
            assert rate > 0
            assert ("kvmharness_vm_migration_converges", (("bandwidth_bits_per_second", "1e+09"),
                                                          ("downtime_seconds", "0.3"), ("vm", b.path))) in metrics
            results, errors = [], []

            def one_scraper():
                try:
                    results.append(scrape())
                except Exception as e:  # noqa: BLE001 - what fails is the finding
                    errors.append(repr(e))

            scrapers = [threading.Thread(target=one_scraper) for _ in range(50)]
            for t in scrapers:
                t.start()
            for t in scrapers:
                t.join(60)
            assert not errors and len(results) == 50
            gone.__exit__(None, None, None)
            _wait(lambda: up(scrape(), a.path) == 0)
            count = ("kvmharness_vm_measurements_total", (("result", "up"), ("vm", b.path)))
            before = scrape()[count]
            _wait(lambda: scrape()[count] >= before + 2)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err


@pytest.mark.kvm
def test_watch_under_signals_exits_cleanly_and_leaves_no_session(tmp_path):
    """SIGINT / SIGTERM / SIGHUP at random moments (seeded): 130 / 143 /
    129, no traceback, and the server has no session left open."""
    from kvmharness.dirtyrate import DirtyRateMonitor

    rng = random.Random(26)
    with running_vm(mem=64 * MIB, seed=67) as vm, serving(vm, DirtyRateMonitor(vm), tmp_path / "q") as s:
        vm.run_writer(10_000)
        for signo in [signal.SIGINT, signal.SIGTERM, signal.SIGHUP] * 2:
            proc = subprocess.Popen([KVMHARNESS, "watch", "--qmp", s.path, "--every", "1s", "--json-lines"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=default_sigint)  # a suite run in the background ignores SIGINT
            time.sleep(rng.uniform(0.3, 3.0))
            proc.send_signal(signo)
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 128 + signo, (signo, proc.returncode, err)
            assert "Traceback" not in err and err.count("\n") <= 1, err
            for line in out.splitlines():
                json.loads(line)
            _wait(lambda: not s.server.sessions, 30)


def test_watch_arguments_are_checked(cli):
    for args, fragment in [(["watch"], "--qmp"), (["watch", "--qmp", ""], "empty path"),
                           (["watch", "--qmp", "x", "--every", "0.5s"], "at least 1s"),
                           (["watch", "--qmp", "x", "--downtime", "10ms"], "between 50ms and 60s"),
                           (["exporter", "--qmp", "x", "--listen", "0.0.0.0:9477"], "takes --secret-file")]:
        result = cli(*args)
        assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr, result


def test_the_exporter_with_a_secret_file_wants_its_bearer_token(tmp_path):
    """No VM needed (its QMP is a path where nothing listens: it is down):
    a scrape without the token, or with another, gets 401; with it, the
    metrics."""
    import os
    import urllib.error

    secret = tmp_path / "token"
    secret.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    os.chmod(secret, 0o600)
    proc = subprocess.Popen([KVMHARNESS, "exporter", "--listen", "127.0.0.1:0", "--secret-file", str(secret),
                             "--qmp", str(tmp_path / "nobody.sock"), "--every", "1s"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        url = proc.stdout.readline().split()[2]
        for given in (None, "Bearer wrong-token-of-some-length"):
            request = urllib.request.Request(url, headers={"Authorization": given} if given else {})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(request, timeout=30)
            assert e.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": "Bearer 0123456789abcdef0123456789abcdef"})
        _wait(lambda: b"kvmharness_vm_up{" in urllib.request.urlopen(request, timeout=30).read(), 60)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_the_grafana_dashboard_queries_only_metrics_the_exporter_has():
    import pathlib
    import re

    from kvmharness.watch import metrics

    dashboard = json.loads((pathlib.Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    source = pathlib.Path(metrics.__file__).read_text()
    names = set(re.findall(r'gauge\("([a-z_]+)"', source)) | {"measurements_total"}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            name = re.match(r"kvmharness_vm_([a-z_]+)", target["expr"]).group(1)
            assert name in names, target["expr"]


def test_a_line_says_what_matters_first_and_the_screen_never_wraps():
    """The live view: age, rate and trend before the links, and each line
    cut to the terminal's width (a wrapped line made the next redraw climb
    one row short)."""
    import io
    import os

    from kvmharness.watch import render
    from kvmharness.watch.fleet import LinkVerdict, Reading

    reading = Reading("/run/vm.qmp", 100.0, True, rate_pages=25600, dirty_pages_at_downtime=1234, mode="page-sampling",
                      links=(LinkVerdict(1e9, False, math.inf, 0.0, "", 80, 102), LinkVerdict(1e10, True, 2.5, 0.3, "",
                                                                                               None, None)))
    text = render.line(reading, trend=256.0, now=103.0)
    assert text.startswith("/run/vm.qmp [3 s old] 100.0 MiB/s dirty (trend +1.0), 1234 pages per downtime")
    assert "1Gbit/s: no (converges with auto-converge ~80 % or limit 102 MB/s/vCPU)" in text
    assert text.endswith("10Gbit/s: converges, 2.5 s")
    down = Reading("/run/gone.qmp", 100.0, False, error="cannot connect")
    assert render.line(down, None, now=110.0) == "/run/gone.qmp [10 s old] DOWN: cannot connect"
    out = io.StringIO()
    os.environ["COLUMNS"] = "60"
    try:
        render.Screen(out).draw([text, "short"], "header")
    finally:
        del os.environ["COLUMNS"]
    rows = out.getvalue().split("\n")[:-1]
    assert len(rows) == 3 and all(len(r.replace("\x1b[2K", "")) <= 59 for r in rows) and rows[1].endswith("...")
