"""`qmp`: run the VM and serve QMP (and HMP through human-monitor-command)."""

import asyncio
import os

from ..errors import HarnessError, UsageError
from ..qmp import QmpServer
from .measuring import measurement_vm


def main(args):
    if args.socket is None and args.tcp is None:
        raise UsageError("say where to serve: --socket PATH and/or --tcp [HOST:]PORT")
    if args.socket is not None and os.path.exists(args.socket):
        raise UsageError(f"{args.socket} already exists; remove it or choose another path")

    async def serve(vm, monitor):
        server = await QmpServer(vm, monitor).start(args.socket, args.tcp)
        where = [f"unix:{args.socket}"] if args.socket else []
        if args.tcp:
            where.append(f"tcp:{args.tcp[0]}:{server.tcp_port()}")
        print(f"QMP listening on {', '.join(where)}", flush=True)
        await server.serve_until_quit()

    try:
        with measurement_vm(args, args.dirty_ring_size) as (vm, monitor):
            asyncio.run(serve(vm, monitor))
    except OSError as e:
        raise HarnessError(f"cannot serve QMP: {e.strerror or e}") from None
    finally:
        if args.socket is not None and os.path.exists(args.socket):
            os.unlink(args.socket)
    return 0
