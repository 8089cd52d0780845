"""Training iterations of YOLACT and Mask R-CNN on the same synthetic batch."""
import pytest
import torch

from yolact_d2.benchmark.inputs import synthetic_images, training_inputs
from yolact_d2.benchmark.models import benchmark_config
from yolact_d2.benchmark import training
from yolact_d2.benchmark.training import TRAIN_LR, measure_training
from yolact_d2.engine import trainer as trainer_module


@pytest.mark.parametrize("model", ["small_yolact_config", "mask_rcnn_config"])
def test_training_iterations_are_timed(request, model):
    spec = request.getfixturevalue(model)
    bench_cfg = benchmark_config(spec, device="cpu", input_size=96)
    batch = training_inputs(synthetic_images(2, 96), bench_cfg)
    row = measure_training(bench_cfg, batch, warmup=0, iters=1)
    assert row["batch_size"] == 2 and row["median_ms"] > 0
    assert row["images_per_s"] == pytest.approx(2000 / row["median_ms"])
    assert bench_cfg.SOLVER.BASE_LR != TRAIN_LR  # the caller's config is left as it was


@pytest.mark.parametrize("name,optimizer", [("SGD", torch.optim.SGD), ("ADAMW", torch.optim.AdamW)])
def test_the_configs_own_optimizer_is_timed(small_yolact_config, monkeypatch, name, optimizer):
    bench_cfg = benchmark_config(small_yolact_config, device="cpu", input_size=64, opts=["SOLVER.OPTIMIZER", name])
    steps = []
    monkeypatch.setattr(optimizer, "step", lambda self, *args, **kwargs: steps.append(self.param_groups[0]["lr"]))
    row = measure_training(bench_cfg, training_inputs(synthetic_images(1, 64), bench_cfg), warmup=1, iters=1)
    assert row["optimizer"] == optimizer.__name__
    assert steps == [TRAIN_LR, TRAIN_LR]  # the warm-up's step and the timed one


@pytest.mark.parametrize(
    "amp,native_bfloat16,precision", [(False, True, "float32"), (True, True, "bfloat16"), (True, False, "float32")]
)
def test_training_steps_run_in_the_configs_precision(small_yolact_config, monkeypatch, amp, native_bfloat16,
                                                     precision):
    """
    The timed step is the trainer's: with SOLVER.AMP.ENABLED on a CPU with native bfloat16 the network runs in
    bfloat16, on one without it in float32, and the report says which.
    """
    monkeypatch.setattr(trainer_module, "cpu_has_native_bfloat16", lambda: native_bfloat16)
    bench_cfg = benchmark_config(small_yolact_config, device="cpu", input_size=96)
    bench_cfg.SOLVER.AMP.ENABLED = amp
    batch = training_inputs(synthetic_images(2, 96), bench_cfg)
    head_dtypes = []
    build = training.build_random_model

    def build_with_hook(cfg, inputs):
        model = build(cfg, inputs)
        model.head.register_forward_hook(lambda module, args, out: head_dtypes.append(out[0].dtype))
        return model

    monkeypatch.setattr(training, "build_random_model", build_with_hook)
    row = measure_training(bench_cfg, batch, warmup=1, iters=1)
    assert row["precision"] == precision
    assert head_dtypes == [getattr(torch, precision)] * 2
