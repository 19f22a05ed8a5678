"""Two hosts on one machine: network namespaces joined by a veth pair whose
bandwidth the kernel shapes (tc tbf), set up through netlink (pyroute2) and
removed afterwards.  Used by the migration tests and the validation run.

The addresses live only inside namespaces this testbed creates, so traffic
between them never leaves the machine.
"""

import base64
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

from pyroute2 import IPRoute, NetNS, netns

SUBNET = "10.213.{n}.{host}"


@dataclass(frozen=True)
class Testbed:
    source_ns: str
    destination_ns: str
    source_ip: str
    destination_ip: str
    bits_per_second: int
    secret_file: str  # a shared secret both ends are given: the namespaces are two hosts

    def enter(self, ns):
        """For subprocess preexec_fn: move the child into namespace `ns`."""
        return lambda: netns.setns(ns)


def _shape(ns_name, ifname, bits_per_second, latency_ms):
    with NetNS(ns_name) as ns:
        idx = ns.link_lookup(ifname=ifname)[0]
        rate = bits_per_second // 8  # bytes/s, as tbf takes it
        burst = max(rate // 250, 32 * 1024)  # ~4 ms of traffic, at least 32 KiB
        ns.tc("add", "tbf", index=idx, handle="1:", rate=rate, burst=burst, latency=f"{latency_ms}ms")


@contextlib.contextmanager
def veth_testbed(bits_per_second, latency_ms=50, subnet=1):
    """Namespaces kvmh-src-*/kvmh-dst-* with veth ends 10.213.<subnet>.1/.2,
    both directions shaped to `bits_per_second`."""
    tag = uuid.uuid4().hex[:8]
    src, dst = f"kvmh-src-{tag}", f"kvmh-dst-{tag}"
    src_if, dst_if = f"kvs{tag[:6]}", f"kvd{tag[:6]}"
    src_ip, dst_ip = SUBNET.format(n=subnet, host=1), SUBNET.format(n=subnet, host=2)
    netns.create(src)
    try:
        netns.create(dst)
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname=src_if, kind="veth", peer=dst_if)
                for ifname, ns in ((src_if, src), (dst_if, dst)):
                    idx = ipr.link_lookup(ifname=ifname)[0]
                    ipr.link("set", index=idx, net_ns_fd=ns)
            for ns_name, ifname, ip in ((src, src_if, src_ip), (dst, dst_if, dst_ip)):
                with NetNS(ns_name) as ns:
                    idx = ns.link_lookup(ifname=ifname)[0]
                    ns.addr("add", index=idx, address=ip, prefixlen=30)
                    ns.link("set", index=idx, state="up")
                    lo = ns.link_lookup(ifname="lo")[0]
                    ns.link("set", index=lo, state="up")
                _shape(ns_name, ifname, bits_per_second, latency_ms)
            with secret_file() as secret:
                yield Testbed(src, dst, src_ip, dst_ip, bits_per_second, secret)
        finally:
            netns.remove(dst)  # takes its veth end, and so the pair, with it
    finally:
        netns.remove(src)


@contextlib.contextmanager
def secret_file():
    """A fresh random migration secret in a mode-600 file, removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="kvmh-secret-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        yield path
    finally:
        os.unlink(path)


def have_netns_privileges():
    return os.geteuid() == 0


def migrate_across(tb, port, source_args, timeout=400):
    """One `kvmharness migrate` from the source namespace to a
    `migrate-listen` in the destination namespace (both with the testbed's
    secret): (source's exit status, its stdout, its stderr)."""
    exe = os.path.join(os.path.dirname(sys.executable), "kvmharness")
    dest = subprocess.Popen([exe, "migrate-listen", "--host", tb.destination_ip, "--port", str(port),
                             "--secret-file", tb.secret_file, "--run-after", "0.2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=tb.enter(tb.destination_ns))
    try:
        time.sleep(0.5)  # the listener binds
        src = subprocess.run([exe, "migrate", "--to", f"{tb.destination_ip}:{port}", "--secret-file",
                              tb.secret_file, *source_args], capture_output=True, text=True, timeout=timeout,
                             preexec_fn=tb.enter(tb.source_ns))
        try:
            dest.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # still listening: the source never reached it
            pass
    finally:
        dest.kill()
    return src.returncode, src.stdout, src.stderr
