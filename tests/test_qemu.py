"""QEMU as a target (kvmharness/qemu/): our writer booted by a real QEMU
(each kind in turn, the `qemu_target` fixture: Debian's 7.2 with
whole-second windows, bookworm-backports' 10.0 with the seed's millisecond
windows) with its RAM in a file we map, its truth checked exactly
against replay and against the guest's own RAM; qemu-check; predict --qmp
against QEMU (whole-second windows) and against our own QMP server
(millisecond windows); QEMU's end on every exit path.

What is asserted is the truth side (our replay of the QEMU guest), never
QEMU's figures: those are what qemu-check reports."""

import ctypes
import glob
import json
import os
import signal
import struct
import subprocess
import time

import numpy as np
import pytest

from kvmharness.pytest_plugin import KVMHARNESS, default_sigint

pytestmark = [pytest.mark.kvm, pytest.mark.root, pytest.mark.qemu]

MIB = 1 << 20


def _our_ram_files():
    return set(glob.glob(f"/dev/shm/kvmh-qemu-{os.getpid()}-*"))


def _qemu_children():
    """QEMU processes whose parent is this test process."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if line.split()[1:2] == [str(os.getpid())] and "qemu" in line]


# ---- the image ---------------------------------------------------------------------------------------

def test_the_image_is_a_multiboot_elf32_with_its_header_in_the_first_8_kib():
    from kvmharness._native import lib
    from kvmharness.qemu.guest import multiboot_image

    image = multiboot_image()
    assert image[:4] == b"\x7fELF" and image[4] == 1  # ELFCLASS32: QEMU's loader refuses ELF64
    assert struct.unpack_from("<H", image, 18)[0] == 3  # EM_386
    entry = struct.unpack_from("<I", image, 24)[0]
    at = next(i for i in range(0, 8192, 4) if struct.unpack_from("<I", image, i)[0] == 0x1BADB002)
    magic, flags, checksum = struct.unpack_from("<III", image, at)
    assert (magic + flags + checksum) & 0xFFFFFFFF == 0
    assert lib.KVMH_MB_LOAD_GPA <= entry < lib.KVMH_MB_LOAD_GPA + len(image)


# ---- the guest's truth -----------------------------------------------------------------------------------

def test_qemu_guest_ram_equals_replay_for_every_pattern_and_the_tags_prove_replay(qemu_target):
    """Page for page, QEMU's guest RAM is what replay says, across pattern
    changes (the hot-set pattern reads an alias table we wrote into QEMU's
    RAM); and the pages whose tag is newer than a counter are exactly the
    pages replay says were written since: RAM, not replay, is the witness."""
    from kvmharness.microvm import replay
    from kvmharness.microvm.guest import WARM_TAG
    from kvmharness.microvm.truth import tag_mismatches
    from kvmharness.qemu.guest import QemuGuest

    with QemuGuest(64 * MIB, seed=11, qemu=qemu_target) as g:
        assert g.wait_ready() > 0  # the warm-up ran: every region page holds the warm tag
        assert tag_mismatches(g) == (0, 0)
        # the hot-set pattern first, from access 0: a held QEMU guest spins on
        # its control block, and before the seqlock (writer.S, "Control") it
        # could take up the new options with the old GEN: its first access
        # then went unaccounted (a cold page left with the warm tag)
        for pattern, wps in (("hotcold:0.02:0.98", 300_000), ("random", 200_000), ("sequential", 0),
                             ("hotcold:0.1:0.9", 300_000)):
            start = g.counters()[0]
            g.run_writer(wps, pattern)
            time.sleep(0.4)
            g.hold()
            stop = g.counters()[0]
            assert stop > start
            assert tag_mismatches(g) == (0, 0), pattern
            tags = g.page_tags()
            since = int(np.count_nonzero((tags > start) & (tags != WARM_TAG)))
            want = replay.unique_pages(g.logs[0], g.slot_pages, start, stop)
            assert since == want, pattern
    assert not _our_ram_files()


def test_ring_entries_model_matches_a_brute_force_ring():
    """ring_entries (the dirty-ring truth) against the plain simulation of
    a ring reset when full and at given positions."""
    from kvmharness.qemu.check import ring_entries

    rng = np.random.default_rng(5)
    for npages, limit, resets in ((50, 7, ()), (200, 64, (100, 2500)), (30, 40, (10,)), (1000, 100, (0, 3000))):
        pages = rng.integers(0, npages, 4000).astype(np.uint64)
        expect, dirty = 0, set()
        for i, p in enumerate(pages):
            if i in resets:
                dirty.clear()
            if p not in dirty:
                dirty.add(p)
                expect += 1
                if len(dirty) == limit:
                    dirty.clear()
        assert ring_entries(pages, limit, resets) == expect


def test_window_truth_brackets_hold_the_writes_made_in_a_window_of_calc_time(qemu_target):
    """QEMU's window lies between our calc-dirty-rate and its answer: the
    counter readings cover that stretch every ~millisecond, and each
    placement's writes are those of calc-time at the guest's pace."""
    from kvmharness.qemu.check import window_truth
    from kvmharness.qemu.dirty_rate import calc_dirty_rate, calc_support
    from kvmharness.qemu.guest import QemuGuest

    with QemuGuest(64 * MIB, seed=5, qemu=qemu_target) as g:
        g.wait_ready()
        support = calc_support(g.qmp)
        assert support.version == qemu_target.version and "dirty-bitmap" in support.modes
        assert support.millisecond == qemu_target.millisecond and support.source == "query-qmp-schema"
        g.run_writer(100_000, "random")
        time.sleep(0.2)
        m = calc_dirty_rate(g.qmp, support, 1000, "dirty-bitmap", counter=lambda: g.counters()[0])
        truth = window_truth(g, m)
        g.hold()
    times = np.array([t for t, _ in m.samples])
    assert times[0] <= m.sent and times[-1] >= m.done
    # readings every ~1 ms when the host lets the sampler run; how soon it does is the host's (issue 24: no
    # check on a thread's wake-up): a longer gap only widens the brackets, which the asserts below hold to
    print(f"{len(times)} readings, the longest gap {np.max(np.diff(times)) * 1e3:.1f} ms")
    assert len(times) >= 3 and np.all(np.diff(times) >= 0)
    assert truth.bracket_seconds >= 0
    lo, mid, hi = truth.pages
    assert 0 < lo <= mid <= hi <= g.slot_pages + 1
    # a paced writer makes 100 k writes in a second, never more (guest/writer.S, "Rate")
    assert 0 < truth.writes <= 100_000 * (1 + 0.00025) + 1


# ---- qemu-check --------------------------------------------------------------------------------------------

def test_qemu_check_json_every_mode(qemu_target):
    windows = "200ms,1s" if qemu_target.millisecond else "1s"
    out = subprocess.run([KVMHARNESS, "qemu-check", "--qemu", qemu_target.binary, "--mem", "64MiB", "--wps", "300k",
                          "--calc-times", windows, "--dirty-ring-size", "4096", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["qemu-ram-exact"] is True and report["qemu-version"] == qemu_target.version_text
    assert report["windows"].startswith("millisecond" if qemu_target.millisecond else "whole-second")
    assert [r["calc-time-ms"] for r in report["rows"]] == [int(w) for w in report["calc-times-ms"]] * 3
    rows = {r["mode"]: r for r in report["rows"] if r["calc-time-ms"] == 1000}
    assert set(rows) == {"dirty-bitmap", "page-sampling", "dirty-ring"}
    for r in report["rows"]:
        lo, mid, hi = r["truth-pages"]
        assert 0 < lo <= mid <= hi and r["guest-writes"] > 0
        assert r["kvmharness-mb-s"] is not None and r["kvmharness-truth-mb-s"] > 0
    # kvmharness's own exact modes counted within replay's brackets, on its VM
    assert rows["dirty-bitmap"]["kvmharness-exact"] is True and rows["dirty-ring"]["kvmharness-exact"] is True
    # a ring collects each page at least once: entries >= unique pages
    lo_e, hi_e = rows["dirty-ring"]["ring-entries"]
    assert rows["dirty-ring"]["truth-pages"][0] <= lo_e <= hi_e
    assert not _our_ram_files()


def test_qemu_check_errors_are_one_line(tmp_path):
    out = subprocess.run([KVMHARNESS, "qemu-check", "--qemu", str(tmp_path / "no-qemu")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "not an executable QEMU" in out.stderr
    out = subprocess.run([KVMHARNESS, "qemu-check", "--calc-times", "10ms"], capture_output=True, text=True)
    assert out.returncode == 2 and "50ms..60s" in out.stderr


def test_qemu_check_without_millisecond_windows_says_so_in_one_line(qemu_target):
    """A whole-seconds QEMU refuses a 500 ms window in one line; one with
    the seed's windows measures it."""
    out = subprocess.run([KVMHARNESS, "qemu-check", "--qemu", qemu_target.binary, "--mem", "32MiB",
                          "--calc-times", "500ms", "--no-ours", "--modes", "dirty-bitmap", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr
    if qemu_target.millisecond:
        assert out.returncode == 0, out.stderr
        assert [r["calc-time-ms"] for r in json.loads(out.stdout)["rows"]] == [500]
    else:
        assert out.returncode == 2
        assert "whole seconds only" in out.stderr and "500 ms is not" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not _our_ram_files()


# ---- predict --qmp -------------------------------------------------------------------------------------------

def _predict(address, *extra):
    out = subprocess.run([KVMHARNESS, "predict", "--qmp", address, "--downtime", "300ms", "--bandwidth",
                          "1Gbit/s", "--json", *extra], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_predict_over_qmp_against_qemu_uses_its_windows_and_says_what_whole_seconds_cost(tmp_path, qemu_target):
    from kvmharness.qemu.guest import QemuGuest

    sock = str(tmp_path / "predict.sock")
    with QemuGuest(64 * MIB, seed=9, extra_qmp=sock, qemu=qemu_target) as g:
        g.wait_ready()
        g.run_writer(50_000, "random")
        before = g.counters()[0]
        result = _predict(sock)
        assert g.counters()[0] > before  # the guest kept running while QEMU measured it
    qmp = result["qmp"]
    assert qmp["version"] == qemu_target.version_text and qmp["millisecond-windows"] == qemu_target.millisecond
    if qemu_target.millisecond:  # QEMU's own millisecond windows, from its shortest
        assert qmp["windows-ms"][0] == 50 and 300 in qmp["windows-ms"]
        assert not any("no window shorter" in n for n in qmp["notes"])
    else:
        assert all(w % 1000 == 0 for w in qmp["windows-ms"])
        assert any("no window shorter than 1000 ms" in n for n in qmp["notes"])
    assert result["mem"] == g.ram_bytes and qmp["vcpus"] == 1
    zeros = qmp["zero-pages"]  # read from the QEMU process where its info ramblock gives addresses (10, not 7.2)
    assert (zeros["pid"] is not None) == (qemu_target.version >= (10,))
    if zeros["pid"] is not None:  # the writer's warm-up wrote its whole region: only the rest can be zero
        assert zeros["pages"] >= g.ram_bytes // 4096 and zeros["zero-pages"] <= zeros["pages"] - g.slot_pages
    points = result["curve"]
    assert [t for t, _ in points] == sorted(qmp["windows-ms"])
    # the seed's rule, from the curve as measured: dirty(300 ms) on the line to the first point
    first_ms, first_pages = points[0]
    dirty = result["seed-verdict"]["dirty-bytes"]
    if qemu_target.millisecond:  # the seed's rule: the window as long as the downtime, measured
        assert dirty == pytest.approx(dict((t, p) for t, p in points)[300] * 4096, abs=2048)
    else:
        assert dirty == pytest.approx(first_pages * 4096 * min(300 / first_ms, 1), rel=0.01)


def test_predict_over_qmp_against_our_server_uses_milliseconds(tmp_path):
    path = tmp_path / "ours.sock"
    proc = subprocess.Popen([KVMHARNESS, "qmp", "--socket", str(path), "--mem", "128MiB", "--wps", "200k"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("QMP listening on unix:"), proc.stderr.read()
        result = _predict(str(path))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    qmp = result["qmp"]
    assert qmp["millisecond-windows"] is True
    assert qmp["windows-ms"][0] == 50 and 300 in qmp["windows-ms"]
    assert not any("no window shorter" in n for n in qmp["notes"])
    assert qmp["zero-pages"]["pid"] is None and "no RAM blocks" in qmp["zero-pages"]["source"]
    t300 = dict((t, p) for t, p in result["curve"])[300]
    # the seed's rule sent exactly the 300 ms point (the JSON rounds it to whole pages)
    assert result["seed-verdict"]["dirty-bytes"] == pytest.approx(t300 * 4096, abs=2048)


def test_predict_over_qmp_refuses_what_is_not_qmp(tmp_path):
    import socket
    import threading

    out = subprocess.run([KVMHARNESS, "predict", "--qmp", str(tmp_path / "none.sock"), "--downtime", "300ms",
                          "--bandwidth", "1Gbit/s"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "cannot connect to QMP" in out.stderr and "Traceback" not in out.stderr
    path = str(tmp_path / "liar.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def liar():
        conn, _ = server.accept()
        conn.sendall(b'["not", "a greeting"]\n')
        time.sleep(1)
        conn.close()

    t = threading.Thread(target=liar)
    t.start()
    try:
        out = subprocess.run([KVMHARNESS, "predict", "--qmp", path, "--downtime", "300ms", "--bandwidth",
                              "1Gbit/s"], capture_output=True, text=True, timeout=30)
    finally:
        t.join()
        server.close()
    assert out.returncode == 1 and "not an object" in out.stderr and "Traceback" not in out.stderr


# ---- nothing left behind ----------------------------------------------------------------------------------------

def test_a_qemu_that_dies_is_reported_and_nothing_is_left(qemu_target):
    from kvmharness.errors import HarnessError
    from kvmharness.qemu.guest import QemuGuest

    with QemuGuest(32 * MIB, qemu=qemu_target) as g:
        g.wait_ready()
        assert not _our_ram_files()  # unlinked as soon as QEMU had it open
        g.qemu.process.kill()
        g.qemu.process.wait()
        with pytest.raises(HarnessError, match="QEMU exited with status -9"):
            g.run_writer(1000)
    assert not _qemu_children()


def test_sigterm_during_qemu_check_stops_qemu_and_removes_its_files(qemu_target):
    before = set(glob.glob("/dev/shm/kvmh-qemu-*")) | set(glob.glob("/tmp/kvmh-qemu-*"))
    # a 30 s window: still measuring when the signal comes, however fast this host boots and measures
    proc = subprocess.Popen([KVMHARNESS, "qemu-check", "--qemu", qemu_target.binary, "--mem", "32MiB",
                             "--calc-times", "30s", "--no-ours", "--modes", "dirty-bitmap"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while not glob.glob("/tmp/kvmh-qemu-*/qmp.sock") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(8)  # booted and measuring
    assert proc.poll() is None, "qemu-check ended before the signal"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    after = set(glob.glob("/dev/shm/kvmh-qemu-*")) | set(glob.glob("/tmp/kvmh-qemu-*"))
    assert after <= before
    ps = subprocess.run(["pgrep", "-f", "kvmharness-writer.elf"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""


def test_zero_pages_read_from_the_qemu_process_are_its_ram_s(qemu_target):
    """predict --qmp's zero pages (issue 24): the file's holes and the
    resident pages QEMU's process maps, read whole here, against the zero
    pages of the same RAM read through our own mapping of its file; the
    estimate from a sample brackets them."""
    from kvmharness.qemu import zero_pages
    from kvmharness.qemu.guest import QemuGuest

    with QemuGuest(64 * MIB, seed=13, qemu=qemu_target, warm=False) as g:
        g.wait_ready()
        if not zero_pages.ram_blocks(g.qmp):  # 7.2's info ramblock has no host addresses: said, not guessed
            found = zero_pages.estimate(g.qmp)
            assert not found.known and "HVA" in found.source and "not known" in found.describe()
            assert qemu_target.version < (10,)
            return
        g.writer.run_accesses(g.slot_pages * 2 // 5, "sequential")
        g.writer.wait_done(60)
        g.hold()
        pages = np.frombuffer(g.ram.array(ctypes.c_uint64, g.ram_bytes // 8, 0), dtype=np.uint64)
        truth = int((~pages.reshape(-1, 512).any(axis=1)).sum())
        whole = zero_pages.estimate(g.qmp, sample=1 << 30)
        sampled = zero_pages.estimate(g.qmp, sample=512)
    ram = [b for b in whole.blocks if b[1] == g.ram_bytes // 4096]
    assert len(ram) == 1 and ram[0][2] == truth, (whole.blocks, truth)
    assert whole.pid == sampled.pid and whole.pages == sampled.pages and whole.low == whole.high
    assert sampled.low <= whole.zero <= sampled.high
    assert g.slot_pages * 3 // 5 - 16 <= truth  # the unwritten 60 % of the region at least
