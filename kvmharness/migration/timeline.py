"""What the guest saw of its migration: its writes per 10 ms from the start
to the resume, read from the writer's counters (exact counts; only the
instants are the host's), with the iterations and the aid's levels marked,
plotted as QEMU's tests/migration/guestperf plots a guest's progress."""

import threading
import time
from dataclasses import dataclass

SAMPLE_SECONDS = 0.010


@dataclass(frozen=True)
class Timeline:
    """samples: ((seconds since the migration began, writes so far, all
    vCPUs), ...); the last sample is taken at the pause."""

    samples: tuple

    def rates(self):
        """((mid-point seconds, writes/s), ...) between consecutive samples."""
        out = []
        for (t0, w0), (t1, w1) in zip(self.samples, self.samples[1:]):
            if t1 > t0:
                out.append(((t0 + t1) / 2, (w1 - w0) / (t1 - t0)))
        return tuple(out)

    def writes_between(self, t0, t1):
        """Writes from t0 to t1 (seconds since the start), from the samples
        around them (linear between two samples 10 ms apart)."""
        return self._at(t1) - self._at(t0)

    def _at(self, t):
        s = self.samples
        if not s:
            return 0
        if t <= s[0][0]:
            return s[0][1]
        for (a, wa), (b, wb) in zip(s, s[1:]):
            if t <= b:
                return wa + (wb - wa) * (t - a) / (b - a) if b > a else wb
        return s[-1][1]

    def to_json(self):
        return [[round(t, 4), w] for t, w in self.samples]


class TimelineSampler:
    """A thread that reads the writer's counters every 10 ms; stop() at the
    pause (the guest then writes no more here) returns the Timeline."""

    def __init__(self, vm, t_start):
        self.vm = vm
        self.t_start = t_start
        self._samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()

    def _sample(self):
        self._samples.append((time.perf_counter() - self.t_start, self.vm.counter_total()))

    def _run(self):
        self._sample()
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def stop(self):
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5.0)
            self._sample()
        return Timeline(tuple(self._samples))


def plot_timeline(report, path, title=""):
    """A PNG: the guest's writes/s over time (10 ms bins), iteration
    boundaries as dotted lines, the aid's levels as steps on a second axis,
    the downtime shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    rates = report.timeline.rates()
    ax.plot([t for t, _ in rates], [r / 1e3 for _, r in rates], lw=0.8, color="tab:blue",
            label="guest writes (k/s, 10 ms bins)")
    t = 0.0
    for it in report.iterations:
        t += it.seconds
        ax.axvline(t, color="grey", ls=":", lw=0.8)
    pause = report.total_seconds - report.downtime_seconds
    ax.axvspan(pause, report.total_seconds, color="tab:red", alpha=0.2, label="downtime")
    ax.set_xlabel("seconds since the migration began")
    ax.set_ylabel("k writes/s")
    if report.throttle_steps:
        ax2 = ax.twinx()
        xs = [0.0] + [s.seconds for s in report.throttle_steps] + [report.total_seconds]
        levels = [0] + [s.level for s in report.throttle_steps]
        ax2.step(xs, levels + levels[-1:], where="post", color="tab:orange",
                 label=f"{report.aid} ({'%' if report.aid == 'auto-converge' else 'MB/s'})")
        ax2.set_ylabel("throttle %" if report.aid == "auto-converge" else "dirty limit MB/s")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title(title or f"migration, {report.aid or 'no aid'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
