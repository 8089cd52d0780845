import pytest
import torch

from detectron2.layers import ShapeSpec

from yolact_d2.layers import DeformConv, ModulatedDeformConv
from detectron2.modeling.backbone.resnet import BasicBlock

from yolact_d2.modeling.backbone import (
    YolactDeformBasicBlock,
    YolactDeformBottleneckBlock,
    build_yolact_resnet,
)


def _deform_blocks(cfg, depth, interval, modulated=True):
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256 if depth >= 50 else 64
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = modulated
    cfg.MODEL.YOLACT.DEFORM_INTERVAL = interval
    resnet = build_yolact_resnet(cfg, ShapeSpec(channels=3))
    found = {}
    for name, stage in zip(resnet.stage_names, resnet.stages):
        deformable = (YolactDeformBottleneckBlock, YolactDeformBasicBlock)
        found[name] = [i for i, b in enumerate(stage) if isinstance(b, deformable)]
    return resnet, found


def test_interval_3_on_r101_gives_the_papers_11_layers(cfg):
    _, found = _deform_blocks(cfg, 101, 3)
    assert found == {"res2": [], "res3": [0, 3], "res4": [0, 3, 6, 9, 12, 15, 18, 21], "res5": [0]}
    assert sum(len(v) for v in found.values()) == 11


def test_interval_1_on_r50_makes_every_c3_to_c5_block_deformable(cfg):
    resnet, found = _deform_blocks(cfg, 50, 1, modulated=True)
    assert found == {"res2": [], "res3": [0, 1, 2, 3], "res4": list(range(6)), "res5": [0, 1, 2]}
    block = resnet.res4[0]
    assert isinstance(block.conv2, ModulatedDeformConv) and block.conv2_offset.out_channels == 27
    assert block.conv1.stride[0] * block.conv2.stride[0] == 2  # the stage downsamples once (1x1 or 3x3)
    assert block.conv2_offset.weight.abs().sum() == 0  # offsets start at zero


def test_unmodulated_blocks_and_forward(cfg):
    resnet, found = _deform_blocks(cfg, 50, 2, modulated=False)
    assert found["res4"] == [0, 2, 4]
    assert isinstance(resnet.res3[0].conv2, DeformConv) and resnet.res3[0].conv2_offset.out_channels == 18
    out = resnet(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 2048, 2, 2)


def test_r18_gets_deformable_basic_blocks(cfg):
    resnet, found = _deform_blocks(cfg, 18, 3, modulated=True)
    assert found == {"res2": [], "res3": [0], "res4": [0], "res5": [0]}
    block = resnet.res4[0]
    assert isinstance(block, YolactDeformBasicBlock) and isinstance(block.conv2, ModulatedDeformConv)
    assert block.conv2_offset.out_channels == 27 and block.conv2_offset.weight.abs().sum() == 0
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert resnet(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 512, 2, 2)


@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_basic_block_without_offsets_is_the_plain_block(modulated):
    torch.manual_seed(0)
    plain = BasicBlock(16, 32, stride=2, norm="").eval()
    block = YolactDeformBasicBlock.like(plain, "", modulated, 1).eval()
    missing, unexpected = block.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["conv2_offset.bias", "conv2_offset.weight"] and not unexpected
    if modulated:  # the last third of the offset channels is the mask: make it sigmoid(30) = 1
        block.conv2_offset.bias.data[18:] = 30.0
    x = torch.randn(2, 16, 15, 12)
    torch.testing.assert_close(block(x), plain(x), atol=1e-5, rtol=1e-5)
    block.conv2_offset.bias.data[:18] = 0.5  # shifted sampling changes the output, and gradients flow
    y = block(x)
    assert not torch.allclose(y, plain(x), atol=1e-3)
    y.sum().backward()
    assert torch.isfinite(block.conv2_offset.weight.grad).all() and block.conv2_offset.weight.grad.abs().sum() > 0
