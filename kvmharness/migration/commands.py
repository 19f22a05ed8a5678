"""Command handlers of `kvmharness predict`, `migrate` and `migrate-listen`
(argument parsing is in kvmharness/cli.py)."""

import json
import socket
import sys
import time

from .. import units
from ..dirtyrate.session import measurement_vm
from ..errors import HarnessError, UsageError
from .destination import migrate_in
from .model import Link
from .predict import TABLE_BANDWIDTHS, TABLE_DOWNTIMES, predict_for
from .source import migrate_out


def cmd_predict(args):
    if not 0.05 <= args.downtime <= 60:
        raise UsageError("the downtime must be between 50ms and 60s (the windows calc-dirty-rate can measure)")
    links = [args.bandwidth] + ([b for b in TABLE_BANDWIDTHS if b != args.bandwidth] if args.table else [])
    downtimes = [args.downtime] + ([d for d in TABLE_DOWNTIMES if d != args.downtime] if args.table else [])
    links = [Link(b, args.tcp_overhead) for b in links]
    ring = 0 if args.mode == "dirty-ring" else None
    with measurement_vm(args, ring) as (vm, _):
        curve, verdicts = predict_for(vm, links, downtimes, args.mode, args.max_iterations)
    main = verdicts[(links[0], args.downtime)]
    table = [verdicts[(link, d)] for link in sorted(links, key=lambda link: link.goodput)
             for d in sorted(downtimes)] if args.table else []
    if args.json:
        out = {"converges": main.model.converges, "mode": args.mode, "mem": args.mem, "wps": args.wps,
               **main.to_json(),
               "curve": [[round(t * 1e3, 3), round(p)] for t, p in curve.points],
               "fitted-pages-per-second": round(curve.rate, 1)}
        if table:
            out["table"] = [v.to_json() for v in table]
        print(json.dumps(out, indent=2))
        return 0
    print(f"dirty(t), {args.mode}: " + ", ".join(f"{t * 1e3:.0f} ms: {p:.0f}" for t, p in curve.points)
          + f" pages (fitted {curve.rate:.0f} pages/s)")
    seed = main.seed
    print(f"seed's rule: {seed['dirty-bytes'] / 2**20:.1f} MiB dirtied in {args.downtime * 1e3:.0f} ms take "
          f"{seed['transfer-seconds'] * 1e3:.1f} ms over {units.format_bandwidth(args.bandwidth)}: "
          f"{'converges' if seed['converges'] else 'does not converge'}")
    m = main.model
    print(f"pre-copy model: {'converges' if m.converges else 'does not converge'} ({m.reason}); "
          f"{len(m.iterations)} iterations, total {m.total_seconds:.2f} s, downtime {m.downtime_seconds * 1e3:.1f} ms")
    if table:
        print()
        print(f"{'bandwidth':>12} {'downtime':>9} {'seed':>6} {'model':>6} {'iters':>5} {'total s':>8} {'down ms':>8}")
        for v in table:
            print(f"{units.format_bandwidth(v.bits_per_second):>12} {v.downtime * 1e3:>7.0f}ms "
                  f"{'yes' if v.seed['converges'] else 'no':>6} {'yes' if v.model.converges else 'no':>6} "
                  f"{len(v.model.iterations):>5} {v.model.total_seconds:>8.2f} {v.model.downtime_seconds * 1e3:>8.1f}")
    return 0


def cmd_migrate(args):
    try:
        sock = socket.create_connection(args.to, timeout=30)
    except OSError as e:
        raise HarnessError(f"cannot connect to {args.to[0]}:{args.to[1]}: {e.strerror or e}") from None
    with sock, measurement_vm(args) as (vm, _):
        sock.settimeout(None)
        prediction = None
        if args.predict_link:
            link = Link(args.predict_link)
            curve, verdicts = predict_for(vm, [link], [args.downtime], max_iterations=args.max_iterations)
            prediction = verdicts[(link, args.downtime)]
        try:
            report = migrate_out(vm, sock, args.downtime, args.max_iterations,
                                 args.bandwidth / 8 if args.bandwidth else None)
        except OSError as e:
            raise HarnessError(f"migration failed, the source guest keeps running: {e}") from None
    if args.json:
        out = report.to_json()
        if prediction is not None:
            out["prediction"] = prediction.to_json()
            out["prediction"]["curve"] = [[round(t * 1e3, 3), round(p)] for t, p in curve.points]
        print(json.dumps(out, indent=2))
    else:
        if prediction is not None:
            m = prediction.model
            print(f"predicted: {'converges' if m.converges else 'does not converge'}, "
                  f"{len(m.iterations)} iterations, total {m.total_seconds:.3f} s, "
                  f"downtime {m.downtime_seconds * 1e3:.1f} ms")
        for i, it in enumerate(report.iterations):
            print(f"iteration {i}: {it.pages} pages, {it.bytes / 2**20:.1f} MiB, {it.seconds:.3f} s")
        print(f"{report.reason}; final {report.final_pages} pages; total {report.total_seconds:.3f} s; "
              f"downtime {report.downtime_seconds * 1e3:.1f} ms (of which hashing every page for the "
              f"check: {report.hash_seconds * 1e3:.1f} ms here, "
              f"{report.destination.get('hash-ms', 0):.1f} ms at the destination); verified {report.verified}")
    if report.destination.get("status") == "refused":
        return 1
    return 0


def cmd_migrate_listen(args):
    try:
        listener = socket.create_server((args.host, args.port), reuse_port=False)
    except OSError as e:
        raise HarnessError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    with listener:
        print(f"waiting for a migration on {args.host}:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
        conn, peer = listener.accept()
    with conn:
        arrival = migrate_in(conn)
    with arrival.vm as vm:
        time.sleep(args.run_after)
        after, schedules = vm.counters(), vm.schedules()
        seconds = time.monotonic() - arrival.resumed_at
        vm.check()
    report = {"status": "resumed", "verified": arrival.verified, "pages-received": arrival.pages_received,
              "resume-counters": list(arrival.resume_counters), "counters-after": after,
              "writes-after-resume": sum(after) - sum(arrival.resume_counters),
              "seconds-after-resume": round(seconds, 6),
              "schedule-dropped-seconds": [round(s.dropped - r.dropped, 6)
                                           for s, r in zip(schedules, arrival.resume_schedules)]}
    print(json.dumps(report, indent=2) if args.json else
          f"resumed, RAM verified: {arrival.verified}; the guest wrote "
          f"{report['writes-after-resume']} times in the {args.run_after:.1f} s after resuming")
    return 0
