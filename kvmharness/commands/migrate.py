"""`migrate` and `migrate-listen`: the two ends of a live migration of the
micro-VM."""

import dataclasses
import json
import socket
import sys
import time

from .measuring import measurement_vm
from ..errors import HarnessError, UsageError
from ..migration.auth import AuthError, is_loopback, load_secret
from ..migration.destination import migrate_in
from ..migration.model import Link, simulate_precopy
from ..migration.predict import predict_for
from ..migration import parameters as mp
from ..migration.source import Aid, migrate_out
from ..migration.timeline import plot_timeline


def main(args):
    secret = load_secret(args.secret_file) if args.secret_file else None
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
    return 0 if report.converged else 1  # the guest did not move: it runs on here


def listen(args):
    """Accept connections until one delivers a guest.  A connection that
    fails the handshake (no or the wrong secret, garbage, a port scanner's
    empty connect, silence) is refused, said on stderr, and the listener
    goes on; once an authenticated source has begun, its migration's
    outcome ends the command (0 resumed here, 1 refused: the guest then
    runs on at the source)."""
    secret = load_secret(args.secret_file) if args.secret_file else None
    if secret is None and not is_loopback(args.host):
        raise UsageError(f"listening on {args.host} takes --secret-file: a migration peer supplies guest "
                         f"code and memory, so beyond loopback it must prove a shared secret")
    try:
        listener = socket.create_server((args.host, args.port), reuse_port=False,
                                        family=socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    except OSError as e:
        raise HarnessError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    with listener:
        print(f"waiting for a migration on {args.host}:{listener.getsockname()[1]}"
              f"{' (shared secret required)' if secret else ''}", file=sys.stderr, flush=True)
        while True:
            conn, peer = listener.accept()
            with conn:
                try:
                    arrival = migrate_in(conn, secret, args.backing)
                    break
                except AuthError as e:
                    print(f"refused a connection from {peer[0]}: {e}", file=sys.stderr, flush=True)
    with arrival.vm as vm:
        time.sleep(args.run_after)
        # the guest ran from some moment between starting_at and resumed_at until some moment between
        # these two readings: a bracket, whatever the host's latency in reading its clock
        t_read = time.monotonic()
        after, schedules = vm.counters(), vm.schedules()
        t_read_end = time.monotonic()
        vm.check()
    report = {"status": "resumed", "verified": arrival.verified, "pages-received": arrival.pages_received,
              "resume-counters": list(arrival.resume_counters), "counters-after": after,
              "writes-after-resume": sum(after) - sum(arrival.resume_counters),
              "seconds-after-resume": round(t_read - arrival.resumed_at, 6),
              "seconds-after-resume-at-most": round(t_read_end - arrival.starting_at, 6),
              "schedule-dropped-seconds": [round(s.dropped - r.dropped, 6)
                                           for s, r in zip(schedules, arrival.resume_schedules)]}
    print(json.dumps(report, indent=2) if args.json else
          f"resumed, RAM verified: {arrival.verified}; the guest wrote "
          f"{report['writes-after-resume']} times in the {args.run_after:.1f} s after resuming")
    return 0
