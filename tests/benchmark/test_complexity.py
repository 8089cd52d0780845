"""FLOP and parameter counts."""
import pytest
import torch
from torch import nn

from yolact_d2.benchmark.complexity import analyze_complexity, count_parameters
from yolact_d2.benchmark.inputs import inference_inputs, synthetic_images
from yolact_d2.benchmark.models import build_random_model
from yolact_d2.layers import DeformConv


class _DeformOnly(nn.Module):
    """A deformable 3x3 conv with zero offsets, taking a list holding one image batch."""

    def __init__(self):
        super().__init__()
        self.conv = DeformConv(4, 6, 3, padding=1)

    def forward(self, inputs):
        x = inputs[0]
        return self.conv(x, x.new_zeros(x.shape[0], 18, *x.shape[-2:]))


def test_yolact_flops_by_module_and_parameters(cfg):
    cfg.MODEL.YOLACT.INPUT_SIZE = 96
    inputs = inference_inputs(synthetic_images(1, 96), cfg)
    model = build_random_model(cfg, inputs)
    result = analyze_complexity(model, inputs)
    by_module = result["gmacs_by_module"]
    assert result["gmacs"] == by_module[""] > 0
    for name in ("backbone", "backbone.bottom_up", "protonet", "head"):
        assert 0 < by_module[name] <= result["gmacs"], name
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert "aten::_convolution" not in result["uncounted_ops"]
    assert not [op for op in result["uncounted_ops"] if op.startswith("profiler::")]  # the stage ranges


def test_deformable_convs_count_as_plain_convs():
    x = torch.zeros(1, 4, 10, 12)
    result = analyze_complexity(_DeformOnly(), [x])
    assert result["gmacs"] * 1e9 == pytest.approx(6 * 10 * 12 * 4 * 3 * 3)
    assert "torchvision::deform_conv2d" not in result["uncounted_ops"]


def test_trainable_parameters_exclude_frozen_ones():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5))
    model[0].requires_grad_(False)
    assert count_parameters(model) == {"params": 16 + 25, "trainable_params": 25}
