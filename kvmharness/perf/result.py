"""What a `perf` run found: dirty_log_perf_test's numbers (its names in
the human output, dash-separated keys in JSON), per iteration and summed,
with our exact check of every harvest against replay and the vCPUs' own
time per iteration with and without dirty logging."""

from dataclasses import dataclass, field

from ..kvm.memory import format_bytes


@dataclass(frozen=True)
class PerfConfig:
    """dirty_log_perf_test's options under our names (its flag in brackets)."""

    vcpus: int = 1  # [-v]
    vcpu_bytes: int = 1 << 30  # [-b] memory each vCPU dirties (all of it for every vCPU with overlap)
    iterations: int = 2  # [-i]
    random_access: bool = False  # [-a] random pages instead of one sequential pass
    seed: int = 1  # [-r]
    write_percent: int = 100  # [-w]
    backing: str = "anonymous"  # [-s]
    slots: int = 1  # [-x]
    overlap: bool = False  # [-o] every vCPU accesses the whole region
    manual_protect: bool = True  # not [-g]: MANUAL_PROTECT_ENABLE | INITIALLY_SET where the host has them
    mode: str = "dirty-bitmap"  # or dirty-ring (dirty_log_test's ring; no perf-test flag)
    ring_entries: int = 0  # per vCPU, 0: the host's largest
    pin: tuple = ()  # [-c] pCPU per vCPU, then optionally the main thread's
    prefault: bool = False  # MADV_POPULATE_WRITE first (the selftest does not: its populate pays host faults)

    @property
    def mem(self):
        return self.vcpus * self.vcpu_bytes

    def describe(self):
        log = (f"dirty ring ({self.ring_entries or 'largest'} entries)" if self.mode == "dirty-ring" else
               "dirty bitmap, " + ("manual protect + initially set" if self.manual_protect else "plain GET (-g)"))
        return (f"{self.vcpus} vCPU(s) x {format_bytes(self.vcpu_bytes)}, {self.backing}, {self.slots} memslot(s), "
                f"{log}, {'random' if self.random_access else 'sequential'}, {self.write_percent} % writes"
                + (", overlapping" if self.overlap else ""))

    def to_json(self):
        return {"vcpus": self.vcpus, "vcpu-bytes": self.vcpu_bytes, "iterations": self.iterations,
                "random-access": self.random_access, "seed": self.seed, "write-percent": self.write_percent,
                "backing": self.backing, "slots": self.slots, "overlap": self.overlap,
                "manual-protect": self.manual_protect, "mode": self.mode, "ring-entries": self.ring_entries,
                "pin": list(self.pin), "prefault": self.prefault}


@dataclass(frozen=True)
class PerfIteration:
    number: int  # from 1, as the selftest counts
    logged: bool  # dirty logging was on
    dirty_memory_seconds: float  # host: from starting the vCPUs until all are done (the selftest's)
    vcpu_seconds: tuple  # per vCPU, the guest's own time for its pass (TSC), exits included
    accesses: int  # per vCPU
    get_seconds: float | None = None
    clear_seconds: float | None = None
    harvested_pages: int | None = None  # pages the log reported
    expected_pages: int | None = None  # pages replay says it must report
    missing: int | None = None  # written, not reported: an error
    extra: int | None = None  # reported, not accessed at all in the pass: an error
    ring_full_exits: int = 0
    read_reported: int | None = None  # only read in the pass, reported (a read fault mapped it writable)

    @property
    def exact(self):
        return not self.logged or (self.missing == 0 and self.extra == 0)

    def to_json(self):
        out = {"iteration": self.number, "dirty-logging": self.logged,
               "dirty-memory-seconds": round(self.dirty_memory_seconds, 9),
               "vcpu-seconds": [round(s, 9) for s in self.vcpu_seconds], "accesses-per-vcpu": self.accesses}
        if self.logged:
            out.update({"get-dirty-log-seconds": round(self.get_seconds, 9),
                        "clear-dirty-log-seconds": None if self.clear_seconds is None else round(self.clear_seconds, 9),
                        "harvested-pages": self.harvested_pages, "expected-pages": self.expected_pages,
                        "missing-pages": self.missing, "extra-pages": self.extra,
                        "read-pages-reported": self.read_reported, "exact": self.exact,
                        "ring-full-exits": self.ring_full_exits})
        return out


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class PerfResult:
    config: PerfConfig
    manual_caps: int  # KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 flags enabled on the VM (0: plain GET or ring)
    populate_seconds: float
    enable_seconds: float
    disable_seconds: float
    baseline: tuple = field(default=())  # PerfIteration without dirty logging
    iterations: tuple = field(default=())  # PerfIteration with it

    @property
    def exact(self):
        return all(i.exact for i in self.iterations)

    @property
    def get_total(self):
        return sum(i.get_seconds for i in self.iterations)

    @property
    def clear_total(self):
        times = [i.clear_seconds for i in self.iterations]
        return None if any(t is None for t in times) else sum(times)

    def vcpu_mean(self, logged):
        """Mean vCPU time per iteration, over vCPUs and iterations."""
        its = self.iterations if logged else self.baseline
        return _mean(s for i in its for s in i.vcpu_seconds)

    def writer_rate(self, logged):
        """Accesses per second of one vCPU: the tracked (or untracked) writer's rate."""
        mean = self.vcpu_mean(logged)
        its = self.iterations if logged else self.baseline
        return its[0].accesses / mean if its and mean else None

    def summary(self):
        n = len(self.iterations)
        clear = self.clear_total
        return {"get-dirty-log-total-seconds": round(self.get_total, 9),
                "get-dirty-log-avg-seconds": round(self.get_total / n, 9),
                "clear-dirty-log-total-seconds": None if clear is None else round(clear, 9),
                "clear-dirty-log-avg-seconds": None if clear is None else round(clear / n, 9),
                "dirty-memory-total-seconds": round(sum(i.dirty_memory_seconds for i in self.iterations), 9),
                "vcpu-seconds-per-iteration-without-logging": _round(self.vcpu_mean(False)),
                "vcpu-seconds-per-iteration-with-logging": _round(self.vcpu_mean(True)),
                "writer-rate-without-logging": _round(self.writer_rate(False), 1),
                "writer-rate-with-logging": _round(self.writer_rate(True), 1),
                "exact": self.exact}

    def to_json(self):
        return {"config": self.config.to_json(), "manual-protect-caps": self.manual_caps,
                "populate-seconds": round(self.populate_seconds, 9),
                "enable-dirty-logging-seconds": round(self.enable_seconds, 9),
                "disable-dirty-logging-seconds": round(self.disable_seconds, 9),
                "without-logging": [i.to_json() for i in self.baseline],
                "iterations": [i.to_json() for i in self.iterations],
                "summary": self.summary()}

    def lines(self):
        """The selftest's report, line for line where it has one, then ours."""
        s = lambda t: f"{t:.9f}s"  # noqa: E731 - the selftest's format
        out = [f"perf: {self.config.describe()}",
               f"Populate memory time: {s(self.populate_seconds)}"]
        for i in self.baseline:
            out.append(f"Iteration {i.number} without dirty logging: dirty memory time {s(i.dirty_memory_seconds)}, "
                       f"vCPU time {_vcpus(i.vcpu_seconds)}")
        out.append(f"Enabling dirty logging time: {s(self.enable_seconds)}")
        out.append("")
        for i in self.iterations:
            out.append(f"Iteration {i.number} dirty memory time: {s(i.dirty_memory_seconds)} "
                       f"(vCPU time {_vcpus(i.vcpu_seconds)}"
                       + (f", {i.ring_full_exits} ring-full exits" if i.ring_full_exits else "") + ")")
            out.append(f"Iteration {i.number} get dirty log time: {s(i.get_seconds)}")
            if i.clear_seconds is not None:
                out.append(f"Iteration {i.number} clear dirty log time: {s(i.clear_seconds)}")
            verdict = "exact" if i.exact else f"WRONG: {i.missing} written missing, {i.extra} untouched reported"
            reads = f" (+ {i.read_reported} only read, mapped writable on a read fault)" if i.read_reported else ""
            out.append(f"Iteration {i.number} harvested {i.harvested_pages} pages, replay {i.expected_pages} written"
                       f"{reads}: {verdict}")
        out.append(f"Disabling dirty logging time: {s(self.disable_seconds)}")
        n = len(self.iterations)
        out.append(f"Get dirty log over {n} iterations took {s(self.get_total)}. "
                   f"(Avg {s(self.get_total / n)}/iteration)")
        if self.clear_total is not None:
            out.append(f"Clear dirty log over {n} iterations took {s(self.clear_total)}. "
                       f"(Avg {s(self.clear_total / n)}/iteration)")
        without, with_ = self.vcpu_mean(False), self.vcpu_mean(True)
        if without and with_:
            out.append(f"vCPU time per iteration: {s(without)} without dirty logging, {s(with_)} with "
                       f"(x{with_ / without:.2f}); writer {self.writer_rate(False) / 1e6:.3f} -> "
                       f"{self.writer_rate(True) / 1e6:.3f} M accesses/s per vCPU")
        out.append("every harvest equals replay" if self.exact else "HARVESTS DIFFER FROM REPLAY")
        return out


def _round(x, digits=9):
    return None if x is None else round(x, digits)


def _vcpus(seconds):
    return ", ".join(f"{t:.6f}s" for t in seconds)
