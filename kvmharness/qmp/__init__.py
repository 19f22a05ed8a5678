"""QMP for kvmharness: the server, its framing, QAPI-style argument checks,
the commands and the HMP commands behind human-monitor-command."""

from .server import QmpServer

__all__ = ["QmpServer"]
