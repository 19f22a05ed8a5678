"""A measured window checked against replay (microvm/truth.py): the
verdict the pytest plugin's `dirty_rate` fixture and `kvmharness selftest`
both give, so a host's dirty tracking is judged by one rule.

Exact modes (dirty-bitmap, dirty-ring) must count, in total and per vCPU,
between the pages replayed over the narrowest and the widest reading of the
window's edges.  Page sampling is an estimate: its check is that the 95 %
interval exists and the truth is recorded beside it (one window's interval
misses 5 % of the time, so it is no pass/fail rule).
"""

from dataclasses import dataclass

from ..microvm.truth import replay_window
from . import modes


@dataclass(frozen=True)
class WindowCheck:
    mode: str
    dirty_pages: float  # what the tracker counted
    narrow: int  # replayed unique pages, narrowest reading of the edges
    truth: int  # ... between the edges' middles
    wide: int  # ... widest reading
    per_vcpu: tuple  # (counted, narrow, wide) per vCPU; counted None where the mode has no per-vCPU count
    problems: tuple  # what is wrong, in words; empty: the count is exact

    @property
    def ok(self):
        return not self.problems

    def describe(self):
        return (f"{self.mode}: {self.dirty_pages:.0f} pages, replay {self.narrow}..{self.wide} "
                f"(truth {self.truth})" + ("" if self.ok else ": " + "; ".join(self.problems)))


def check_window(vm, result):
    """Replay `result`'s window on `vm` and judge the count."""
    r = replay_window(vm, result.edges)
    (narrow, narrow_per), (truth, _), (wide, wide_per) = r["narrow"], r["truth"], r["wide"]
    per = tuple((v.dirty_pages, lo, hi) for v, lo, hi in zip(result.vcpus, narrow_per, wide_per))
    problems = []
    if modes.BY_NAME[result.mode].exact:
        if not narrow <= result.dirty_pages <= wide:
            problems.append(f"counted {result.dirty_pages:.0f} pages, replay says {narrow}..{wide}")
        problems += [f"vCPU {k} counted {n}, replay says {lo}..{hi}"
                     for k, (n, lo, hi) in enumerate(per) if n is not None and not lo <= n <= hi]
    elif result.confidence is None:
        problems.append("page sampling gave no confidence interval")
    return WindowCheck(result.mode, result.dirty_pages, narrow, truth, wide, per, tuple(problems))
