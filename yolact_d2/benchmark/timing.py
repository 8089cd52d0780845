"""
Wall-clock timing that waits for the device, statistics over the runs after warm-up, and peak memory.

Memory is the growth above the level at the start of the timed runs (weights and inputs are already in
place then), so that it is comparable across models run in one process:

* CUDA: ``torch.cuda.max_memory_allocated`` (after ``reset_peak_memory_stats``) minus
  ``torch.cuda.memory_allocated`` at the start: the tensors' peak, not the allocator's cache.
* CPU: the peak resident set size of the process (``VmHWM`` of ``/proc/self/status``, reset by writing 5 to
  ``/proc/self/clear_refs``) minus the resident set size at the start, after freed heap memory has been handed
  back to the OS (glibc's ``malloc_trim``) so that an earlier run's free memory is not reused unseen (without
  either, a model can read as needing nothing: docs/benchmark.md). Where the peak cannot be reset (not Linux) it
  is not measured (None). The method is reported with the number.
"""
import ctypes
import ctypes.util
import functools
import gc
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

__all__ = ["synchronize", "Measurement", "measure", "PeakMemory", "summarize"]

_MIB = 2**20


def synchronize(device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def summarize(seconds: List[float], scale: float = 1.0) -> Dict[str, float]:
    """Median, 90th percentile (linear interpolation) and mean of ``seconds * scale``, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * scale * 1000.0
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "mean_ms": float(ms.mean())}


@functools.lru_cache(maxsize=None)
def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _proc_status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


class PeakMemory:
    """
    Context manager measuring the peak memory of what runs inside it above the level at entry (see the
    module's docstring). After exit: ``peak_mb`` (MiB; None where it cannot be measured) and ``method``.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak_mb: Optional[float] = None
        self.method = "not measured (no /proc/self/clear_refs)"

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
            return self
        libc = _libc()
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
        if _reset_peak_rss():
            self._start = _proc_status_kib("VmRSS") * 1024
            self.method = "peak RSS growth (VmHWM)"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("peak RSS"):
            peak = _proc_status_kib("VmHWM") * 1024
        else:
            return False
        self.peak_mb = (peak - self._start) / _MIB
        return False


@dataclass
class Measurement:
    """Seconds of each timed run (after warm-up) and the peak memory of those runs above their start."""

    seconds: List[float]
    peak_memory_mb: Optional[float]
    memory_method: str


def measure(fn: Callable[[], object], *, warmup: int, iters: int, device) -> Measurement:
    """
    Call ``fn`` ``warmup`` times, then time ``iters`` calls, each between two device synchronisations, while
    tracking peak memory. (``torch.utils.benchmark.Timer.timeit`` adds two untimed calls to every measurement and
    returns their mean, where the tables need each run's time for the median and 90th percentile.)
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1; got {iters}")
    for _ in range(warmup):
        fn()
    seconds = []
    with PeakMemory(device) as memory:
        for _ in range(iters):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            seconds.append(time.perf_counter() - start)
    return Measurement(seconds, memory.peak_mb, memory.method)
