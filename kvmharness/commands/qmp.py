"""`qmp`: run the VM and serve QMP (and HMP through human-monitor-command).

Signals are handled the asyncio way while serving (loop.add_signal_handler):
SIGINT, SIGTERM and SIGHUP end the serving loop with a SHUTDOWN event, then
the VM is torn down and the command exits 128 + the signal's number, the
unix socket removed on every path.  A socket left behind by a server that is
gone is replaced; one a live server still answers on is refused.
"""

import os
import signal

from ..errors import HarnessError, Signalled, UsageError
from .args import add_aid_arguments, add_vm_arguments, path, positive_int, tcp_address

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


def add_arguments(p):
    """A VM's arguments, where to serve, the secret, and the dirty limit."""
    add_vm_arguments(p)
    p.add_argument("--socket", type=path, help="unix socket path to serve on (created with mode 0600)")
    p.add_argument("--tcp", type=tcp_address, help="also serve on TCP, [HOST:]PORT (host defaults to 127.0.0.1)")
    p.add_argument("--dirty-ring-size", type=positive_int,
                   help="create the VM with a dirty ring of this many entries per vCPU "
                        "(offers mode dirty-ring instead of dirty-bitmap, as in QEMU)")
    p.add_argument("--secret-file", type=path, help="shared secret that QMP migrate's destinations must prove")
    add_aid_arguments(p, throttle=False)
    p.set_defaults(settle=0.0)


def claim_socket_path(path):
    """Make `path` free for our unix socket, or say why it cannot be."""
    import socket
    import stat

    if not path:
        raise UsageError("--socket needs a path")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise UsageError(f"--socket path is longer than {MAX_SOCKET_PATH} bytes, the most a unix socket takes")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"{path} exists and is not a socket; remove it or choose another path")
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(2)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: its server is gone
            return
        except OSError as e:
            raise UsageError(f"{path} exists and cannot be checked ({e.strerror or e}); remove it") from None
    raise UsageError(f"{path}: a server is listening there already")


def main(args):
    import asyncio

    from ..migration.auth import load_secret
    from ..qmp import QmpServer
    from .measuring import measurement_vm, ring_size_for

    if args.socket is None and args.tcp is None:
        raise UsageError("say where to serve: --socket PATH and/or --tcp [HOST:]PORT")
    secret = load_secret(args.secret_file) if args.secret_file is not None else None
    if args.socket is not None:
        claim_socket_path(args.socket)
    caught = []

    async def serve(vm, monitor):
        qmp = QmpServer(vm, monitor, secret, args.dirty_limit_period)
        if args.dirty_limit:
            qmp.context.dirty_limit.set(args.dirty_limit)
        server = await qmp.start(args.socket, args.tcp)
        loop = asyncio.get_running_loop()
        for signo in SIGNALS:
            loop.add_signal_handler(signo, lambda s=signo: (caught.append(s), server.request_quit("host-signal")))
        where = [f"unix:{args.socket}"] if args.socket is not None else []
        if args.tcp:
            host = f"[{args.tcp[0]}]" if ":" in args.tcp[0] else args.tcp[0]  # QEMU's spelling: tcp:[::1]:PORT
            where.append(f"tcp:{host}:{server.tcp_port()}")
        print(f"QMP listening on {', '.join(where)}", flush=True)
        await server.serve_until_quit()

    previous = {signo: signal.getsignal(signo) for signo in SIGNALS}
    try:
        with measurement_vm(args, ring_size_for(args)) as (vm, monitor):
            try:
                asyncio.run(serve(vm, monitor))
            finally:
                for signo, handler in previous.items():  # asyncio leaves SIG_DFL behind
                    signal.signal(signo, handler)
            if caught:
                raise Signalled(caught[0])
    except OSError as e:
        raise HarnessError(f"cannot serve QMP: {e.strerror or e}") from None
    finally:
        if args.socket is not None and os.path.exists(args.socket):
            os.unlink(args.socket)
    return 0
