"""Timers, statistics and peak memory of the benchmark (never asserting speed)."""
import pytest
import torch

from yolact_d2.benchmark.timing import PeakMemory, StageClock, measure, summarize


def test_summarize_is_in_milliseconds_and_scaled():
    stats = summarize([0.001, 0.002, 0.003, 0.004, 0.010], scale=0.5)
    assert stats["median_ms"] == pytest.approx(1.5)
    assert stats["mean_ms"] == pytest.approx(2.0)
    assert 2.0 <= stats["p90_ms"] <= 5.0


def test_measure_runs_warmup_then_timed_iterations():
    calls = []
    m = measure(lambda: calls.append(1), warmup=2, iters=3, device="cpu")
    assert len(calls) == 5 and len(m.seconds) == 3
    assert all(s >= 0 for s in m.seconds)
    assert m.peak_memory_mb >= 0 and m.memory_method
    with pytest.raises(ValueError):
        measure(lambda: None, warmup=0, iters=0, device="cpu")


def test_peak_memory_sees_a_temporary_tensor_on_cpu():
    with PeakMemory("cpu") as memory:
        x = torch.ones(16 * 2**20)  # 64 MiB, written so that it is resident
        del x
    if memory.method.startswith("peak RSS"):
        assert memory.peak_mb >= 48, memory.peak_mb
    else:  # ru_maxrss growth is only a lower bound
        assert memory.peak_mb >= 0


def test_stage_clock_accumulates_per_stage():
    clock = StageClock("cpu")
    double = clock.wrap("a", lambda x: 2 * x)
    assert double(2) == 4 and double(3) == 6
    clock.wrap("b", lambda: None)()
    assert set(clock.seconds) == {"a", "b"} and clock.seconds["a"] >= 0
    clock.reset()
    assert not clock.seconds
