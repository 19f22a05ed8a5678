"""`predict`: measure dirty(t) on the running guest and predict whether
pre-copy migration converges over a link, with the seed's rule and a
pre-copy model."""

import json

from .. import units
from ..dirtyrate import modes
from ..errors import UsageError
from ..migration.model import Link
from ..migration.predict import TABLE_BANDWIDTHS, TABLE_DOWNTIMES, predict_for
from .measuring import measurement_vm


def main(args):
    if not 0.05 <= args.downtime <= 60:
        raise UsageError("the downtime must be between 50ms and 60s (the windows calc-dirty-rate can measure)")
    links = [args.bandwidth] + ([b for b in TABLE_BANDWIDTHS if b != args.bandwidth] if args.table else [])
    downtimes = [args.downtime] + ([d for d in TABLE_DOWNTIMES if d != args.downtime] if args.table else [])
    links = [Link(b, args.tcp_overhead) for b in links]
    ring = 0 if modes.needs_ring(args.mode) else None
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
