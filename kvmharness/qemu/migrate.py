"""QEMU's own live migration, driven over QMP as a user drives it: the
parameters and capabilities set, `migrate`, then `query-migrate` polled
until it ends; one that has not ended by a deadline is cancelled (it did
not converge).  The validation scripts and the migration benchmark compare
our predictions and our own migration with what this reports."""

import time
from dataclasses import dataclass

from ..qmp import replies

POLL = 0.05


@dataclass(frozen=True)
class QemuMigration:
    """How a QEMU migration ended: query-migrate's last answer."""

    info: dict
    finished: bool  # ended by itself (completed or failed) before the deadline
    seconds: float  # host time from `migrate` to the end (or the cancel)
    throttle: int | None  # the highest cpu-throttle-percentage query-migrate showed (auto-converge)

    @property
    def completed(self):
        return self.finished and self.info.get("status") == "completed"

    def to_json(self):
        ram = self.info.get("ram", {})
        return {"status": self.info.get("status") if self.finished else "not completed by the deadline",
                "converged": self.completed,
                "total-s": self.info.get("total-time", 0) / 1000 if self.completed else None,
                "downtime-ms": self.info.get("downtime") if self.completed else None,
                "dirty-sync-count": ram.get("dirty-sync-count"), "transferred": ram.get("transferred"),
                "max-cpu-throttle-seen": self.throttle}


def migrate_qemu(client, uri, deadline, parameters=None, capabilities=()):
    """Migrate the QEMU behind `client` to `uri` with `parameters`
    (migrate-set-parameters) and `capabilities` (names set on); cancel it
    after `deadline` seconds."""
    if capabilities:
        client.execute("migrate-set-capabilities",
                       {"capabilities": [{"capability": c, "state": True} for c in capabilities]})
    if parameters:
        client.execute("migrate-set-parameters", dict(parameters))
    client.execute("migrate", {"uri": uri})
    t0, throttle = time.monotonic(), None
    while True:
        info = replies.obj(client, "query-migrate", client.execute("query-migrate"))
        if "cpu-throttle-percentage" in info:
            throttle = max(throttle or 0, replies.whole(client, "query-migrate", info, "cpu-throttle-percentage", 0, 100))
        if replies.status(client, "query-migrate", info) in ("completed", "failed"):
            return QemuMigration(info, True, time.monotonic() - t0, throttle)
        if time.monotonic() - t0 > deadline:
            client.execute("migrate_cancel")
            client.wait_for("query-migrate", lambda i: replies.status(client, "query-migrate", i)
                            in ("cancelled", "failed", "completed"), 30)
            return QemuMigration(info, False, time.monotonic() - t0, throttle)
        time.sleep(POLL)
