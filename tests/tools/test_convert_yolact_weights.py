"""
Tests of tools/convert_yolact_weights.py on synthetic checkpoints that have the key names and shapes of the
original YOLACT (github.com/dbolya/yolact: yolact.py, backbone.py) and of torchvision's ResNets.
"""
import importlib.util
import math
import os

import numpy as np
import pytest
import torch
import torchvision

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Instances

from yolact_d2 import add_yolact_config

TOOL_PATH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tools", "convert_yolact_weights.py")
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
NUM_ANCHORS = 3  # per location: aspect ratios 1, 1/2, 2
NUM_CLASSES = 81  # the original counts the background (class 0)


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_yolact_weights", TOOL_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


# ---- The original's architecture: (original key, our key or None if dropped, shape) ----


def _conv(orig, ours, out_channels, in_channels, kernel, bias=True):
    yield f"{orig}.weight", ours and f"{ours}.weight", (out_channels, in_channels, kernel, kernel)
    if bias:
        yield f"{orig}.bias", ours and f"{ours}.bias", (out_channels,)


def _bn(orig, ours_conv, channels):
    """A BatchNorm2d; detectron2 puts it in its conv as ``norm``."""
    for param in ("weight", "bias", "running_mean", "running_var"):
        yield f"{orig}.{param}", f"{ours_conv}.norm.{param}", (channels,)
    yield f"{orig}.num_batches_tracked", f"{ours_conv}.norm.num_batches_tracked", ()


def _dcn(orig, ours, width):
    """The original's DCNv2 3x3 conv (with a bias, folded away) and its offset/mask conv (27 outputs)."""
    yield from _conv(orig, ours, width, width, 3, bias=False)
    yield f"{orig}.bias", None, (width,)
    yield from _conv(f"{orig}.conv_offset_mask", ours + "_offset", 27, width, 3)


def _resnet(depth, prefix, stage_name, deformable=lambda stage, block: False):
    """
    torchvision's bottleneck ResNet (stride in the 3x3 conv), stages named by ``stage_name(0..3)``; the 3x3
    conv of the blocks where ``deformable(stage, block)`` is DCNv2 (YOLACT++).
    """
    ours = "backbone.bottom_up."
    yield from _conv(prefix + "conv1", ours + "stem.conv1", 64, 3, 7, bias=False)
    yield from _bn(prefix + "bn1", ours + "stem.conv1", 64)
    in_channels = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), STAGE_BLOCKS[depth])):
        for block in range(blocks):
            orig, d2 = f"{prefix}{stage_name(stage)}.{block}.", f"{ours}res{stage + 2}.{block}."
            block_in = in_channels if block == 0 else 4 * width
            convs = ((width, block_in, 1), (width, width, 3), (4 * width, width, 1))
            for i, (out_channels, conv_in, kernel) in enumerate(convs, 1):
                if i == 2 and deformable(stage, block):
                    yield from _dcn(f"{orig}conv2", f"{d2}conv2", width)
                else:
                    yield from _conv(f"{orig}conv{i}", f"{d2}conv{i}", out_channels, conv_in, kernel, bias=False)
                yield from _bn(f"{orig}bn{i}", f"{d2}conv{i}", out_channels)
            if block == 0:
                yield from _conv(f"{orig}downsample.0", f"{d2}shortcut", 4 * width, in_channels, 1, bias=False)
                yield from _bn(f"{orig}downsample.1", f"{d2}shortcut", 4 * width)
        in_channels = 4 * width


def yolact_spec(depth, plus=False):
    """
    Every tensor of a released YOLACT v1 checkpoint (yolact_base / resnet50 / im400 / im700), or with ``plus``
    of a YOLACT++ one (DCNv2 every block of C3-C5 for R-50, every 3rd for R-101; 9 anchors; mask IoU net).
    """
    interval = 3 if depth == 101 else 1
    deformable = (lambda stage, block: plus and stage >= 1 and block % interval == 0)
    yield from _resnet(depth, "backbone.", lambda stage: f"layers.{stage}", deformable)
    # FPN convs are stored coarsest level first; the third downsample conv is the v1.0 leftover.
    for i, (channels, level) in enumerate(zip((2048, 1024, 512), (5, 4, 3))):
        yield from _conv(f"fpn.lat_layers.{i}", f"backbone.fpn_lateral{level}", 256, channels, 1)
        yield from _conv(f"fpn.pred_layers.{i}", f"backbone.fpn_output{level}", 256, 256, 3)
    for i, ours in enumerate(("backbone.top_block.p6", "backbone.top_block.p7", None)):
        yield from _conv(f"fpn.downsample_layers.{i}", ours, 256, 256, 3)
    # proto_net: conv, ReLU, conv, ReLU, conv, ReLU, upsample, ReLU, conv, ReLU, 1x1 conv.
    for i, ours in ((0, "protonet.pre.0"), (2, "protonet.pre.2"), (4, "protonet.pre.4"), (8, "protonet.post.0")):
        yield from _conv(f"proto_net.{i}", ours, 256, 256, 3)
    yield from _conv("proto_net.10", "protonet.predictor", 32, 256, 1)
    head, anchors = "prediction_layers.0.", 3 * NUM_ANCHORS if plus else NUM_ANCHORS
    yield from _conv(head + "upfeature.0", "head.shared.0", 256, 256, 3)
    yield from _conv(head + "bbox_layer", "head.bbox_pred", anchors * 4, 256, 3)
    yield from _conv(head + "conf_layer", "head.cls_score", anchors * NUM_CLASSES, 256, 3)
    yield from _conv(head + "mask_layer", "head.coef_pred", anchors * 32, 256, 3)
    yield from _conv("semantic_seg_conv", "sem_seg_head.conv", NUM_CLASSES - 1, 256, 1)
    if plus:  # maskiou_net: (conv, ReLU) x 5 with 8..128 channels, then a 1x1 conv to the 80 classes and a ReLU
        for i, (out_channels, in_channels) in enumerate(((8, 1), (16, 8), (32, 16), (64, 32), (128, 64))):
            yield from _conv(f"maskiou_net.maskiou_net.{2 * i}", f"mask_rescoring.layers.{2 * i}", out_channels,
                             in_channels, 3)
        yield from _conv("maskiou_net.maskiou_net.10", "mask_rescoring.layers.10", NUM_CLASSES - 1, 128, 1)


def torchvision_spec(depth):
    """An ImageNet torchvision ResNet as the original trains from (fc dropped by the conversion)."""
    yield from _resnet(depth, "", lambda stage: f"layer{stage + 1}")
    yield from _conv("fc", None, 1000, 2048, 1)


def pattern(index, key, shape):
    """Tensor number ``index``: index + k / numel at flat position k, so tensors and their rows all differ."""
    if not shape:
        return torch.tensor(index)
    numel = math.prod(shape)
    return (index + torch.arange(numel, dtype=torch.float32) / numel).reshape(shape)


def plausible(index, key, shape):
    """Weights a network can run with: scaled random convs, identity BatchNorms, zero biases."""
    if not shape:
        return torch.tensor(0)
    if len(shape) == 4:
        generator = torch.Generator().manual_seed(index)
        return torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
    if key.endswith(("running_var", "weight")):
        return torch.ones(shape)
    return torch.zeros(shape)


def checkpoint(spec, fill=pattern):
    return {orig: fill(i, orig, shape) for i, (orig, _, shape) in enumerate(spec)}


def expected_conversion(spec, original, num_anchors=NUM_ANCHORS):
    """
    Our key -> tensor; the class logits of each anchor move from (background, 1..80) to (1..80, background);
    a DCN bias b moves into the norm after it (running_mean - b).
    """
    expected = {ours: original[orig] for orig, ours, _ in spec if ours}
    for orig, ours, _ in spec:
        if ours is None and orig.endswith("conv2.bias"):
            mean = orig.replace("layers.", "").split(".")
            key = f"backbone.bottom_up.res{int(mean[1]) + 2}.{mean[2]}.conv2.norm.running_mean"
            expected[key] = expected[key] - original[orig]
    index = torch.tensor(
        [a * NUM_CLASSES + (j + 1) % NUM_CLASSES for a in range(num_anchors) for j in range(NUM_CLASSES)]
    )
    for key in ("head.cls_score.weight", "head.cls_score.bias"):
        expected[key] = expected[key][index]
    return expected


def _assert_same_tensors(actual, expected):
    assert actual.keys() == expected.keys()
    wrong = [key for key in expected if not torch.equal(actual[key], expected[key])]
    assert not wrong, f"wrong values: {wrong[:5]}"


@pytest.fixture(scope="module")
def r50_spec():
    return list(yolact_spec(50))


@pytest.fixture(scope="module")
def r50_original(r50_spec):
    return checkpoint(r50_spec)


@pytest.mark.parametrize("depth,model", [(50, "yolact_resnet50"), (101, "yolact_base")])
def test_every_tensor_lands_in_the_model(tmp_path, capsys, depth, model):
    spec = list(yolact_spec(depth))
    original = checkpoint(spec)
    src, dst = str(tmp_path / f"{model}_54_800000.pth"), str(tmp_path / "converted.pth")
    torch.save(original, src)
    tool.main([src, dst])
    assert f"configs/original/{model}.yaml" in capsys.readouterr().out

    saved = torch.load(dst, weights_only=True)
    assert saved["matching_heuristics"] is False and "yolact" in saved["__author__"]
    expected = expected_conversion(spec, original)
    _assert_same_tensors(saved["model"], expected)
    # the configs/original/ models train their BatchNorms (SyncBN), whose counters are kept
    assert any(k.endswith("num_batches_tracked") for k in saved["model"])

    net = tool.build_original_model(model)
    assert net.state_dict().keys() == expected.keys()  # no missing, no unexpected keys
    DetectionCheckpointer(net).load(dst)
    _assert_same_tensors(net.state_dict(), expected)


def test_background_moves_last(r50_original):
    converted = tool.convert_yolact(r50_original)
    w = r50_original["prediction_layers.0.conf_layer.weight"]
    b = r50_original["prediction_layers.0.conf_layer.bias"]
    cw, cb = converted["head.cls_score.weight"], converted["head.cls_score.bias"]
    assert cb.shape == b.shape == (3 * 81,) and cw.shape == w.shape
    # Anchor 0: our channels 0..79 are classes 1..80 (the original's channels 1..80), 80 is the background.
    assert cb[0] == b[1] and cb[79] == b[80] and cb[80] == b[0]
    assert torch.equal(cw[0], w[1]) and torch.equal(cw[80], w[0])
    # Anchor 1 starts at 81, anchor 2 at 162.
    assert cb[81] == b[82] and cb[161] == b[81]
    assert cb[162] == b[163] and cb[242] == b[162]
    assert torch.equal(cw[161], w[81]) and torch.equal(cw[242], w[162])
    # The other branches keep their order.
    assert torch.equal(converted["head.bbox_pred.weight"], r50_original["prediction_layers.0.bbox_layer.weight"])
    assert torch.equal(converted["sem_seg_head.conv.bias"], r50_original["semantic_seg_conv.bias"])


def test_converted_model_runs_inference(tmp_path, r50_spec):
    path = str(tmp_path / "converted.pth")
    converted = tool.convert_yolact(checkpoint(r50_spec, plausible))
    tool.save_checkpoint(converted, path, "test")
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(tool.original_config_file("yolact_resnet50"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = path
    cfg.MODEL.YOLACT.INPUT_SIZE = 160
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.0
    predictor = DefaultPredictor(cfg)
    _assert_same_tensors(predictor.model.state_dict(), converted)
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    instances = predictor(image)["instances"]
    assert isinstance(instances, Instances) and instances.image_size == (90, 120)
    assert len(instances) == 100
    assert instances.pred_masks.shape == (100, 90, 120)
    assert torch.isfinite(instances.scores).all() and torch.isfinite(instances.pred_boxes.tensor).all()


@pytest.mark.parametrize("depth", [50, 101])
def test_depth_and_model_detection(depth):
    keys = {key: torch.empty(0) for key, _, _ in yolact_spec(depth)}
    assert tool.resnet_depth(keys, "backbone.layers.2.") == depth
    default = {50: "yolact_resnet50", 101: "yolact_base"}[depth]
    assert tool.choose_model(keys, "weights/model_final.pth") == default
    if depth == 101:
        assert tool.choose_model(keys, "w/yolact_im700_54_800000.pth") == "yolact_im700"
        assert tool.choose_model(keys, "w/yolact_im400_12_3000_interrupt.pth") == "yolact_im400"
        assert tool.choose_model(keys, "w/yolact_base_54_800000.pth", "yolact_im700") == "yolact_im700"
    wrong = {50: "yolact_base", 101: "yolact_resnet50"}[depth]
    with pytest.raises(ValueError, match=f"{wrong} .* the weights are a ResNet-{depth}"):
        tool.choose_model(keys, "weights.pth", wrong)
    with pytest.raises(ValueError, match=f"the file name says {wrong}"):
        tool.choose_model(keys, f"{wrong}_54_800000.pth")


def test_depth_detection_rejects_other_backbones():
    with pytest.raises(ValueError, match="Cannot tell the ResNet depth"):
        tool.resnet_depth({"backbone.layers.2.0.conv1.weight": torch.empty(0)}, "backbone.layers.2.")


def test_unknown_keys_are_errors_naming_them(r50_original):
    extra = {"fpn.extra.weight": torch.zeros(1), "backbone.layers.0.0.conv4.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"2 unknown keys.*backbone\.layers\.0\.0\.conv4\.weight.*fpn\.extra\.weight"):
        tool.convert_yolact({**r50_original, **extra})
    with pytest.raises(ValueError, match=r"prediction_layers\.0\.conf_layer\.scale"):
        tool.convert_yolact({**r50_original, "prediction_layers.0.conf_layer.scale": torch.zeros(1)})


def test_known_leftovers_are_skipped(r50_original):
    leftovers = {"fpn.downsample_layers.3.bias": torch.zeros(1), "backbone.layer1.0.conv1.weight": torch.zeros(1)}
    converted = tool.convert_yolact({**r50_original, **leftovers})
    assert converted.keys() == tool.convert_yolact(r50_original).keys()


@pytest.mark.parametrize("depth,model", [(50, "yolact_plus_resnet50"), (101, "yolact_plus_base")])
def test_yolact_plus_every_tensor_lands_with_dcn_bias_folded(tmp_path, depth, model):
    spec = list(yolact_spec(depth, plus=True))
    original = checkpoint(spec)
    assert tool.choose_model(original, "weights.pth") == model
    converted = tool.convert_yolact(original)
    _assert_same_tensors(converted, expected_conversion(spec, original, num_anchors=9))
    net = tool.build_original_model(model)
    tool.check_matches_model(converted, net)
    # a folded bias gives the same output: norm(conv(x) + b) == norm'(conv(x))
    bias = original["backbone.layers.1.0.conv2.bias"]
    mean = original["backbone.layers.1.0.bn2.running_mean"]
    torch.testing.assert_close(converted["backbone.bottom_up.res3.0.conv2.norm.running_mean"], mean - bias)


def test_yolact_plus_model_must_match_the_weights(r50_original):
    with pytest.raises(ValueError, match=r"not YOLACT\+\+"):
        tool.choose_model(r50_original, "x.pth", model="yolact_plus_resnet50")


def test_imagenet_backbone_conversion(tmp_path):
    spec = list(torchvision_spec(50))
    assert {orig for orig, _, _ in spec} == set(torchvision.models.resnet50().state_dict())
    original = checkpoint(spec)
    src, dst = str(tmp_path / "resnet50-19c8e357.pth"), str(tmp_path / "R-50.pth")
    torch.save(original, src)
    tool.main(["--backbone", src, dst])
    expected = {ours: original[orig] for orig, ours, _ in spec if ours}
    saved = torch.load(dst, weights_only=True)
    _assert_same_tensors(saved["model"], expected)
    assert not any(key.startswith("fc") for key in saved["model"])

    net = tool.build_original_model("yolact_resnet50")
    bottom_up = {key for key in net.state_dict() if key.startswith("backbone.bottom_up.")}
    assert bottom_up == expected.keys()
    DetectionCheckpointer(net).load(dst)
    _assert_same_tensors({key: net.state_dict()[key] for key in bottom_up}, expected)


@pytest.mark.parametrize("model", sorted(m for m in tool.ORIGINAL_MODELS if not m.startswith("yolact_plus")))
def test_original_configs(model):
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(tool.original_config_file(model))
    size = {"yolact_im400": 400, "yolact_im700": 700}.get(model, 550)
    assert cfg.MODEL.RESNETS.DEPTH == tool.ORIGINAL_MODELS[model]
    assert cfg.MODEL.YOLACT.INPUT_SIZE == size
    # data/config.py of the original: [[int(x[0] / 550 * size)] for x in the 550 scales].
    assert cfg.MODEL.YOLACT.ANCHOR.SIZES == [[int(s / 550 * size)] for s in (24, 48, 96, 192, 384)]
    assert cfg.MODEL.YOLACT.ANCHOR.SQUARE and cfg.MODEL.YOLACT.ANCHOR.ASPECT_RATIOS == [[1.0, 0.5, 2.0]]
    assert cfg.INPUT.FORMAT == "RGB" and not cfg.MODEL.RESNETS.STRIDE_IN_1X1
    assert cfg.MODEL.PIXEL_MEAN == [123.68, 116.78, 103.94] and cfg.MODEL.PIXEL_STD == [58.40, 57.12, 57.38]
    assert cfg.MODEL.WEIGHTS == f"output/original/{model}_54_800000.pth"


def test_batch_norm_counters_are_dropped_for_a_frozen_bn_model(r50_original):
    converted = tool.convert_yolact(r50_original)
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(tool.original_config_file("yolact_resnet50"))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS, cfg.MODEL.RESNETS.NORM = "cpu", "", "FrozenBN"
    frozen = build_model(cfg)
    with pytest.raises(ValueError, match=r"unexpected backbone\.bottom_up\.res2\.0\.conv1\.norm\.num_batches_tracked"):
        tool.check_matches_model(converted, frozen)
    fitted = tool.fit_batch_norm_counters(converted, frozen)
    tool.check_matches_model(fitted, frozen)
    assert fitted.keys() == {k for k in converted if not k.endswith("num_batches_tracked")}
    trained = tool.build_original_model("yolact_resnet50")  # SyncBN: every counter kept
    assert tool.fit_batch_norm_counters(converted, trained).keys() == converted.keys()
