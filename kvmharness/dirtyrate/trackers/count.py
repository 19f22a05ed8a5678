"""What a tracker counted in one window."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Count:
    dirty_pages: float  # unique pages dirtied (an estimate in page-sampling mode)
    dirty_events: int | None = None  # ring entries harvested (dirty-ring mode)
    vcpu_pages: tuple | None = None  # unique pages per vCPU, where known
    vcpu_events: tuple | None = None  # ring entries per vCPU
    samples: int | None = None  # page-sampling: pages sampled ...
    dirty_samples: int | None = None  # ... and how many of them changed
    confidence_pages: tuple | None = None  # 95 % interval of dirty_pages (sampling)
