"""End-to-end latency rows, and the fixed-work mode in which YOLACT and Mask R-CNN emit exactly N detections."""
import pytest
import torch

from yolact_d2.benchmark import timing

from yolact_d2.benchmark.inputs import inference_inputs, synthetic_images
from yolact_d2.benchmark.latency import add_precision_ratios, add_speedups, measure_latency
from yolact_d2.benchmark.models import benchmark_config, build_random_model

N = 12


def _latency(cfg, batch_size=2):
    inputs = inference_inputs(synthetic_images(batch_size, 96), cfg)
    model = build_random_model(cfg, inputs)
    return measure_latency(model, inputs, warmup=0, iters=1, device="cpu")


def test_yolact_fixed_mode_emits_exactly_n_detections(small_yolact_config):
    row = _latency(benchmark_config(small_yolact_config, device="cpu", input_size=96, fixed_detections=N))
    assert row["detections"] == [N, N] and row["batch_size"] == 2
    assert row["median_ms"] > 0 and row["images_per_s"] == pytest.approx(1000 / row["median_ms"])


def test_latency_is_per_image_with_the_memory_of_a_known_allocation(monkeypatch):
    """A fake model that takes 0.2 s (on a fake clock) and 32 MiB per batch of 2: 100 ms and 10 images/s."""
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def model(inputs):
        now[0] += 0.2
        x = torch.ones(32 * 2**20 // 4)  # every page written
        del x
        return [{"instances": [0] * (i + 3)} for i in range(len(inputs))]

    row = measure_latency(model, [{}, {}], warmup=1, iters=3, device="cpu")
    assert row["batch_size"] == 2 and row["detections"] == [3, 4]
    assert (row["median_ms"], row["p90_ms"], row["images_per_s"]) == pytest.approx((100.0, 100.0, 10.0))
    assert 30 <= row["peak_memory_mb"] < 40 and row["memory_method"] == "peak RSS growth (VmHWM)"


def test_mask_rcnn_fixed_mode_emits_exactly_n_detections(mask_rcnn_config):
    row = _latency(benchmark_config(mask_rcnn_config, device="cpu", input_size=96, fixed_detections=N), batch_size=1)
    assert row["detections"] == [N]


def _row(config, median_ms, precision="float32", runtime="eager", batch_size=1, mode="fixed"):
    return {"config": config, "mode": mode, "batch_size": batch_size, "precision": precision, "runtime": runtime,
            "median_ms": median_ms}


def test_speedups_are_relative_to_the_references_float32_eager_row_of_the_same_mode_and_batch():
    rows = [
        _row("ref", 30.0), _row("ref", 15.0, "bfloat16"), _row("a", 10.0), _row("a", 5.0, batch_size=4),
        _row("a", 6.0, "bfloat16"), _row("a", 7.5, "int8", "onnxruntime"), _row("a", 20.0, mode="default"),
    ]
    add_speedups(rows, "ref")
    assert [r["speedup"] for r in rows] == [1.0, 2.0, 3.0, None, 5.0, 4.0, None]


def test_precision_ratios_are_relative_to_the_configs_float32_eager_row():
    rows = [
        _row("a", 10.0), _row("a", 4.0, "bfloat16"), _row("a", 8.0, "float32", "onnxruntime"),
        _row("a", 5.0, "int8", "onnxruntime"), _row("a", 3.0, "bfloat16", batch_size=2),
        _row("b", 20.0, "bfloat16"), _row("b", 40.0), _row("b", 30.0, mode="default"),
        _row("c", 9.0, "int8", "onnxruntime"),
    ]
    add_precision_ratios(rows)
    assert [r["vs_float32"] for r in rows] == [1.0, 0.4, 0.8, 0.5, None, 0.5, 1.0, 1.0, None]
