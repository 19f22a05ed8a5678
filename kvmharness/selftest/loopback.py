"""A live migration within this process: source and destination joined by
socket pairs through a relay thread, so a caller can watch, change or cut
the stream on its way (tests/test_migration.py corrupts and truncates it;
`selftest` passes it through untouched)."""

import socket
import threading

from ..errors import StreamError
from ..migration.destination import migrate_in
from ..migration.source import migrate_out


def migrate_loopback(source_vm, relay=None, downtime=0.3, verify="sent", bytes_per_second=400e6):
    """Migrate source_vm to an in-process destination through `relay`
    ((bytes sent so far, bytes) -> bytes, or None to cut the stream).
    Returns {"report": MigrationReport, "arrival": Arrival (its VM running,
    the caller closes it)} and, where a side failed, "error" (the
    destination's StreamError message) or "source-error" (the exception)."""
    src_sock, relay_in = socket.socketpair()
    relay_out, dst_sock = socket.socketpair()
    result = {}

    def pump_forward():
        sent = 0
        try:
            while True:
                data = relay_in.recv(1 << 20)
                if not data:
                    break
                data = relay(sent, data) if relay else data
                if data is None:
                    break
                relay_out.sendall(data)
                sent += len(data)
            relay_out.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def pump_back():
        try:
            while True:
                data = relay_out.recv(65536)
                if not data:
                    break
                relay_in.sendall(data)
        except OSError:
            pass  # a side hung up: the caller looks at what each side reported
        relay_in.close()

    def destination():
        try:
            result["arrival"] = migrate_in(dst_sock, backing=source_vm.config.backing)  # one host: the same memory
        except StreamError as e:
            result["error"] = str(e)
        finally:
            dst_sock.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (pump_forward, pump_back, destination)]
    for t in threads:
        t.start()
    try:
        result["report"] = migrate_out(source_vm, src_sock, downtime, 10, bytes_per_second, verify=verify)
    except Exception as e:  # noqa: BLE001 - what the source saw, for the caller
        result["source-error"] = e
    src_sock.close()
    for t in threads:
        t.join(30)
    return result
