"""Configs of the benchmark: files or model zoo, one input size, default or fixed-detection mode."""
import os

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from yolact_d2.benchmark.inputs import inference_inputs, synthetic_images
from yolact_d2.benchmark.models import (
    DEFAULT_CONFIGS,
    AutocastModel,
    benchmark_config,
    build_random_model,
    build_trained_model,
    config_input_size,
    config_label,
    in_precision,
    is_yolact,
    resolve_config_file,
    resolve_path,
)
from yolact_d2.layers import precision as precision_module

YOLACT = "configs/embedded/yolact_R_18_shapes.yaml"


def test_default_configs_resolve_to_files():
    for spec in DEFAULT_CONFIGS:
        assert os.path.isfile(resolve_config_file(spec)), spec
    assert [config_label(s) for s in DEFAULT_CONFIGS] == [
        "yolact_R_50_FPN_550", "yolact_plus_R_50_FPN_550", "mask_rcnn_R_50_FPN_3x"]


def test_relative_paths_are_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.path.isfile(resolve_path(YOLACT))
    assert resolve_path("no/such/file.pth") == "no/such/file.pth"


def test_yolact_modes_and_input_size():
    cfg = benchmark_config(YOLACT, device="cpu", input_size=96)
    assert is_yolact(cfg) and cfg.MODEL.YOLACT.INPUT_SIZE == 96 and cfg.MODEL.WEIGHTS == ""
    assert cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH == 0.05
    fixed = benchmark_config(YOLACT, device="cpu", input_size=96, fixed_detections=7)
    assert fixed.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH == 0 and fixed.TEST.DETECTIONS_PER_IMAGE == 7


def test_without_an_input_size_each_config_keeps_its_own(mask_rcnn_config):
    yolact = benchmark_config(YOLACT, device="cpu", opts=["MODEL.YOLACT.INPUT_SIZE", "192"])
    assert config_input_size(yolact) == 192  # the embedded config's 256, overridden
    rcnn = benchmark_config(mask_rcnn_config, device="cpu")
    assert (rcnn.INPUT.MIN_SIZE_TEST, rcnn.INPUT.MAX_SIZE_TEST) == (256, 427) and config_input_size(rcnn) == 256
    rcnn.INPUT.MAX_SIZE_TEST = 200
    assert config_input_size(rcnn) == 200  # a square image of the min size would be shrunk to the max
    with pytest.raises(KeyError, match="MODEL.YOLACT.INPUT_SIZ"):  # load_yolact_config names unknown keys
        benchmark_config(YOLACT, device="cpu", opts=["MODEL.YOLACT.INPUT_SIZ", "192"])


def test_rcnn_modes_input_size_and_overrides(mask_rcnn_config):
    cfg = benchmark_config(mask_rcnn_config, device="cpu", input_size=96, fixed_detections=7,
                           opts=["MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.6"])
    assert not is_yolact(cfg)
    assert cfg.INPUT.MIN_SIZE_TEST == 96 and cfg.INPUT.MAX_SIZE_TEST == 96
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0 and cfg.TEST.DETECTIONS_PER_IMAGE == 7
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.6


def test_random_models_get_unit_scale_batch_norm_statistics():
    """An untrained R-50 with identity FrozenBN statistics blows activations up; the calibrated one does not."""
    cfg = benchmark_config(DEFAULT_CONFIGS[0], device="cpu", input_size=64)
    inputs = inference_inputs(synthetic_images(1, 64), cfg)
    model = build_random_model(cfg, inputs)
    assert model.training is False
    with torch.no_grad():
        features = model.backbone.bottom_up(model.preprocess_image(inputs)[0])
    assert all(f.abs().max() < 100 for f in features.values()), {k: float(f.abs().max()) for k, f in features.items()}


def test_trained_model_loads_its_checkpoint_and_rejects_one_of_another_layout(tmp_path):
    cfg = benchmark_config(YOLACT, device="cpu", input_size=96)
    torch.manual_seed(0)
    trained = build_model(cfg)
    DetectionCheckpointer(trained, save_dir=str(tmp_path)).save("model")
    cfg.MODEL.WEIGHTS = str(tmp_path / "model.pth")
    loaded = build_trained_model(cfg)
    for (name, got), want in zip(loaded.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(got, want), name
    one_size = cfg.clone()
    one_size.MODEL.YOLACT.ANCHOR.SIZES = [[11], [22], [45], [89], [179]]  # 3 anchors per cell instead of 9
    with pytest.raises(ValueError, match=r"head.bbox_pred.weight \[36, .* do not fit the model"):
        build_trained_model(one_size)


@pytest.fixture
def native_bfloat16(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)


def test_yolact_runs_in_the_precision_of_its_config(native_bfloat16):
    cfg = benchmark_config(YOLACT, device="cpu", input_size=96, precision="bfloat16",
                           opts=["MODEL.YOLACT.NUM_CLASSES", "3"])
    assert cfg.MODEL.YOLACT.PRECISION == "bfloat16" and cfg.MODEL.YOLACT.NUM_CLASSES == 3
    model = build_random_model(cfg, inference_inputs(synthetic_images(1, 96), cfg))
    assert in_precision(model, cfg, "bfloat16") is model and model.precision == "bfloat16"
    with pytest.raises(ValueError, match="runs in bfloat16, not float32: .* MODEL.YOLACT.PRECISION float32"):
        in_precision(model, cfg, "float32")


def test_other_models_run_under_autocast(mask_rcnn_config):
    cfg = benchmark_config(mask_rcnn_config, device="cpu", input_size=96, fixed_detections=5, precision="bfloat16")
    inputs = inference_inputs(synthetic_images(1, 96), cfg)
    model = build_random_model(cfg, inputs)
    assert in_precision(model, cfg, "float32") is model
    low = in_precision(model, cfg, "bfloat16")
    assert isinstance(low, AutocastModel) and low.model is model
    dtypes = []
    model.backbone.register_forward_hook(lambda module, args, out: dtypes.append(out["p2"].dtype))
    with torch.no_grad():
        full, got = model(inputs)[0]["instances"], low(inputs)[0]["instances"]
    assert dtypes == [torch.float32, torch.bfloat16]
    assert len(got) == len(full) == 5
    low.eval()  # an nn.Module: detectron2's evaluation switches its mode
    assert not low.training
