"""QMP's return types, built from the domain's typed state: DirtyRateInfo
(query-dirty-rate, with our x- fields) and MigrationInfo (query-migrate).
Member names and semantics are QEMU's (qapi/migration.json); this is the
only place that knows them."""

import time

from ..dirtyrate import modes
from ..microvm.guest import PAGE_SIZE
from ..dirtyrate.monitor import TIME_UNITS, DirtyRateStatus


def convert_time(ms, unit):
    """calc-time in `unit`, rounded down, as QEMU's convert_time_unit."""
    return ms // TIME_UNITS[unit]


def dirty_rate_info(state, calc_time_unit="second"):
    """DirtyRateInfo for a DirtyRateMonitor's state(), in `calc_time_unit`."""
    request, result = state.request, state.result
    if request is None:
        return {"status": state.status.value, "start-time": 0, "calc-time": 0,
                "calc-time-unit": calc_time_unit, "sample-pages": 0, "mode": modes.DEFAULT}
    info = {
        "status": state.status.value,
        "start-time": request.start_time,
        "calc-time-unit": calc_time_unit,
        "mode": request.mode,
    }
    if result is None:
        info["calc-time"] = convert_time(request.calc_time_ms, calc_time_unit)
        info["sample-pages"] = request.sample_pages
        if state.status is DirtyRateStatus.MEASURED:  # failed: QEMU leaves dirty-rate at -1
            info["dirty-rate"] = -1
            info["x-error"] = str(state.error)
        return info
    return info | _result_fields(result, calc_time_unit)


def _result_fields(result, calc_time_unit):
    """The measured part of DirtyRateInfo, plus the x- fields."""
    fields = {
        "calc-time": convert_time(result.window_us // 1000, calc_time_unit),
        "sample-pages": result.sample_pages,
        "dirty-rate": result.dirty_rate,
    }
    if result.mode == "dirty-ring":  # QEMU reports per-vCPU rates in this mode only
        fields["vcpu-dirty-rate"] = [{"id": v.id, "dirty-rate": v.dirty_rate} for v in result.vcpus]
    exact = modes.BY_NAME[result.mode].exact
    fields.update({
        "x-dirty-pages": int(result.dirty_pages) if exact else round(result.dirty_pages, 1),
        "x-dirty-events": result.dirty_events,
        "x-guest-writes": result.guest_writes,
        "x-guest-rate": _guest_rate(result),
        "x-window-us": result.window_us,
        "x-expected-rate": round(result.expected_rate, 3),
        "x-confidence": None if result.confidence is None
        else {"low": round(result.confidence[0], 3), "high": round(result.confidence[1], 3), "level": 0.95},
        "x-overhead": result.overhead,
        "x-vcpu": [
            {"id": v.id, "guest-writes": v.guest_writes, "dirty-pages": v.dirty_pages,
             "dirty-events": v.dirty_events, "asked-wps": v.asked_wps}
            for v in result.vcpus
        ],
        "x-edges": {side: [list(pair) for pair in pairs] for side, pairs in result.edges.items()},
    })
    if result.samples is not None:
        fields["x-samples"] = result.samples
        fields["x-dirty-samples"] = result.dirty_samples
    fields["x-periods"] = [_period(p, exact) for p in result.periods]
    if result.zero_pages is not None:
        fields["x-zero-pages"] = int(result.zero_pages) if exact else round(result.zero_pages, 1)
    if result.log_stop is not None:
        fields["x-log-stop"] = result.log_stop
    return fields


def _guest_rate(result):
    """The guest's accesses/s in the window against the rate its writers
    were asked for (null when one writes unlimited): what measuring cost it
    while the window was open."""
    ratio = result.ratio_to_asked
    return {"wps": round(result.guest_wps, 1), "asked-wps": result.asked_wps,
            "ratio": None if ratio is None else round(ratio, 4)}


def _period(p, exact):
    """One point of the dirty curve (the seed author's series; not in QEMU)."""
    out = {"period": p.period_ms,
           "dirty-pages": int(p.dirty_pages) if exact else round(p.dirty_pages),
           "expected-pages": round(p.expected_pages),
           "x-window-us": p.window_us,
           "x-end-edge": [list(pair) for pair in p.end]}
    if p.confidence_pages is not None:
        out["x-confidence-pages"] = {"low": round(p.confidence_pages[0], 1),
                                     "high": round(p.confidence_pages[1], 1), "level": 0.95}
    return out


def migration_info(job):
    """query-migrate's MigrationInfo for a MigrationJob, with QEMU 10's
    members for each status: none before any migration (QEMU answers an
    empty object), the status alone in setup, then the times and the RAM
    counters; error-desc and the aids' members where QEMU has them."""
    if job.status == "none":
        return {}
    info = {"status": job.status}
    progress, report = job.progress, job.report
    if job.status == "setup" or progress.writer is None:
        if job.error:
            info["error-desc"] = job.error
        return info
    elapsed = report.total_seconds if report is not None else time.monotonic() - job.started
    info["total-time"] = round(elapsed * 1e3)
    info["setup-time"] = round(progress.setup_seconds * 1e3)
    if report is None:
        info["expected-downtime"] = round(progress.expected_downtime * 1e3)
    elif report.converged:
        info["downtime"] = round(report.downtime_seconds * 1e3)
    info["ram"] = _ram_info(job, progress, report, elapsed)
    if report is not None:
        info["x-report"] = report.to_json()
    if job.error:
        info["error-desc"] = job.error
    if job.cpu_throttle is not None and job.cpu_throttle.active:
        info["cpu-throttle-percentage"] = job.cpu_throttle.percentage
    limit = job.dirty_limit
    if job.capabilities.get("dirty-limit") and limit is not None and limit.in_service:
        info["dirty-limit-throttle-time-per-round"] = limit.throttle_time_per_round()
        info["dirty-limit-ring-full-time"] = limit.ring_full_time()
    return info


def _ram_info(job, progress, report, elapsed):
    """MigrationStats, from the stream's counters: zero pages are QEMU's
    "duplicate", pages sent with data its "normal"; what we do not do
    (multifd, postcopy, zero-copy) is 0."""
    w = progress.writer
    sent = w.bytes_sent
    done = report is not None and report.converged
    precopy = progress.precopy_bytes if report is not None else sent
    return {
        "transferred": sent, "remaining": 0 if done else progress.remaining_pages * PAGE_SIZE,
        "total": job.vm.config.mem, "duplicate": w.zero_pages, "normal": w.normal_pages,
        "normal-bytes": w.normal_pages * PAGE_SIZE, "dirty-pages-rate": round(progress.dirty_pages_rate),
        "mbps": round(sent * 8 / max(elapsed, 1e-6) / 1e6, 3),
        "dirty-sync-count": len(report.iterations) + 1 if report is not None else progress.syncs,
        "postcopy-requests": 0, "page-size": PAGE_SIZE, "multifd-bytes": 0,
        "pages-per-second": round((w.zero_pages + w.normal_pages) / max(elapsed, 1e-6)),
        "precopy-bytes": precopy, "downtime-bytes": sent - precopy, "postcopy-bytes": 0,
        "dirty-sync-missed-zero-copy": 0,
    }


def vcpu_dirty_limit_info(limits):
    """query-vcpu-dirty-limit's [DirtyLimitInfo], plus our x- fields."""
    return [{"cpu-index": v.cpu_index, "limit-rate": v.limit_rate, "current-rate": v.current_rate,
             "x-throttle-us-per-full": v.throttle_us_per_full,
             "x-throttled-seconds": round(v.throttled_seconds, 6)} for v in limits]
