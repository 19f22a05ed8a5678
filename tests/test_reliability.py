"""Nothing crashes, nothing is lost, no one gets in (issue 11): each test
here failed on the code before its fix."""

import signal
import socket
import subprocess
import threading
import time

import pytest

from kvmharness.dirtyrate import DirtyRateMonitor
from kvmharness.dirtyrate.monitor import DirtyRateStatus
from kvmharness.pytest_plugin import KVMHARNESS, default_sigint, running_vm
from kvmharness.qmp.hmp import human_monitor_command

MiB = 1 << 20


# ---- 1. threads that read guest memory are joined before it is unmapped -----
@pytest.mark.kvm
def test_closing_the_vm_mid_measurement_joins_the_measurement_first():
    with running_vm(mem=256 * MiB, seed=61) as vm:
        vm.run_writer(1_000_000)
        monitor = DirtyRateMonitor(vm)
        monitor.calc_dirty_rate(5000, "millisecond", mode="page-sampling")
        time.sleep(0.2)
    # the VM is gone; the measurement thread ended before its memory did
    assert not monitor._thread.is_alive()
    state = monitor.state()
    assert state.status is DirtyRateStatus.MEASURED and "cut short" in str(state.error)


@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["page-sampling", "dirty-bitmap", "dirty-ring"])
def test_signals_during_a_measurement_never_crash(mode):
    """SIGINT / SIGTERM at times spread over VM creation, settling and the
    window: a clean exit status every time, never a crash (-11)."""
    for i, delay in enumerate((0.4, 1.0)):
        signo = (signal.SIGINT, signal.SIGTERM)[i % 2]
        proc = subprocess.Popen([KVMHARNESS, "calc-dirty-rate", "--mem", "512MiB", "--calc-time", "300",
                                 "--calc-time-unit", "millisecond", "--mode", mode],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=default_sigint)
        time.sleep(delay)
        proc.send_signal(signo)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode in (0, 128 + signo), (delay, proc.returncode, err)
        assert "Traceback" not in err


# ---- 2. qmp: signals the asyncio way, sockets never left behind -------------
def _start_qmp(path, *extra):
    proc = subprocess.Popen([KVMHARNESS, "qmp", "--socket", str(path), "--mem", "128MiB", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    assert "QMP listening" in proc.stdout.readline()
    return proc


def _pipelining_client(path, stop):
    """Sends query-status fifty at a time and reads the replies, until told to stop."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(b'{"execute": "qmp_capabilities"}')
        s.settimeout(0.5)
        while not stop.is_set():
            try:
                s.sendall(b'{"execute": "query-status"}' * 50)
                s.recv(1 << 16)
            except OSError:
                return


@pytest.mark.kvm
@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_qmp_exits_on_a_signal_under_load_and_removes_its_socket(tmp_path, signo):
    path = tmp_path / "qmp.sock"
    proc = _start_qmp(path)
    stop = threading.Event()
    clients = [threading.Thread(target=_pipelining_client, args=(path, stop)) for _ in range(3)]
    try:
        for c in clients:
            c.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signo)
        _, err = proc.communicate(timeout=20)
        took = time.monotonic() - t0
    finally:
        stop.set()
        proc.kill()
        for c in clients:
            c.join(5)
    assert proc.returncode == 128 + signo, err
    assert took < 10 and "Traceback" not in err and len(err.splitlines()) <= 2, err
    assert not path.exists()


@pytest.mark.kvm
def test_qmp_replaces_a_stale_socket_and_refuses_a_live_one(tmp_path):
    path = tmp_path / "qmp.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # its owner is gone; the file stays
    proc = _start_qmp(path)
    try:
        second = subprocess.run([KVMHARNESS, "qmp", "--socket", str(path), "--mem", "128MiB"],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 2 and "a server is listening there already" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 143 and not path.exists()


# ---- 10. QMP input that used to drop the connection ---------------------------
TRY = '\r\nTry "help calc_dirty_rate" for more information\r\n'


@pytest.mark.parametrize("line,reply", [
    ("calc_dirty_rate 1 \u00b2", "invalid char '\u00b2' in expression" + TRY),
    ("calc_dirty_rate \u0661s", "invalid char '\u0661' in expression" + TRY),
    ("calc_dirty_rate " + "9" * 5000, "number too large" + TRY),
])
def test_hmp_numbers_are_ascii_and_bounded(line, reply):
    assert human_monitor_command(None, line) == reply  # refused before any monitor is asked


# ---- 4, 11. every number a user types is checked where it is parsed ---------------
@pytest.mark.parametrize("args,fragment", [
    (["migrate-listen", "--port", "0", "--run-after", "10000000000000s"], "at most 1e+06 s"),
    (["run", "--duration", "0.0000001us"], "shorter than 1us"),
    (["run", "--mem", "\uff11GiB"], "invalid size"),
    (["run", "--mem", "1" * 400], "invalid size"),
    (["run", "--vcpus", "\u0663"], "invalid count"),
    (["predict", "--mem", "64MiB", "--downtime", "300ms", "--bandwidth", "9" * 400 + "Gbit/s"],
     "invalid bandwidth"),
    (["qmp", "--socket", ""], "an empty path"),
    (["qmp", "--socket", "/tmp/" + "x" * 200], "longer than 107 bytes"),
    (["bench", "--quick", "--out", "/proc/nope"], "cannot write results to /proc/nope"),
    (["migrate", "--to", "[::1]"], "invalid TCP address"),
])
def test_bad_values_are_one_line_errors(cli, args, fragment):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.kvm
def test_qmp_serves_ipv6(tmp_path):
    proc = subprocess.Popen([KVMHARNESS, "qmp", "--tcp", "[::1]:0", "--mem", "128MiB"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("QMP listening on tcp:[::1]:"), line  # it printed tcp:::1:PORT (issue 25)
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("::1", port), timeout=10) as s:
            assert b'"QMP"' in s.recv(4096)
        from kvmharness.qmp.client import QmpClient

        with QmpClient(f"[::1]:{port}", timeout=10) as client:  # predict --qmp [::1]:PORT always used AF_INET
            assert client.execute("query-status")["status"] == "running"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 143


def test_migrate_listen_defaults_to_loopback():
    from kvmharness.cli import build_parser

    args = build_parser().parse_args(["migrate-listen", "--port", "1"])
    assert args.host == "127.0.0.1"


def _listening(port):
    """A socket listens on TCP `port` (IPv4), as /proc/net/tcp says."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(r[1].endswith(f":{port:04X}") and r[3] == "0A" for r in rows)


@pytest.mark.kvm
def test_closing_the_vm_mid_migration_joins_the_migration_first():
    """A QMP migration's thread reads guest memory too: closing the VM breaks
    it off (socket shut down) and joins it before anything is unmapped."""
    from kvmharness.migration.job import MigrationJob

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    # a real destination, fed at 1 MB/s: 256 MiB keep the source's thread sending pages for minutes
    dest = subprocess.Popen([KVMHARNESS, "migrate-listen", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        with running_vm(mem=256 * MiB, seed=64) as vm:
            vm.run_writer(20_000)
            job = MigrationJob(vm)
            job.set_parameters({"max-bandwidth": 1 << 20})
            deadline = time.monotonic() + 30
            while not _listening(port):  # read from the kernel: a probe connection would be a peer to it
                assert time.monotonic() < deadline
                time.sleep(0.05)
            job.start(f"tcp:127.0.0.1:{port}")
            while job.status == "setup" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert job.status == "active"  # the stream is open and its first pass is reading guest memory
        assert not job._thread.is_alive() and job.status == "failed"
    finally:
        dest.terminate()
        dest.wait(30)


# ---- 10. QMP's resources are bounded; one dirty log, one user ---------------
@pytest.fixture(scope="module")
def qmp_vm():
    with running_vm(mem=64 * MiB, seed=71) as vm:
        vm.run_writer(20_000)
        yield vm


@pytest.mark.kvm
def test_qmp_client_count_is_bounded(qmp_vm, tmp_path):
    from kvmharness.qmp.server import MAX_CLIENTS
    from qmp_helpers import RawClient, serving

    with serving(qmp_vm, DirtyRateMonitor(qmp_vm), tmp_path / "q.sock") as s:
        clients = [RawClient(s.path, negotiate=False) for _ in range(MAX_CLIENTS)]
        extra = socket.socket(socket.AF_UNIX)
        extra.settimeout(10)
        extra.connect(s.path)
        told = extra.makefile("rb").read()  # one error line, then the server hangs up
        extra.close()
        assert told == (b'{"error": {"class": "GenericError", "desc": "too many QMP clients (at most '
                        + str(MAX_CLIENTS).encode() + b')"}}\r\n')
        clients.pop().close()  # a place frees up ...
        deadline = time.monotonic() + 5
        while True:
            try:
                again = RawClient(s.path)  # ... and is given to the next client
                break
            except (EOFError, KeyError, AssertionError):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert again.cmd("query-status")["return"]["status"] == "running"
        for c in clients + [again]:
            c.close()


@pytest.mark.kvm
def test_qmp_drops_a_client_that_never_reads(qmp_vm, tmp_path):
    """A client that pipelines commands with big replies and never reads is
    dropped once MAX_OUTPUT waits for it; other clients are served.  The
    server reads 64 KiB of commands at a time and waits for its replies to
    drain before reading more, so a big reply is what makes one read's
    replies pass the bound: query-dirty-rate after a 2 s window with a
    period every 50 ms (about 5 KB each, 2000 of them in one read)."""
    import json

    from kvmharness.qmp.server import MAX_OUTPUT, READ_CHUNK
    from qmp_helpers import RawClient, serving

    with serving(qmp_vm, DirtyRateMonitor(qmp_vm), tmp_path / "q.sock") as s:
        hog = RawClient(s.path)
        assert hog.cmd("calc-dirty-rate", **{"calc-time": 2000, "calc-time-unit": "millisecond",
                                              "x-periods": list(range(50, 2001, 50))}) == {"return": {}}
        while (reply := hog.cmd("query-dirty-rate"))["return"]["status"] != "measured":
            time.sleep(0.1)
        request = b'{"execute": "query-dirty-rate"}'
        asked = READ_CHUNK // len(request) * len(json.dumps(reply))
        assert asked > 4 * MAX_OUTPUT  # one read's replies would pass the bound
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            hog.send(request * (READ_CHUNK // len(request)))
        except OSError:
            pass  # dropped while we were still sending: the point
        time.sleep(1.0)
        # now read: the server must have hung up (EOF or reset) after at most
        # MAX_OUTPUT plus what the sockets hold; a connection still open (a
        # read that times out) or more data is a server that kept buffering
        hog.sock.settimeout(5)
        received, dropped = 0, False
        try:
            while received <= 4 * MAX_OUTPUT:
                chunk = hog.sock.recv(1 << 20)
                if not chunk:
                    dropped = True
                    break
                received += len(chunk)
        except ConnectionResetError:
            dropped = True
        except socket.timeout:
            pass
        hog.close()
        assert dropped and received < 4 * MAX_OUTPUT, (dropped, received)
        other = RawClient(s.path)
        assert other.cmd("query-status")["return"]["status"] == "running"
        other.close()


@pytest.mark.kvm
def test_migration_and_exact_measurements_exclude_each_other(tmp_path):
    """QEMU refuses a dirty-log measurement during a migration and the
    reverse: each sync of the one dirty log clears what the other needs.
    page-sampling reads memory only and may run beside a migration."""
    from kvmharness.migration.destination import migrate_in
    from qmp_helpers import RawClient, serving

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: migrate_in(listener.accept()[0]), daemon=True).start()
    with running_vm(mem=64 * MiB, seed=72) as vm, serving(vm, DirtyRateMonitor(vm), tmp_path / "q.sock") as s:
        vm.run_writer(200)  # slow enough that the migration below converges at 16 MB/s
        c = RawClient(s.path)
        assert c.cmd("calc-dirty-rate", **{"calc-time": 1500, "calc-time-unit": "millisecond",
                                            "mode": "dirty-bitmap"}) == {"return": {}}
        refused = c.cmd("migrate", uri=f"tcp:127.0.0.1:{listener.getsockname()[1]}")
        assert refused == {"error": {"class": "GenericError", "desc":
                                     "a dirty-bitmap or dirty-ring measurement is running; migrate when it has ended"}}
        while c.cmd("query-dirty-rate")["return"]["status"] != "measured":
            time.sleep(0.05)
        # 64 MiB at 16 MB/s: about four seconds of migration to measure beside
        assert c.cmd("migrate-set-parameters", **{"max-bandwidth": 16_000_000}) == {"return": {}}
        assert c.cmd("migrate", uri=f"tcp:127.0.0.1:{listener.getsockname()[1]}") == {"return": {}}
        status = "setup"  # until the stream is open and the first pass begins, as QEMU's
        while status == "setup":
            status = c.cmd("query-migrate")["return"]["status"]
        assert status == "active"
        refused = c.cmd("calc-dirty-rate", **{"calc-time": 100, "calc-time-unit": "millisecond",
                                               "mode": "dirty-bitmap"})
        assert refused == {"error": {"class": "GenericError", "desc":
                                     "mode dirty-bitmap cannot measure while a migration is in progress; "
                                     "use page-sampling or wait for the migration to end"}}
        assert c.cmd("calc-dirty-rate", **{"calc-time": 100, "calc-time-unit": "millisecond",
                                            "mode": "page-sampling"}) == {"return": {}}
        while c.cmd("query-migrate")["return"]["status"] not in ("completed", "failed"):
            time.sleep(0.1)
        assert c.cmd("query-migrate")["return"]["status"] == "completed"
        assert c.cmd("query-dirty-rate")["return"]["status"] == "measured"
        c.close()
    listener.close()


@pytest.mark.kvm
def test_the_writer_after_close_raises_instead_of_faulting():
    """A caller that keeps a VM past its `with` block and reads the writer's
    counters read unmapped memory: a segfault (found while writing issue
    12's tests).  The control blocks are detached before they are unmapped."""
    from kvmharness.errors import HarnessError

    with running_vm(mem=64 * MiB, seed=73) as vm:
        vm.run_writer(10_000)
    for call in (vm.counters, vm.schedules, vm.snapshot, vm.writer.states, lambda: vm.set_writer(wps=1)):
        with pytest.raises(HarnessError, match="the VM is closed"):
            call()
