"""Timers, statistics and peak memory of the benchmark, on a fake clock and known allocations."""
import itertools

import pytest
import torch

from yolact_d2.benchmark import timing
from yolact_d2.benchmark.timing import PeakMemory, measure, summarize

MIB = 2**20


def test_summarize_is_in_milliseconds_and_scaled():
    # ms after scaling: 0.5, 1, 1.5, 2, 5; the 90th percentile interpolates 60% of the way from 2 to 5
    stats = summarize([0.001, 0.002, 0.003, 0.004, 0.010], scale=0.5)
    assert stats == pytest.approx({"median_ms": 1.5, "p90_ms": 3.8, "mean_ms": 2.0})


class _FakeClock:
    """``time.perf_counter`` that only advances when a call of the timed function says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_measure_times_each_call_after_the_warmup(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    durations = itertools.chain([100.0, 100.0], [0.5, 0.25, 2.0])  # two warm-up calls, then the timed ones

    def fn():
        clock.now += next(durations)

    m = measure(fn, warmup=2, iters=3, device="cpu")
    assert m.seconds == [0.5, 0.25, 2.0]
    with pytest.raises(ValueError, match="iters must be >= 1"):
        measure(fn, warmup=0, iters=0, device="cpu")


def _resident_tensor(mib: int) -> torch.Tensor:
    return torch.ones(mib * MIB // 4)  # float32, every page written


def test_peak_memory_is_the_growth_of_a_known_allocation():
    with PeakMemory("cpu") as idle:
        pass
    with PeakMemory("cpu") as memory:
        x = _resident_tensor(64)
        del x
    assert memory.method == "peak RSS growth (VmHWM)"
    assert idle.peak_mb < 8, idle.peak_mb
    assert 60 <= memory.peak_mb < 80, memory.peak_mb


def test_peak_memory_counts_heap_memory_an_earlier_run_freed():
    """
    An earlier run's freed heap memory is handed back to the OS before measuring: once glibc has freed a large
    mmapped block (here 30 MiB) it serves smaller blocks from its heap and keeps them when they are freed, where
    a new run would reuse them without any growth of the resident set.
    """
    x = _resident_tensor(30)
    del x
    for _ in range(2):
        blocks = [_resident_tensor(8) for _ in range(4)]
        del blocks
    with PeakMemory("cpu") as memory:
        blocks = [_resident_tensor(8) for _ in range(4)]
        del blocks
    assert 28 <= memory.peak_mb < 40, memory.peak_mb


def test_without_a_resettable_peak_memory_is_not_measured(monkeypatch):
    monkeypatch.setattr(timing, "_reset_peak_rss", lambda: False)
    with PeakMemory("cpu") as memory:
        x = _resident_tensor(8)
        del x
    assert memory.peak_mb is None and memory.method == "not measured (no /proc/self/clear_refs)"
