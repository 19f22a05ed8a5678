"""`exporter`: a Fleet's readings as Prometheus metrics (prometheus-client's
registry and text format), served over HTTP to any number of scrapers.

Names follow Prometheus's conventions: base units (bytes, seconds),
`_bytes_per_second`, `_seconds`, `_total`; each metric's help says where
it mirrors libvirt's `virsh domstats --dirtyrate` field (dirtyrate.*,
which reports MiB/s: here bytes/s).  A VM that is down keeps its last
good values with kvmharness_vm_up 0, so a dashboard shows how stale they
are (kvmharness_vm_last_measurement_age_seconds) instead of a gap.  A VM
whose QEMU refused the last measurement (someone else measures or migrates
it) answered, so it is up, with kvmharness_vm_measurement_refused 1.

Beyond loopback the endpoint takes a bearer token (`--secret-file`, the
same file format as the migration secret): Prometheus's scrape_config
sends it with `authorization: {credentials_file: ...}`.
"""

import hmac
import http.server
import math
import socket
import threading
import time

from .fleet import after_effect_seconds

PREFIX = "kvmharness_vm_"
PAGE = 4096


def _labels(link, downtime):
    return [f"{link.bits_per_second:g}", f"{downtime:g}"]


class FleetCollector:
    """A prometheus-client collector reading the fleet at each scrape."""

    def __init__(self, fleet):
        self.fleet = fleet

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        def gauge(name, doc, labels):
            return GaugeMetricFamily(PREFIX + name, doc, labels=["vm", *labels])

        up = gauge("up", "1 if this VM's QMP answered the last measurement (measured, or refused), 0 if it could "
                   "not be reached", [])
        refused = gauge("measurement_refused", "1 if its QEMU refused the last measurement (someone else measures "
                        "or migrates it), else 0", [])
        rate = gauge("dirty_rate_bytes_per_second", "dirty rate, fitted to dirty(t) (libvirt: "
                     "dirtyrate.megabytes_per_second x 2^20)", ["mode"])
        pages = gauge("dirty_pages", "unique pages dirtied within a window of window_seconds, as measured",
                      ["window_seconds"])
        at_downtime = gauge("dirty_pages_at_downtime", "dirty(downtime): the pages one downtime window dirties",
                            ["downtime_seconds"])
        vcpu = gauge("vcpu_dirty_rate_bytes_per_second", "per-vCPU dirty rate where the QEMU reports it "
                     "(dirty-ring mode; libvirt: dirtyrate.vcpu.N.megabytes_per_second x 2^20)", ["vcpu"])
        predicted = gauge("migration_predicted_seconds", "predicted total pre-copy migration time "
                          "(NaN where it does not converge)", ["bandwidth_bits_per_second", "downtime_seconds"])
        converges = gauge("migration_converges", "1 if pre-copy is predicted to converge without aid",
                          ["bandwidth_bits_per_second", "downtime_seconds"])
        throttle = gauge("advised_auto_converge_percent", "the CPU throttle auto-converge would reach to converge "
                         "(absent where it would not, or none is needed)",
                         ["bandwidth_bits_per_second", "downtime_seconds"])
        quota = gauge("advised_dirty_limit_bytes_per_second", "the largest per-vCPU dirty limit that converges "
                      "(libvirt: dirtylimit.vcpu.N.limit x 2^20)", ["bandwidth_bits_per_second", "downtime_seconds"])
        age = gauge("last_measurement_age_seconds", "seconds since the last successful measurement ended", [])
        stamp = gauge("last_measurement_timestamp_seconds", "when it ended, Unix time (libvirt: "
                      "dirtyrate.calc_start_time, which is its start)", [])
        took = gauge("measurement_duration_seconds", "what the last measurement took (its windows; libvirt: "
                     "dirtyrate.calc_period)", [])
        cost = gauge("guest_rate_ratio", "the guest's write rate in the last window against its rate asked, where "
                     "the server reports it (kvmharness qmp's x-guest-rate): what measuring cost the guest", [])
        after = gauge("measurement_after_effect_seconds", "how long the last measurement slows the guest after its "
                      "windows, estimated: in an exact mode on a shadow-paging host every page stays write-protected "
                      "until its next write (7.5 s per GiB, docs/results/measuring-cost); page-sampling 0", [])
        ram = gauge("ram_bytes", "guest RAM", [])
        zeros = gauge("zero_pages", "the guest's zero pages, estimated from the QEMU process on this host", [])
        total = CounterMetricFamily(PREFIX + "measurements", "measurements made, by result", labels=["vm", "result"])
        now = time.time()
        counts = self.fleet.counts()
        for address, latest in self.fleet.readings().items():
            good = self.fleet.vms[address].good
            up.add_metric([address], 1.0 if latest is not None and (latest.up or latest.refused) else 0.0)
            refused.add_metric([address], 1.0 if latest is not None and latest.refused else 0.0)
            for result, n in counts[address].items():
                total.add_metric([address, result], n)
            if good is None:
                continue
            rate.add_metric([address, good.mode], good.rate_pages * PAGE)
            for ms, p in good.windows:
                pages.add_metric([address, f"{ms / 1000:g}"], p)
            at_downtime.add_metric([address, f"{self.fleet.downtime:g}"], good.dirty_pages_at_downtime)
            for k, mib in enumerate(good.vcpu_rates):
                vcpu.add_metric([address, str(k)], mib * 2**20)
            for link, v in zip(self.fleet.links, good.links):
                labels = [address, *_labels(link, self.fleet.downtime)]
                predicted.add_metric(labels, v.total_seconds if v.converges else math.nan)
                converges.add_metric(labels, 1.0 if v.converges else 0.0)
                if not v.converges and v.throttle_pct is not None:
                    throttle.add_metric(labels, v.throttle_pct)
                if not v.converges and v.dirty_limit_mb_s is not None:
                    quota.add_metric(labels, v.dirty_limit_mb_s * 2**20)
            age.add_metric([address], now - good.at)
            stamp.add_metric([address], good.at)
            took.add_metric([address], good.seconds)
            if good.guest_rate_share is not None:
                cost.add_metric([address], good.guest_rate_share)
            after.add_metric([address], after_effect_seconds(good.mode, good.ram_bytes))
            ram.add_metric([address], good.ram_bytes)
            zeros.add_metric([address], good.zero_pages)
        yield from (up, refused, rate, pages, at_downtime, vcpu, predicted, converges, throttle, quota, age, stamp,
                    took, cost, after, ram, zeros, total)


def serve(fleet, host, port, token=None):
    """An HTTP server (its own threads, one per scrape) answering GET
    /metrics with the fleet's metrics; returns it, serving.  With `token`,
    a scrape without `Authorization: Bearer <token>` gets 401."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet))
    expected = b"Bearer " + token if token is not None else None

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if expected is not None:
                given = self.headers.get("Authorization", "").encode("utf-8", "replace")
                if not hmac.compare_digest(given, expected):
                    return self._reply(401, b"a bearer token is required\n", "text/plain")
            if self.path.split("?")[0] != "/metrics":
                return self._reply(404, b"metrics are at /metrics\n", "text/plain")
            self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _reply(self, code, body, kind):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # a scrape every 15 s is no news
            pass

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": family,
                                                                        "daemon_threads": True})
    server = server_class((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="exporter", daemon=True).start()
    return server
