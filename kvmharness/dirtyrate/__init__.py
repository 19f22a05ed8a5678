"""The calc-dirty-rate engine: one engine (engine.py), three trackers behind
one small interface (begin / poll / end / count / close, like the KVM
selftests' table of log modes), and QEMU's command semantics (monitor.py)."""

from .monitor import DirtyRateError, DirtyRateMonitor, DirtyRateResult

__all__ = ["DirtyRateMonitor", "DirtyRateResult", "DirtyRateError"]
