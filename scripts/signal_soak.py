#!/usr/bin/env python3
"""Signal soak: start a command, send it SIGINT, SIGTERM or SIGHUP after a
random delay, and check how it ended, many times over.

Commands: run, calc-dirty-rate in each mode, qmp under load (three clients
pipelining query-status), predict, both ends of a migration over loopback
(the signal goes to one end), qemu-check (no QEMU, RAM file or work
directory of ours may outlive it), and watch and exporter watching a
`kvmharness qmp` (which must then still stop cleanly on SIGTERM).  A run passes if the signalled
command exited 0 (it finished first) or 128 + the signal, printed no
traceback, crashed nothing (no negative status) and left no socket behind;
the other end of a migration must exit 0 or 1 with a one-line error, or,
for a listener whose source died before it connected or authenticated, go
on listening (it is then stopped with SIGTERM and must exit 143).

Usage: scripts/signal_soak.py [--runs 100] [--seed 1] [--min 0.1] [--max 3] [--only NAME ...]
"""

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

KVMHARNESS = os.path.join(os.path.dirname(sys.executable), "kvmharness")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
VM = ["--mem", "256MiB", "--wps", "1M"]


def _spawn(args):
    return subprocess.Popen([KVMHARNESS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _load(path, stop):
    while not stop.is_set() and not os.path.exists(path):
        time.sleep(0.01)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.settimeout(0.5)
            s.sendall(b'{"execute": "qmp_capabilities"}')
            while not stop.is_set():
                s.sendall(b'{"execute": "query-status"}' * 50)
                s.recv(1 << 16)
    except OSError:
        pass


SCENARIOS = {
    "run": lambda tmp, port: [["run", *VM, "--duration", "3s"]],
    "calc page-sampling": lambda tmp, port: [["calc-dirty-rate", *VM, "--calc-time", "300", "--calc-time-unit",
                                              "millisecond", "--mode", "page-sampling"]],
    "calc dirty-bitmap": lambda tmp, port: [["calc-dirty-rate", *VM, "--calc-time", "300", "--calc-time-unit",
                                             "millisecond", "--mode", "dirty-bitmap"]],
    "calc dirty-ring": lambda tmp, port: [["calc-dirty-rate", *VM, "--calc-time", "300", "--calc-time-unit",
                                           "millisecond", "--mode", "dirty-ring"]],
    "qmp under load": lambda tmp, port: [["qmp", "--socket", os.path.join(tmp, "q.sock"), *VM]],
    "predict": lambda tmp, port: [["predict", "--mem", "128MiB", "--wps", "20k", "--downtime", "300ms",
                                   "--bandwidth", "1Gbit/s"]],
    "migrate": lambda tmp, port: [["migrate-listen", "--port", str(port), "--run-after", "1s"],
                                  ["migrate", "--to", f"127.0.0.1:{port}", *VM[:2], "--wps", "20k"]],
    "qemu-check": lambda tmp, port: [["qemu-check", "--mem", "64MiB", "--wps", "300k", "--calc-times", "1s",
                                      "--modes", "dirty-bitmap,dirty-ring", "--dirty-ring-size", "4096"]],
    "watch": lambda tmp, port: [["watch", "--qmp", os.path.join(tmp, "w.sock"), "--every", "1s", "--json-lines"]],
    "exporter": lambda tmp, port: [["exporter", "--listen", f"127.0.0.1:{port}", "--qmp", os.path.join(tmp, "w.sock"),
                                    "--every", "1s"]],
}
# Scenarios that need a server to watch: started first, not signalled, and
# stopped with SIGTERM afterwards (it must exit 143: the watcher's signal
# must not have harmed it, and it must have no session left that holds it)
HELPERS = {
    "watch": lambda tmp: ["qmp", "--socket", os.path.join(tmp, "w.sock"), "--mem", "128MiB", "--wps", "50k"],
    "exporter": lambda tmp: ["qmp", "--socket", os.path.join(tmp, "w.sock"), "--mem", "128MiB", "--wps", "50k"],
}
# qemu-check boots QEMU (~4 s here) before it measures: its signals are
# spread over 4x the delay range, so that they land in boot, QEMU's
# measurement and our own VM's alike
DELAY_SCALE = {"qemu-check": 4.0}
# Before Python has started kvmharness's code (interpreter start, imports:
# ~0.1 s on a loaded 2-CPU runner) a SIGTERM or SIGHUP takes its default
# action; a shell reports that as 128 + n too, and nothing had started
EARLY = 0.3


def qemu_leftovers(pids):
    """QEMU RAM files, QEMU work directories and QEMU processes running our
    image that belong to the kvmharness processes `pids`: their names carry
    the pid of the process that made them (kvmh-qemu-<pid>-...), so a test
    suite running beside the soak is not counted against it."""
    import glob

    mine = tuple(f"kvmh-qemu-{pid}-" for pid in pids)
    files = {f for f in glob.glob("/dev/shm/kvmh-qemu-*") + glob.glob(os.path.join(tempfile.gettempdir(),
                                                                                   "kvmh-qemu-*"))
             if os.path.basename(f).startswith(mine)}
    procs = subprocess.run(["pgrep", "-a", "-f", "kvmharness-writer.elf"], capture_output=True,
                           text=True).stdout.splitlines()
    return files | {f"qemu pid {line.split()[0]}" for line in procs if any(m in line for m in mine)}


def one(i, rng, args, tmp):
    name = rng.choice(sorted(args.only or SCENARIOS))
    signo = rng.choice(SIGNALS)
    delay = rng.uniform(args.min, args.max) * DELAY_SCALE.get(name, 1.0)
    port = 20000 + i % 20000
    commands = SCENARIOS[name](tmp, port)
    procs, helpers = [], []
    stop = threading.Event()
    loader = None
    try:
        if name in HELPERS:
            helpers.append(_spawn(HELPERS[name](tmp)))
            deadline = time.monotonic() + 30
            while not os.path.exists(os.path.join(tmp, "w.sock")) and time.monotonic() < deadline:
                time.sleep(0.05)
        for k, command in enumerate(commands):
            procs.append(_spawn(command))
            if k + 1 < len(commands):
                time.sleep(0.5)  # the listener binds
        if name == "qmp under load":
            loader = threading.Thread(target=_load, args=(os.path.join(tmp, "q.sock"), stop))
            loader.start()
        target = procs[rng.randrange(len(procs))]
        time.sleep(delay)
        target.send_signal(signo)
        ended = {target: target.communicate(timeout=120)}
        results, still_listening = [], None
        for p in procs:
            try:
                results.append((p, *(ended.get(p) or p.communicate(timeout=30))))
            except subprocess.TimeoutExpired:
                still_listening = p  # a listener whose source never got through the handshake
                p.send_signal(signal.SIGTERM)
                results.append((p, *p.communicate(timeout=30)))
        for h in helpers:
            h.send_signal(signal.SIGTERM)
            results.append((h, *h.communicate(timeout=60)))
    finally:
        stop.set()
        if loader:
            loader.join(5)
        for p in procs + helpers:
            p.kill()
    problems = []
    for p, _, err in results:
        ok = {0, 128 + signo} if p is target else {0, 1}
        if p in helpers:  # the watched server, stopped by us
            ok = {128 + signal.SIGTERM}
        if p is still_listening:  # its source died before it connected, or during the handshake
            ok = {128 + signal.SIGTERM}
        if p is target and p.returncode == -signo and delay < EARLY:
            pass  # the signal's default action, before the interpreter reached kvmharness's handlers: nothing ran
        elif p.returncode < 0:
            problems.append(f"crashed with signal {-p.returncode}")
        elif p.returncode not in ok:
            problems.append(f"exit {p.returncode}")
        if "Traceback" in err:
            problems.append("traceback")
    stray = qemu_leftovers([p.pid for p in procs + helpers])
    if stray:
        problems.append(f"QEMU left behind: {sorted(stray)}")
    leftovers = os.listdir(tmp)
    if leftovers:
        problems.append(f"left behind: {leftovers}")
        for f in leftovers:
            os.unlink(os.path.join(tmp, f))
    return name, signal.Signals(signo).name, delay, [p.returncode for p, *_ in results], problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min", type=float, default=0.1)
    ap.add_argument("--max", type=float, default=3.0)
    ap.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="draw from these scenarios only")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="kvmh-soak-")
    failures, statuses = [], Counter()
    try:
        for i in range(args.runs):
            name, sig, delay, codes, problems = one(i, rng, args, tmp)
            statuses[(name, sig, tuple(codes))] += 1
            if problems:
                failures.append((i, name, sig, delay, codes, problems))
                print(f"run {i}: {name}, {sig} after {delay:.2f} s: exit {codes}: {'; '.join(problems)}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.runs} runs, {len(failures)} with problems (crashes, tracebacks, stale sockets, other exits)")
    for (name, sig, codes), n in sorted(statuses.items()):
        print(f"  {n:3d} x {name:<20} {sig:<8} exit {list(codes)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
