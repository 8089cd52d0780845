"""
Tests of tools/convert_yolact_weights.py on checkpoints with the original YOLACT's real keys and shapes (recorded
from dbolya/yolact in tests/golden/original_models.json.gz) and on torchvision's ResNets. That converted weights
compute what the original computes is shown by tests/golden/test_golden.py against the original's outputs.
"""
import importlib.util
import os

import numpy as np
import pytest
import torch
import torchvision

from detectron2.modeling import build_model

_spec = importlib.util.spec_from_file_location(
    "golden_reference", os.path.join(os.path.dirname(__file__), os.pardir, "golden", "reference.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

tool = golden.converter()
# The models whose keys were recorded: name -> ResNet depth (dbolya/yolact's data/config.py).
RECORDED = {"yolact_resnet50": 50, "yolact_base": 101, "yolact_plus_resnet50": 50, "yolact_plus_base": 101}


@pytest.fixture(scope="module")
def r50_original():
    return golden.original_state_dict("yolact_resnet50")


def _keys_only(model):
    return {key: torch.empty(0) for key, _ in golden.original_keys_and_shapes(model)}


def _zeros(model):
    """An original checkpoint of ``model``'s keys and shapes, all zeros (what a test of names and shapes needs)."""
    return {key: torch.zeros(shape) for key, shape in golden.original_keys_and_shapes(model)}


def test_cli_writes_a_checkpoint_the_model_loads_exactly(tmp_path, capsys, r50_original):
    model = "yolact_resnet50"
    src, dst = str(tmp_path / f"{model}_54_800000.pth"), str(tmp_path / "converted.pth")
    torch.save(r50_original, src)
    tool.main([src, dst])
    assert f"configs/original/{model}.yaml" in capsys.readouterr().out
    saved = torch.load(dst, weights_only=True)
    assert saved["matching_heuristics"] is False and model in saved["__author__"]
    net = tool.build_original_model(model)
    net.load_state_dict(saved["model"], strict=True)  # no missing, no unexpected keys, every shape fits
    # the configs/original/ models train their BatchNorms (SyncBN) and keep the checkpoint's counters
    assert any(key.endswith("num_batches_tracked") for key in saved["model"])
    # what it computes: tests/golden/test_golden.py (these are the golden weights)
    assert torch.equal(net.state_dict()["head.bbox_pred.bias"], r50_original["prediction_layers.0.bbox_layer.bias"])


@pytest.mark.parametrize("model", ["yolact_base", "yolact_plus_resnet50", "yolact_plus_base"])
def test_other_original_checkpoints_fit_their_models(model):
    original = _zeros(model)
    assert tool.choose_model(original, "weights.pth") == model
    net = tool.build_original_model(model)
    tool.check_matches_model(tool.fit_batch_norm_counters(tool.convert_yolact(original), net), net)


def test_yolact_plus_dcn_bias_is_folded_into_the_next_norm():
    """norm(conv(x) + b) = norm'(conv(x)) with running_mean' = running_mean - b (the output is test_golden's)."""
    original = _zeros("yolact_plus_resnet50")
    bias, mean = "backbone.layers.1.0.conv2.bias", "backbone.layers.1.0.bn2.running_mean"
    original[bias], original[mean] = torch.arange(128.0), torch.full((128,), 0.5)
    converted = tool.convert_yolact(original)
    assert not any(key.endswith("conv2.bias") for key in converted)
    torch.testing.assert_close(converted["backbone.bottom_up.res3.0.conv2.norm.running_mean"], 0.5 - torch.arange(128.0))


@pytest.mark.parametrize("model,depth", RECORDED.items())
def test_depth_and_model_detection(model, depth):
    keys = _keys_only(model)
    assert tool.resnet_depth(keys, "backbone.layers.2.") == depth
    assert tool.choose_model(keys, "weights/model_final.pth") == model
    wrong = {50: "yolact_base", 101: "yolact_resnet50"}[depth]
    if "plus" not in model:
        with pytest.raises(ValueError, match=f"{wrong} .* the weights are a ResNet-{depth}"):
            tool.choose_model(keys, "weights.pth", wrong)
        with pytest.raises(ValueError, match=f"the file name says {wrong}"):
            tool.choose_model(keys, f"{wrong}_54_800000.pth")
    if model == "yolact_base":
        assert tool.choose_model(keys, "w/yolact_im700_54_800000.pth") == "yolact_im700"
        assert tool.choose_model(keys, "w/yolact_im400_12_3000_interrupt.pth") == "yolact_im400"
        assert tool.choose_model(keys, "w/yolact_base_54_800000.pth", "yolact_im700") == "yolact_im700"


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
    """The keys the original's load_weights deletes: a third FPN downsample conv, ``backbone.layer*`` copies."""
    leftovers = {"fpn.downsample_layers.2.bias": torch.zeros(1), "backbone.layer1.0.conv1.weight": torch.zeros(1)}
    converted = tool.convert_yolact({**r50_original, **leftovers})
    assert converted.keys() == tool.convert_yolact(r50_original).keys()


def test_yolact_plus_model_must_match_the_weights(r50_original):
    with pytest.raises(ValueError, match=r"not YOLACT\+\+"):
        tool.choose_model(r50_original, "x.pth", model="yolact_plus_resnet50")


def _randomize_norms(net):
    generator = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean):
                tensor.data = torch.randn(tensor.shape, generator=generator) * 0.2 + (tensor is module.weight)
            module.running_var.data = torch.rand(module.running_var.shape, generator=generator) + 0.5
    return net


def test_imagenet_backbone_computes_torchvisions_features(tmp_path):
    """A torchvision ResNet-50 converted with --backbone gives, in the model's backbone, torchvision's C3-C5."""
    resnet = _randomize_norms(torchvision.models.resnet50()).eval()
    src, dst = str(tmp_path / "resnet50-19c8e357.pth"), str(tmp_path / "R-50.pth")
    torch.save(resnet.state_dict(), src)
    tool.main(["--backbone", src, dst])
    net = tool.build_original_model("yolact_resnet50").eval()
    saved = torch.load(dst, weights_only=True)["model"]
    assert not any(".fc." in key for key in saved)
    bottom_up = {key for key in net.state_dict() if key.startswith("backbone.bottom_up.")}
    assert saved.keys() == bottom_up
    net.load_state_dict(saved, strict=False)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = net.backbone.bottom_up(x)
        c = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        expected = {}
        for i, layer in enumerate((resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4), 2):
            c = layer(c)
            expected[f"res{i}"] = c
    assert set(features) == {"res3", "res4", "res5"}
    for name, value in features.items():
        scale = expected[name].abs().max()
        torch.testing.assert_close(value / scale, expected[name] / scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", sorted(tool.ORIGINAL_MODELS))
def test_original_configs_have_the_originals_settings(model):
    """configs/original/<model>.yaml against the settings recorded from the original's data/config.py."""
    original = golden.original_config(model)
    cfg = golden.golden_cfg(model)
    y = cfg.MODEL.YOLACT
    assert cfg.MODEL.RESNETS.DEPTH == tool.ORIGINAL_MODELS[model]
    assert y.INPUT_SIZE == original["max_size"] and y.NUM_CLASSES + 1 == original["num_classes"]
    assert y.ANCHOR.SIZES == original["pred_scales"]  # exactly: the matching rounds the anchors as the original
    assert [list(r) for r in y.ANCHOR.ASPECT_RATIOS] * 5 == [a[0] for a in original["pred_aspect_ratios"]]
    assert y.ANCHOR.SQUARE == original["use_square_anchors"]
    # the original's MEANS / STD are BGR; the configs take RGB images
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.PIXEL_MEAN == original["means"][::-1] and cfg.MODEL.PIXEL_STD == original["std"][::-1]
    post = y.POSTPROCESS
    assert (post.SCORE_THRESH, post.TOP_K, post.NMS_THRESH, cfg.TEST.DETECTIONS_PER_IMAGE) == (
        original["nms_conf_thresh"], original["nms_top_k"], original["nms_thresh"], original["max_num_detections"])
    assert (y.MATCHER.POSITIVE_IOU, y.MATCHER.NEGATIVE_IOU, y.MATCHER.CROWD_IOU) == (
        original["positive_iou_threshold"], original["negative_iou_threshold"], original["crowd_iou_threshold"])
    assert y.MASK_RESCORING.ENABLED == original["use_maskiou"]
    deformable = [d > 0 for d in original["dcn_layers"]]
    assert list(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) == deformable
    if any(deformable):
        assert y.DEFORM_INTERVAL == original["dcn_interval"]
    assert not cfg.MODEL.RESNETS.STRIDE_IN_1X1  # torchvision's layout, as the original's backbone.py
    cfg.merge_from_file(tool.original_config_file(model))  # golden_cfg leaves the weights out
    assert cfg.MODEL.WEIGHTS == f"output/original/{model}_54_800000.pth"


def test_batch_norm_counters_are_dropped_for_a_frozen_bn_model(r50_original):
    converted = tool.convert_yolact(r50_original)
    cfg = golden.golden_cfg("yolact_resnet50")
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    frozen = build_model(cfg)
    with pytest.raises(ValueError, match=r"unexpected backbone\.bottom_up\.res2\.0\.conv1\.norm\.num_batches_tracked"):
        tool.check_matches_model(converted, frozen)
    fitted = tool.fit_batch_norm_counters(converted, frozen)
    tool.check_matches_model(fitted, frozen)
    assert fitted.keys() == {k for k in converted if not k.endswith("num_batches_tracked")}
    trained = tool.build_original_model("yolact_resnet50")  # SyncBN: every counter kept
    assert tool.fit_batch_norm_counters(converted, trained).keys() == converted.keys()
