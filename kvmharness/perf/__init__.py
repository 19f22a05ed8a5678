"""`kvmharness perf`: what dirty tracking costs, in dirty_log_perf_test's
numbers, every harvest checked against replay."""

from .result import PerfConfig, PerfIteration, PerfResult
from .run import run_perf

__all__ = ["PerfConfig", "PerfIteration", "PerfResult", "run_perf"]
