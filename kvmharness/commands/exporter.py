"""`exporter`: the fleet's migratability as Prometheus metrics."""

import sys

from .. import units
from ..errors import HarnessError, UsageError
from .args import add_fleet_arguments, arg_type, fleet_of, path


def add_arguments(p):
    """Where to serve, the token beyond loopback, and the fleet."""
    p.add_argument("--listen", type=arg_type(units.parse_tcp_address), default=("127.0.0.1", 9477),
                   metavar="[HOST:]PORT", help="where /metrics is served (default 127.0.0.1:9477)")
    p.add_argument("--secret-file", type=path,
                   help="a bearer token scrapers must send (mode 600; required beyond loopback)")
    add_fleet_arguments(p)


def main(args):
    """Serve until SIGINT / SIGTERM / SIGHUP (or --duration): exit 0, or
    128 + the signal, with every VM's QMP session closed."""
    import time

    from ..migration.auth import is_loopback, load_secret
    from ..watch.metrics import serve

    fleet = fleet_of(args)
    host, port = args.listen
    token = load_secret(args.secret_file) if args.secret_file is not None else None
    if token is None and not is_loopback(host):
        raise UsageError(f"serving metrics on {host} takes --secret-file (a bearer token): the metrics name "
                         f"every VM and its QMP address")
    try:
        server = serve(fleet, host, port, token)
    except OSError as e:
        raise HarnessError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    shown = f"[{host}]" if ":" in host else host
    try:
        fleet.start()  # before the address is shown: whoever reads it may signal us at once
        print(f"metrics on http://{shown}:{server.server_address[1]}/metrics for {len(args.qmp)} VM(s)",
              flush=True, file=sys.stdout)
        if args.duration:
            time.sleep(args.duration)
        else:
            while True:
                time.sleep(3600)
    finally:
        fleet.stop(timeout=30)
        server.shutdown()
        server.server_close()
    return 0
