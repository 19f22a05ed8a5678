"""Outgoing migration as a background job, as QMP's `migrate` runs it:
start returns at once, `query-migrate` reports the status, listeners hear
of every status change (MIGRATION events)."""

import socket
import threading
import time

from ..errors import HarnessError, UsageError
from ..peer import printable
from ..units import parse_tcp_address
from . import parameters as mp
from .source import Aid, MigrationProgress, migrate_out


def parse_uri(uri):
    """'tcp:HOST:PORT' -> (host, port), the only transport we speak: a host
    (an IPv6 one in brackets, as QEMU writes it) and a port 1..65535 in
    ASCII digits (units.parse_tcp_address; '²'.isdigit() holds)."""
    scheme, _, rest = uri.partition(":")
    try:
        if scheme != "tcp" or ":" not in rest or any(c.isspace() for c in rest):
            raise UsageError("not tcp:HOST:PORT")
        host, port = parse_tcp_address(rest)
        if port == 0:
            raise UsageError("port 0")
    except UsageError:
        raise HarnessError(f"Invalid migration URI '{printable(uri, 80)}': use tcp:HOST:PORT") from None
    return host, port


class MigrationJob:
    def __init__(self, vm, secret=None, cpu_throttle=None, dirty_limit=None):
        self.vm = vm
        self.secret = secret  # the destinations' shared secret (auth.py)
        self.parameters = mp.defaults()
        self.capabilities = {name: False for name in mp.CAPABILITIES}
        self.cpu_throttle = cpu_throttle  # the VM's, shared with QMP's commands
        self.dirty_limit = dirty_limit
        self.status = "none"
        self.report = None
        self.progress = MigrationProgress()
        self.error = None
        self.started = None
        self.listeners = []
        self._lock = threading.Lock()
        self._thread = None
        self._sock = None
        vm.add_teardown(self.close)

    def close(self, timeout=30.0):
        """Break off a running migration and wait for its thread: it reads
        guest memory, which the VM unmaps next.  Shutting the socket down
        makes the thread's next send or receive fail; the guest stays here."""
        sock, thread = self._sock, self._thread
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                raise HarnessError("the migration thread did not stop")

    @property
    def running(self):
        return self.status in ("setup", "active")

    def set_capabilities(self, caps):
        """migrate-set-capabilities: refused while a migration runs, and
        checked as a whole (QEMU's migrate_caps_check)."""
        if self.running:
            raise HarnessError(mp.MIGRATION_ACTIVE)
        new = self.capabilities | caps
        mp.check_capabilities(new, self.vm.ring is not None)
        self.capabilities = new

    def set_parameters(self, new):
        self.parameters = mp.merged(self.parameters, new)

    def _set_status(self, status):
        self.status = status
        for listener in list(self.listeners):
            listener(status)

    def away(self, paused_too=True):
        """Why the guest is not here to work on, or None: it has migrated
        away (it runs at the destination), or, with `paused_too`, it is
        paused after a switch-over the destination never confirmed.  One
        text for QMP's every refusal: x-set-writer, cont, migrate."""
        if self.status == "completed":
            return "The guest has migrated away; it runs at the destination"
        if paused_too and self.vm.paused:
            return ("The guest is paused after a switch-over the destination never confirmed: check whether it "
                    "runs there, then cont it here or quit")
        return None

    def start(self, uri):
        address = parse_uri(uri)
        with self._lock:
            if self.running:
                raise HarnessError(mp.MIGRATION_ACTIVE)
            if (why := self.away()) is not None:
                raise HarnessError(why)
            self.report, self.error, self.started = None, None, time.monotonic()
            self.progress = MigrationProgress(on_active=lambda: self._set_status("active"))
            self._set_status("setup")
        self._thread = threading.Thread(target=self._run, args=(address,), name="migrate", daemon=True)
        self._thread.start()

    def _run(self, address):
        p = self.parameters
        try:
            with socket.create_connection(address, timeout=30) as sock:
                self._sock = sock
                sock.settimeout(None)
                aid = Aid(mp.aid_name(self.capabilities), mp.throttle_parameters(p), self.cpu_throttle,
                          self.dirty_limit)
                report = migrate_out(self.vm, sock, p["downtime-limit"] / 1000, p["x-max-iterations"],
                                     p["max-bandwidth"] or None, self.secret, aid=aid, progress=self.progress)
            self.report = report
            self._set_status("completed" if report.converged else "failed")
            if not report.converged:
                self.error = report.reason
        except (OSError, HarnessError) as e:
            self.error = f"migration failed, the guest keeps running here: {e}"
            self._set_status("failed")
