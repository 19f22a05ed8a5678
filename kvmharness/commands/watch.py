"""`watch`: keep each VM's migratability current, one live line per VM (or
JSON lines), and plot it on exit."""

import sys

from .args import add_fleet_arguments, fleet_of, path


def add_arguments(p):
    """The fleet, how to show it, and the plot."""
    add_fleet_arguments(p)
    p.add_argument("--json-lines", action="store_true", help="one JSON object per VM per measurement")
    p.add_argument("--plot", type=path, metavar="PNG", help="on exit, plot each VM's dirty rate and verdict")


def main(args):
    """Exit 0 after --duration, 130 / 143 / 129 after SIGINT / SIGTERM /
    SIGHUP (cli.py): either way every VM's thread has ended its
    measurement and closed its QMP session, and the plot is written."""
    import time

    from ..watch import render

    out = sys.stdout
    live = out.isatty() and not args.json_lines
    screen = render.Screen(out)
    fleet = None

    def show(reading):
        if args.json_lines:
            print(render.json_line(reading, fleet.trend(reading.address)), file=out, flush=True)
        elif not live:
            print(render.line(reading, fleet.trend(reading.address)), file=out, flush=True)

    fleet = fleet_of(args, on_reading=show)
    try:
        fleet.start()
        end = time.monotonic() + args.duration if args.duration else None
        while end is None or time.monotonic() < end:
            if live:
                readings = fleet.readings()
                lines = [render.line(r, fleet.trend(a)) if r else f"{a}: measuring..." for a, r in readings.items()]
                screen.draw(lines, f"kvmharness watch: {len(readings)} VM(s), {args.mode} every {args.every:g} s, "
                                   f"downtime {args.downtime * 1e3:g} ms (Ctrl-C ends)")
            time.sleep(min(1.0, end - time.monotonic()) if end else 1.0)
    finally:
        fleet.stop(timeout=30)
        if args.plot:
            render.plot(fleet, args.plot)
    return 0
