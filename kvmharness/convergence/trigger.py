"""When a migration turns its aid on, and how far: QEMU's rule
(migration/ram.c: migration_bitmap_sync, migration_trigger_throttle,
mig_throttle_guest_down, migration_dirty_limit_guest), as a pure state
machine that the source (migration/source.py) and the model
(migration/model.py) both run, so that a prediction's throttle levels are
the ones the real migration would take.

At every dirty-log sync the pages newly dirty are added to the period; once
more than 1 s has passed since the period began, the period is judged: if
the bytes it dirtied exceed throttle-trigger-threshold % of the bytes
transferred in it, and that is the second such period (the count resets
when it fires), then
* auto-converge: throttle at cpu-throttle-initial %, or raise the throttle
  by cpu-throttle-increment (with cpu-throttle-tailslow: by no more than
  what would bring the dirty bytes down to the threshold), up to
  max-cpu-throttle;
* dirty-limit: limit every vCPU to vcpu-dirty-limit MB/s (once; again only
  if the parameter changed).
"""

from dataclasses import dataclass

from ..microvm.guest import PAGE_SIZE
from .cpu_throttle import PCT_MAX, PCT_MIN

PERIOD_SECONDS = 1.0  # "more than 1 second" between judgements
AIDS = ("auto-converge", "dirty-limit")


@dataclass(frozen=True)
class ThrottleParameters:
    """The migration parameters that steer the aids, QEMU's defaults
    (migration/options.c)."""

    throttle_trigger_threshold: int = 50  # %
    cpu_throttle_initial: int = 20
    cpu_throttle_increment: int = 10
    cpu_throttle_tailslow: bool = False
    max_cpu_throttle: int = 99
    vcpu_dirty_limit: int = 1  # MB/s
    x_vcpu_dirty_limit_period: int = 1000  # ms


@dataclass(frozen=True)
class ThrottleStep:
    """What a judgement decided: the aid and its new level (% or MB/s)."""

    aid: str
    level: int


def next_cpu_throttle(now_pct, bytes_dirty, bytes_threshold, p):
    """QEMU's mig_throttle_guest_down: the next throttle percentage."""
    if not now_pct:
        return max(PCT_MIN, min(PCT_MAX, p.cpu_throttle_initial))
    if p.cpu_throttle_tailslow:
        cpu_now = 100 - now_pct
        cpu_ideal = int(cpu_now * (bytes_threshold / bytes_dirty))
        increment = min(cpu_now - cpu_ideal, p.cpu_throttle_increment)
    else:
        increment = p.cpu_throttle_increment
    return max(PCT_MIN, min(now_pct + increment, p.max_cpu_throttle, PCT_MAX))


class ThrottleTrigger:
    """Feed it every sync (sync()); it returns a ThrottleStep when the aid
    must change, else None."""

    def __init__(self, aid, params=ThrottleParameters()):
        if aid not in AIDS + (None,):
            raise ValueError(f"unknown aid {aid!r}")
        self.aid = aid
        self.params = params
        self.level = 0  # % (auto-converge) or MB/s (dirty-limit) now in force; 0: none
        self._period_start = None
        self._dirty_pages = 0
        self._bytes_at_start = 0
        self._high = 0

    def sync(self, now, new_dirty_pages, bytes_transferred):
        """A sync at `now` (seconds) found `new_dirty_pages`; `bytes_transferred`
        so far in all."""
        if self._period_start is None:  # the first sync opens the first period
            self._period_start, self._bytes_at_start = now, bytes_transferred
            return None
        self._dirty_pages += new_dirty_pages
        if now <= self._period_start + PERIOD_SECONDS:
            return None
        step = self._judge(bytes_transferred)
        self._period_start, self._dirty_pages, self._bytes_at_start = now, 0, bytes_transferred
        return step

    def _judge(self, bytes_transferred):
        p = self.params
        bytes_dirty = self._dirty_pages * PAGE_SIZE
        bytes_threshold = (bytes_transferred - self._bytes_at_start) * p.throttle_trigger_threshold // 100
        if bytes_dirty <= bytes_threshold:
            return None
        self._high += 1
        if self._high < 2:
            return None
        self._high = 0
        if self.aid == "auto-converge":
            self.level = next_cpu_throttle(self.level, bytes_dirty, bytes_threshold, p)
            return ThrottleStep(self.aid, self.level)
        if self.aid == "dirty-limit" and self.level != p.vcpu_dirty_limit:
            self.level = p.vcpu_dirty_limit
            return ThrottleStep(self.aid, self.level)
        return None
