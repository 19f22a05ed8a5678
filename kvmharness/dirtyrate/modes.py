"""The one table of measuring modes, as the KVM selftests keep one table of
dirty-log modes (log_modes[] in dirty_log_test.c): each mode's name (QEMU's
DirtyRateMeasureMode), whether it needs a VM created with a dirty ring, its
HMP flag, whether it counts every page or estimates, and its tracker.

As in QEMU, a VM created with a dirty ring offers dirty-ring and not
dirty-bitmap (KVM refuses bitmap logging once a ring is enabled), a VM
without one the other way round; page-sampling works on both.
"""

from dataclasses import dataclass

from .trackers.bitmap import DirtyBitmapTracker
from .trackers.ring import DirtyRingTracker
from .trackers.sampling import PageSamplingTracker


@dataclass(frozen=True)
class Mode:
    name: str
    ring: bool | None  # the VM must have a dirty ring (True), must not (False), either (None)
    hmp_flag: str | None  # calc_dirty_rate's option for it
    exact: bool  # counts every dirtied page (False: estimates from samples)
    tracker: object  # tracker(vm, sample_pages, log_stop) -> a tracker (trackers/__init__.py)

    def enabled_on(self, has_ring):
        return self.ring is None or self.ring == has_ring


MODES = (  # QEMU's order of DirtyRateMeasureMode
    Mode("page-sampling", None, None, False, lambda vm, sample_pages, log_stop: PageSamplingTracker(vm, sample_pages)),
    Mode("dirty-ring", True, "-r", True, lambda vm, sample_pages, log_stop: DirtyRingTracker(vm, log_stop)),
    Mode("dirty-bitmap", False, "-b", True, lambda vm, sample_pages, log_stop: DirtyBitmapTracker(vm, log_stop)),
)
BY_NAME = {m.name: m for m in MODES}
NAMES = tuple(BY_NAME)
DEFAULT = "page-sampling"  # QEMU's default


def enabled_modes(has_ring):
    """The modes a VM with (or without) a dirty ring offers, in table order."""
    return tuple(m.name for m in MODES if m.enabled_on(has_ring))


def needs_ring(name):
    return BY_NAME[name].ring is True
