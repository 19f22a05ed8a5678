"""`migrate-listen`: the destination end of a live migration of the
micro-VM (migrate.py is the source's)."""

import sys
import time

from .. import units
from ..errors import HarnessError, UsageError
from .args import BACKING_HELP, arg_type, parse_backing, path


def add_arguments(p):
    """Where to listen, the secret a source must prove, and the resumed guest's backing and run."""
    p.add_argument("--port", type=arg_type(units.parse_port), required=True)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; beyond loopback --secret-file is required)")
    p.add_argument("--secret-file", type=path,
                   help="file holding a shared secret (16+ bytes, mode 600) that the source must prove by "
                        "HMAC-SHA256 challenge-response; peers without it are refused and the listener goes on")
    p.add_argument("--run-after", type=arg_type(units.parse_duration), default=1.0,
                   help="how long the resumed guest runs before the report (default 1s)")
    p.add_argument("--backing", type=arg_type(parse_backing), default="anonymous",
                   help=BACKING_HELP + "; the memslots are the source's")
    p.add_argument("--json", action="store_true")


def main(args):
    """Accept connections until one delivers a guest.  A connection that
    fails the handshake (no or the wrong secret, garbage, a port scanner's
    empty connect, silence, a trickle) is refused, said on stderr, and the
    listener goes on; handshakes run side by side (listener.py), so a slow
    peer does not hold a legitimate one.  Once an authenticated source has
    begun, its migration's outcome ends the command (0 resumed here, 1
    refused: the guest then runs on at the source)."""
    import json
    import socket

    from ..migration.auth import is_loopback, load_secret
    from ..migration.destination import receive
    from ..migration.listener import HandshakeListener
    from ..peer import printable

    secret = load_secret(args.secret_file) if args.secret_file is not None else None
    if secret is None and not is_loopback(args.host):
        raise UsageError(f"listening on {args.host} takes --secret-file: a migration peer supplies guest "
                         f"code and memory, so beyond loopback it must prove a shared secret")
    try:
        listener = socket.create_server((args.host, args.port), reuse_port=False,
                                        family=socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    except OSError as e:
        raise HarnessError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None

    def refused(peer, e):
        print(f"refused a connection from {peer[0]}: {printable(str(e))}", file=sys.stderr, flush=True)

    with listener, HandshakeListener(listener, secret, refused) as handshakes:
        print(f"waiting for a migration on {args.host}:{listener.getsockname()[1]}"
              f"{' (shared secret required)' if secret else ''}", file=sys.stderr, flush=True)
        conn, _ = handshakes.accept()
        with conn:
            arrival = receive(conn, args.backing)
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
