"""`predict`: measure dirty(t) on the running guest and predict whether
pre-copy migration converges over a link, with the seed's rule and a
pre-copy model."""

import math

from .. import units
from .args import MODE_NAMES, add_vm_arguments, arg_type, check_downtime, path, positive_int


def add_arguments(p):
    """A VM's arguments (or a QMP server's address), the link and the
    downtime, and how dirty(t) is measured."""
    add_vm_arguments(p)
    p.add_argument("--downtime", type=arg_type(units.parse_duration), required=True,
                   help="allowed downtime, e.g. 300ms")
    p.add_argument("--bandwidth", type=arg_type(units.parse_bandwidth), required=True,
                   help="link bandwidth, e.g. 1Gbit/s, 10Gbps, 125MB/s")
    p.add_argument("--mode", choices=MODE_NAMES, default="dirty-bitmap",
                   help="how dirty(t) is measured (default dirty-bitmap: it slows the guest as migration's "
                        "own dirty logging will)")
    p.add_argument("--max-iterations", type=positive_int, default=30)
    p.add_argument("--table", action="store_true", help="verdicts over several bandwidths x downtimes")
    p.add_argument("--no-tcp-overhead", dest="tcp_overhead", action="store_false",
                   help="do not count TCP/IP framing on the link")
    p.add_argument("--curve", choices=["short", "full", "separate"], default="short",
                   help="short (default): measure dirty(t) for a few downtimes (at most 2 s) and extend it with "
                        "a working-set model fitted to it; full: measure the whole first pass (up to 10 s); "
                        "separate: the full curve, one window per point")
    p.add_argument("--qmp", type=path, metavar="SOCKET|HOST:PORT",
                   help="predict a running QEMU VM (or a kvmharness qmp server) instead: dirty(t) from its "
                        "calc-dirty-rate over QMP alone (VM options are then not used)")
    p.set_defaults(settle=0.2, backing=None)


def main(args):
    import json

    from ..dirtyrate import modes
    from ..migration.model import Link
    from ..migration.predict import TABLE_BANDWIDTHS, TABLE_DOWNTIMES, advise, predict_for
    from ..qemu.curve import predict_over_qmp
    from .measuring import measurement_vm, quick_backing

    check_downtime(args.downtime)
    links = [args.bandwidth] + ([b for b in TABLE_BANDWIDTHS if b != args.bandwidth] if args.table else [])
    downtimes = [args.downtime] + ([d for d in TABLE_DOWNTIMES if d != args.downtime] if args.table else [])
    links = [Link(b, args.tcp_overhead) for b in links]
    target = None
    if args.qmp is not None:
        target, measured, verdicts = predict_over_qmp(args.qmp, links, downtimes, args.mode, args.max_iterations,
                                                      "full" if args.curve == "separate" else args.curve)
        vcpus, mode, mem, wps, pattern = target.vcpus, target.mode, target.ram_bytes, None, None
    else:
        ring = 0 if modes.needs_ring(args.mode) else None
        if args.backing is None:
            args.backing, args.prefault = quick_backing(args.prefault, args.write_percent)
        with measurement_vm(args, ring) as (vm, _):
            measured, verdicts = predict_for(vm, links, downtimes, args.mode, args.max_iterations, args.curve)
        vcpus, mode, mem, wps, pattern = args.vcpus, args.mode, args.mem, args.wps, args.pattern
    curve = measured.curve
    main = verdicts[(links[0], args.downtime)]
    advice = advise(curve, links[0], args.downtime, vcpus, max(args.max_iterations, 100),
                    switch_seconds=main.switch_seconds, **measured.model_options)
    bandwidths = sorted({link.bits_per_second for link in links})
    ordered = sorted(downtimes)
    table = [verdicts[(link, d)] for link in sorted(links, key=lambda link: link.goodput)
             for d in ordered] if args.table else []
    if args.json:
        out = {"converges": main.model.converges, "mode": mode, "mem": mem, "wps": wps,
               "pattern": pattern, "backing": None if target else args.backing, **main.to_json(),
               "curve": [[round(t * 1e3, 3), round(p)] for t, p in curve.points],
               **measured.to_json(), "zero-pages": round(measured.zero_pages),
               "fitted-pages-per-second": round(curve.rate, 1), "aids": advice.to_json()}
        if table:
            out["table"] = [v.to_json() for v in table]
        if target:
            out["qmp"] = {"address": target.address, "version": ".".join(map(str, target.version or ())),
                          "millisecond-windows": target.support.millisecond, "windows-ms": list(target.windows_ms),
                          "vcpus": target.vcpus, "notes": list(target.notes),
                          "zero-pages": target.zeros.to_json() if target.zeros else None}
        print(json.dumps(out, indent=2))
        return 0
    if target:
        version = ".".join(map(str, target.version)) if target.version else "unknown version"
        print(f"QMP {target.address}: QEMU {version}, {target.ram_bytes >> 20} MiB, {target.vcpus} vCPU(s)")
        for note in target.notes:
            print(f"  {note}")
    print(f"dirty(t), {mode}, measured in {measured.seconds:.2f} s ({measured.how} curve"
          f"{', over QMP' if target else ''}): " + ", ".join(f"{t * 1e3:.0f} ms: {p:.0f}" for t, p in curve.points)
          + f" pages (fitted {curve.rate:.0f} pages/s); {measured.zero_pages:.0f} zero pages")
    print(f"  {measured.describe()}")
    seed = main.seed
    print(f"seed's rule: {seed['dirty-bytes'] / 2**20:.1f} MiB dirtied in {args.downtime * 1e3:.0f} ms take "
          f"{seed['transfer-seconds'] * 1e3:.1f} ms over {units.format_bandwidth(args.bandwidth)}: "
          f"{'converges' if seed['converges'] else 'does not converge'}")
    m = main.model
    print(f"pre-copy model: {'converges' if m.converges else 'does not converge'} ({m.reason}); "
          f"{len(m.iterations)} iterations, total {m.total_seconds:.2f} s, downtime {m.downtime_seconds * 1e3:.1f} ms")
    print(f"with QEMU's aids (its trigger and defaults; up to {max(args.max_iterations, 100)} iterations): "
          f"{advice.answer}")
    for name, p in (("auto-converge", advice.auto_converge), ("dirty-limit", advice.dirty_limit)):
        level = f"{p.final_level} %" if name == "auto-converge" else f"{advice.dirty_limit_mb_s or 1} MB/s"
        print(f"  {name:13} {'converges' if p.converges else 'does not converge'} at {level}: "
              f"total {p.total_seconds:.2f} s, downtime {p.downtime_seconds * 1e3:.1f} ms, "
              f"guest slowed by {p.slowdown * 100:.0f} % while it migrates")
    if table:
        print()
        print(prediction_table(verdicts, links, ordered, bandwidths))
    return 0


def prediction_table(verdicts, links, downtimes, bandwidths):
    """The seed author's table: a row per bandwidth, a column per downtime
    limit (and unlimited), each cell the predicted total migration time, or
    "-" where pre-copy would not converge."""
    by_bandwidth = {link.bits_per_second: link for link in links}
    heads = ["unlimited" if math.isinf(d) else f"{d * 1e3:g} ms" for d in downtimes]
    lines = [f"{'bandwidth':>12} | " + " | ".join(f"{h:>9}" for h in heads)]
    lines.append("-" * len(lines[0]))
    for bw in bandwidths:
        cells = []
        for d in downtimes:
            m = verdicts[(by_bandwidth[bw], d)].model
            cells.append(f"{m.total_seconds:>8.2f}s" if m.converges else f"{'-':>9}")
        lines.append(f"{units.format_bandwidth(bw):>12} | " + " | ".join(cells))
    return "\n".join(lines)
