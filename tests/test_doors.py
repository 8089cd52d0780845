"""
Every way of running YOLACT on an image gives the same Instances: the model called on the image as read, the
COCO evaluation's test-time mapper, YolactPredictor, detectron2's DefaultPredictor on a YOLACT config, the demo's
predictor, the exported (TorchScript) model and the benchmark's inputs. Each hands the model the image as read
(or, for export, resizes it with the model's one resize), so only the model's resize happens.
"""
import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch

from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from yolact_d2.benchmark.inputs import inference_inputs, read_images
from yolact_d2.data import YolactDatasetMapper, read_image
from yolact_d2.engine import YolactPredictor
from yolact_d2.export import ExportedYolact, export_torchscript, preprocess_image

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning"),
]

SIZE = 64
# (height, width): an ordinary photo's shape and an extreme strip, which a shortest-edge resize first made
# 1333 x 89 before the model's resize
IMAGE_SIZES = [(48, 80), (100, 1500)]
TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _demo_module():
    spec = importlib.util.spec_from_file_location("yolact_tool_demo_doors", os.path.join(TOOLS, "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_image(folder, height, width):
    """A smooth random BGR image (bilinear upsampling of 8 x 8 noise) written as PNG; returns its path."""
    rng = np.random.default_rng(height * width)
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (width, height))
    path = str(folder / f"image_{height}x{width}.png")
    cv2.imwrite(path, image)
    return path


@pytest.fixture(scope="module", params=[False, True], ids=["square", "preserve_aspect_ratio"])
def doors(request, make_small_cfg, tmp_path_factory):
    """The config, the eager model (random weights, seeded) and, by name, each door as path -> Instances."""
    folder = tmp_path_factory.mktemp("doors")
    cfg = make_small_cfg(input_size=SIZE)
    cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO = request.param
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.1
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    cfg.DATASETS.TEST = ()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    cfg.MODEL.WEIGHTS = str(folder / "weights.pth")
    torch.save({"model": model.state_dict()}, cfg.MODEL.WEIGHTS)
    ts_path = str(folder / "model.ts")
    export_torchscript(model, preprocess_image(torch.zeros(3, SIZE, SIZE), SIZE), ts_path)
    cfg.freeze()

    def as_read(path):
        return torch.from_numpy(np.ascontiguousarray(read_image(path, "BGR").transpose(2, 0, 1)))

    def eager(path):
        with torch.no_grad():
            return model([{"image": as_read(path)}])[0]["instances"]

    mapper = YolactDatasetMapper(cfg, is_train=False)

    def evaluation(path):
        height, width = read_image(path, "BGR").shape[:2]
        with torch.no_grad():
            return model([mapper({"file_name": path, "image_id": 1, "height": height, "width": width})])[0]["instances"]

    yolact_predictor, default_predictor = YolactPredictor(cfg), DefaultPredictor(cfg)
    demo_predictor = _demo_module().InstancePredictor(cfg, confidence_threshold=0.0)
    exported = ExportedYolact(ts_path, cfg)
    doors = {
        "eval mapper": evaluation,
        "YolactPredictor file": lambda path: yolact_predictor(path)["instances"],
        "YolactPredictor array": lambda path: yolact_predictor(read_image(path, "BGR"))["instances"],
        "DefaultPredictor": lambda path: default_predictor(read_image(path, "BGR"))["instances"],
        "demo": lambda path: demo_predictor(read_image(path, "BGR")),
        "ExportedYolact": lambda path: exported([{"image": as_read(path)}])[0]["instances"],
    }
    paths = {size: _write_image(folder, *size) for size in IMAGE_SIZES}
    return cfg, model, eager, doors, paths


def _mask_ious(a, b):
    """(D,) IoU of boolean masks (D, H, W) pairwise in order."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _assert_same_instances(got, expected, door):
    assert got.image_size == expected.image_size, f"{door}: image size {got.image_size}"
    assert len(got) == len(expected), f"{door}: {len(got)} instances, the model {len(expected)}"
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(got.scores, expected.scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(got.pred_classes, expected.pred_classes), f"{door}: classes"
    ious = _mask_ious(got.pred_masks, expected.pred_masks)
    assert (ious > 0.99).all(), f"{door}: mask IoUs {ious.tolist()}"


@pytest.mark.parametrize("image_size", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_door_gives_the_models_instances_on_the_image_as_read(doors, image_size):
    _, _, eager, door_functions, paths = doors
    expected = eager(paths[image_size])
    assert expected.image_size == image_size and len(expected) > 0  # real detections to compare
    differing = {}
    for door, function in door_functions.items():
        try:
            _assert_same_instances(function(paths[image_size]), expected, door)
        except AssertionError as e:
            differing[door] = " ".join(str(e).split())[:300]
    assert not differing, f"doors giving other instances than the model: {sorted(differing)}; {differing}"


@pytest.mark.parametrize("image_size", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_benchmarks_fixed_size_inputs_are_the_models_resize(doors, image_size):
    cfg, model, _, _, paths = doors
    if cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO:
        pytest.skip("the benchmark times square INPUT_SIZE inputs; with PRESERVE_ASPECT_RATIO they are padded")
    raw = torch.from_numpy(np.ascontiguousarray(read_image(paths[image_size], "BGR").transpose(2, 0, 1)))
    with torch.no_grad():
        expected = model([{"image": raw, "height": SIZE, "width": SIZE}])[0]["instances"]
        got = model(inference_inputs(read_images([paths[image_size]], SIZE), cfg))[0]["instances"]
    assert len(expected) > 0
    _assert_same_instances(got, expected, "benchmark")
