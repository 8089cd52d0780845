"""Training iterations of YOLACT and Mask R-CNN on the same synthetic batch."""
import pytest

from yolact_d2.benchmark.inputs import synthetic_images, training_inputs
from yolact_d2.benchmark.models import benchmark_config
from yolact_d2.benchmark.training import TRAIN_LR, measure_training


@pytest.mark.parametrize("model", ["small_yolact_config", "mask_rcnn_config"])
def test_training_iterations_are_timed(request, model):
    spec = request.getfixturevalue(model)
    bench_cfg = benchmark_config(spec, device="cpu", input_size=96)
    batch = training_inputs(synthetic_images(2, 96), bench_cfg)
    row = measure_training(bench_cfg, batch, warmup=0, iters=1)
    assert row["batch_size"] == 2 and row["median_ms"] > 0
    assert row["images_per_s"] == pytest.approx(2000 / row["median_ms"])
    assert row["peak_memory_mb"] >= 0
    assert bench_cfg.SOLVER.BASE_LR != TRAIN_LR  # the caller's config is left as it was
