"""End-to-end latency rows, and the fixed-work mode in which YOLACT and Mask R-CNN emit exactly N detections."""
import pytest

from yolact_d2.benchmark.inputs import inference_inputs, synthetic_images
from yolact_d2.benchmark.latency import add_speedups, measure_latency
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
    assert row["peak_memory_mb"] >= 0 and row["memory_method"]


def test_mask_rcnn_fixed_mode_emits_exactly_n_detections(mask_rcnn_config):
    row = _latency(benchmark_config(mask_rcnn_config, device="cpu", input_size=96, fixed_detections=N), batch_size=1)
    assert row["detections"] == [N]


def test_speedups_are_relative_to_the_reference_row_of_the_same_mode_and_batch():
    rows = [
        {"config": "ref", "mode": "fixed", "batch_size": 1, "median_ms": 30.0},
        {"config": "a", "mode": "fixed", "batch_size": 1, "median_ms": 10.0},
        {"config": "a", "mode": "fixed", "batch_size": 4, "median_ms": 5.0},
    ]
    add_speedups(rows, "ref")
    assert [r["speedup"] for r in rows] == [1.0, 3.0, None]
