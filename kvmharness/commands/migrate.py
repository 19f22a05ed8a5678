"""`migrate`: the source end of a live migration of the micro-VM
(migrate_listen.py is the destination's)."""

import sys

from .. import units
from ..errors import HarnessError, UsageError
from .args import add_vm_arguments, arg_type, path, positive_int, tcp_address


def parse_parameter(text):
    """'NAME=VALUE' -> (name, int or bool), as migrate-set-parameters takes it."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(f"invalid parameter {text[:60]!r}: use NAME=VALUE")
    if value in ("true", "false"):
        return name, value == "true"
    if not value.isascii() or not value.isdigit():
        raise UsageError(f"invalid value for {name[:40]}: {value[:40]!r} (a whole number, or true/false)")
    return name, int(value)


def add_arguments(p):
    """A VM's arguments, where it goes, and how its migration is run and checked."""
    add_vm_arguments(p)
    p.add_argument("--to", type=tcp_address, required=True, help="destination HOST:PORT")
    p.add_argument("--downtime", type=arg_type(units.parse_duration), default=0.3,
                   help="allowed downtime (default 300ms)")
    p.add_argument("--max-iterations", type=positive_int, default=30)
    p.add_argument("--bandwidth", type=arg_type(units.parse_bandwidth),
                   help="cap the migration's own sending rate (default: as fast as the link goes)")
    p.add_argument("--secret-file", type=path, help="shared secret the destination must prove (see migrate-listen)")
    p.add_argument("--verify", choices=["sent", "full"], default="sent",
                   help="sent (default): every page hashed as it is sent and received, nothing added to the "
                        "downtime; full: all of RAM hashed with the vCPUs stopped, which also proves the "
                        "dirty log missed no page")
    p.add_argument("--capability", choices=["auto-converge", "dirty-limit"],
                   help="QEMU's convergence aid: auto-converge (CPU throttling) or dirty-limit (needs the dirty "
                        "ring: --dirty-ring-size); QEMU's trigger turns it on")
    p.add_argument("--parameter", action="append", default=[], type=arg_type(parse_parameter), metavar="NAME=VALUE",
                   help="a QEMU migration parameter, e.g. cpu-throttle-initial=30, cpu-throttle-tailslow=true, "
                        "vcpu-dirty-limit=50, x-vcpu-dirty-limit-period=100 (repeatable)")
    p.add_argument("--dirty-ring-size", type=positive_int,
                   help="create the VM with a dirty ring of this many entries per vCPU (migration then reads "
                        "the ring, as QEMU does with one)")
    p.add_argument("--timeline", type=path, metavar="PNG", help="plot the guest's writes per 10 ms over the migration")
    p.add_argument("--predict-link", type=arg_type(units.parse_bandwidth),
                   help="first predict the migration over a link of this bandwidth (dirty-bitmap dirty(t)), "
                        "then migrate and report both")
    p.set_defaults(settle=0.2)


def main(args):
    import dataclasses
    import json
    import socket

    from ..migration import parameters as mp
    from ..migration.auth import load_secret
    from ..migration.model import Link, simulate_precopy
    from ..migration.predict import predict_for
    from ..migration.source import Aid, migrate_out
    from ..migration.timeline import plot_timeline
    from .measuring import measurement_vm

    secret = load_secret(args.secret_file) if args.secret_file is not None else None
    caps = {args.capability: True} if args.capability else {}
    try:
        params = mp.merged(mp.defaults(), dict(args.parameter))
        mp.check_capabilities(caps, bool(args.dirty_ring_size))
    except mp.ParameterError as e:
        raise UsageError(str(e)) from None
    aid = Aid(args.capability, mp.throttle_parameters(params))
    with measurement_vm(args, args.dirty_ring_size) as (vm, _):
        prediction = None
        if args.predict_link:
            link = Link(args.predict_link)
            mode = "dirty-ring" if vm.ring is not None else "dirty-bitmap"  # KVM offers one or the other
            measured, verdicts = predict_for(vm, [link], [args.downtime], mode, args.max_iterations)
            curve, prediction = measured.curve, verdicts[(link, args.downtime)]
            if aid.name:  # the model runs the aid as the source will, with the same trigger and parameters
                prediction = dataclasses.replace(prediction, model=simulate_precopy(
                    curve, link, args.downtime, args.max_iterations, switch_seconds=prediction.switch_seconds,
                    zero_pages=measured.zero_pages, aid=aid.name, params=aid.params, vcpus=args.vcpus))
        # Connect once the prediction is made: a destination drops a peer that
        # stays silent for 10 s (auth.py), and measuring the curve takes seconds.
        try:
            sock = socket.create_connection(args.to, timeout=30)
        except OSError as e:
            raise HarnessError(f"cannot connect to {args.to[0]}:{args.to[1]}: {e.strerror or e}") from None
        with sock:
            sock.settimeout(None)
            try:
                report = migrate_out(vm, sock, args.downtime, args.max_iterations,
                                     args.bandwidth / 8 if args.bandwidth else None, secret, args.verify, aid)
            except OSError as e:
                raise HarnessError(f"migration failed, the source guest keeps running: {e}") from None
    if args.timeline:
        plot_timeline(report, args.timeline)
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
        unit = "%" if report.aid == "auto-converge" else " MB/s"
        for i, it in enumerate(report.iterations):
            level = f", {report.aid} {report.levels[i]}{unit}" if report.aid and report.levels[i] else ""
            print(f"iteration {i}: {it.pages} pages, {it.bytes / 2**20:.1f} MiB, {it.seconds:.3f} s{level}")
        if report.aid:
            print(f"{report.aid}: " + ("; ".join(f"{s.level}{unit} from {s.seconds:.2f} s (after iteration "
                                                  f"{s.iteration})" for s in report.throttle_steps)
                                        or "never triggered"))
        print(f"{report.reason}; final {report.final_pages} pages; total {report.total_seconds:.3f} s; "
              f"downtime {report.downtime_seconds * 1e3:.1f} ms"
              + (f" (of which hashing all of RAM for the full check: {report.hash_seconds * 1e3:.1f} ms)"
                 if args.verify == "full" else "")
              + f"; verified {report.verified} ({args.verify})")
    if report.unconfirmed:  # said on stderr too: a script reading only the exit status and stderr must see it
        print(f"kvmharness migrate: {report.reason}; this process ends, and the paused guest with it",
              file=sys.stderr)
    return 0 if report.converged else 1  # the guest did not move (it runs on here), or its move is unconfirmed

