"""
Every way of running YOLACT on an image gives the original's detections (README.md here): the golden weights,
converted into configs/original/yolact_resnet50.yaml's model, on the golden 480 x 640 photo written to a PNG,
through the COCO evaluation (``train_net.py --eval-only``: YolactTrainer.test with its test loader), YolactPredictor
(a file, a BGR array), detectron2's DefaultPredictor, the demo's predictor, ExportedYolact on the TorchScript
export and the benchmark's inputs; YOLACT++ (yolact_plus_resnet50) through the evaluation. The ONNX export of the
same model, whose runtime shares ExportedYolact's resize, takes tens of seconds on a CPU and is left out.
tests/test_doors.py checks that the doors agree with one another on a small random model.

Run with ``-s`` to see one line per door: the largest score and box differences and the least mask IoU with the
original's detections.
"""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.engine import DefaultPredictor
from detectron2.evaluation import DatasetEvaluator

from yolact_d2.benchmark.inputs import inference_inputs, read_images
from yolact_d2.data import read_image, register_coco_dataset
from yolact_d2.engine import YolactPredictor, YolactTrainer
from yolact_d2.export import ExportedYolact, export_torchscript, preprocess_image

GOLDEN_DIR = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(os.path.dirname(os.path.dirname(GOLDEN_DIR)), "tools")


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden = _load_module("golden_reference", os.path.join(GOLDEN_DIR, "reference.py"))

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning"),
]

IMAGE = "photo_480x640"  # to 550 x 550: its width shrinks (where a PIL resize would antialias), its height grows
DATASET = "golden_doors_photo"


class _KeepInstances(DatasetEvaluator):
    """An evaluator that keeps the ``Instances`` the evaluation computes, by image id."""

    def reset(self):
        self.instances = {}

    def process(self, inputs, outputs):
        for x, y in zip(inputs, outputs):
            self.instances[x["image_id"]] = y["instances"].to("cpu")

    def evaluate(self):
        return {}


def _write_dataset(folder, image):
    """A COCO json of the one image ``photo.png`` (written losslessly from RGB ``image``), with the 80 classes."""
    Image.fromarray(image).save(os.path.join(folder, "photo.png"))
    height, width = image.shape[:2]
    content = {
        "images": [{"id": 1, "file_name": "photo.png", "height": height, "width": width}],
        "annotations": [],
        "categories": [{"id": k + 1, "name": f"class_{k}"} for k in range(80)],
    }
    json_file = os.path.join(folder, "photo.json")
    with open(json_file, "w") as f:
        json.dump(content, f)
    return json_file


def _door_cfg(model, folder):
    """configs/original/<model>.yaml on the CPU, evaluating the photo's dataset in this process."""
    cfg = golden.golden_cfg(model)
    cfg.DATASETS.TEST = (DATASET,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = folder
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """
    A dict: ``cfg`` (yolact_resnet50's, frozen, with the converted weights saved as MODEL.WEIGHTS and DATASETS.TEST
    the photo's dataset), ``model`` (the converted model), ``path`` (the photo's PNG), ``folder`` (for exports)
    and ``summary`` (door -> comparison line, printed at the end).
    """
    folder = str(tmp_path_factory.mktemp("golden_doors"))
    image = golden.golden_image(IMAGE)
    register_coco_dataset(DATASET, _write_dataset(folder, image), folder)
    path = os.path.join(folder, "photo.png")
    assert np.array_equal(read_image(path, "RGB"), image)  # the file holds the pixels the original saw

    cfg = _door_cfg("yolact_resnet50", folder)
    model = golden.converted_model("yolact_resnet50", cfg)
    cfg.MODEL.WEIGHTS = os.path.join(folder, "yolact_resnet50.pth")
    torch.save({"model": model.state_dict()}, cfg.MODEL.WEIGHTS)
    cfg.freeze()
    summary = {}
    yield {"cfg": cfg, "model": model, "path": path, "folder": folder, "summary": summary}
    print(f"\nyolact_d2 against the original's detections on {IMAGE} (image pixels):")
    for door, line in summary.items():
        print(f"  {door:46s} {line}")


def _comparison(instances, expected):
    """One line: the detections' count, max score and box (px) differences and least mask IoU with ``expected``."""
    detections = expected["detections"]
    classes, expected_classes = instances.pred_classes.tolist(), detections["classes"]
    if classes != expected_classes:
        first = next((i for i, (a, b) in enumerate(zip(classes, expected_classes)) if a != b), None)
        return (f"{len(classes)} detections, the original's {len(expected_classes)}; classes differ from detection "
                f"{first if first is not None else min(len(classes), len(expected_classes))}")
    height, width = instances.image_size
    masks = np.stack([golden.decode_mask(r, height, width) for r in detections["masks_rle"]])
    score = np.abs(instances.scores.numpy() - detections["scores"]).max()
    box = np.abs(instances.pred_boxes.tensor.numpy() - np.reshape(detections["boxes"], (-1, 4))).max()
    iou = golden.mask_ious(instances.pred_masks.numpy(), masks).min()
    return f"{len(instances)} detections, max score diff {score:.1e}, max box diff {box:.1e} px, min mask IoU {iou:.4f}"


def _check_door(setup, door, instances, model="yolact_resnet50"):
    expected = golden.load_golden(model, IMAGE)
    setup["summary"][f"{model} {door}"] = _comparison(instances, expected)
    golden.assert_matches_golden(instances, expected)


def _rgb_tensor(path):
    return torch.from_numpy(np.ascontiguousarray(read_image(path, "RGB").transpose(2, 0, 1)))


def _evaluation(cfg, model):
    """The Instances of YolactTrainer.test (as ``--eval-only``) on the photo's dataset."""
    evaluator = _KeepInstances()
    YolactTrainer.test(cfg, model, [evaluator])
    return evaluator.instances[1]


def _benchmark(setup, model):
    """The benchmark's input (the file resized to S x S by its reader), output at the photo's size."""
    inputs = inference_inputs(read_images([setup["path"]], setup["cfg"].MODEL.YOLACT.INPUT_SIZE), setup["cfg"])
    height, width = golden.golden_image(IMAGE).shape[:2]
    with torch.no_grad():
        return model([{**inputs[0], "height": height, "width": width}])[0]["instances"]


def test_evaluation(setup):
    _check_door(setup, "evaluation (--eval-only)", _evaluation(setup["cfg"], setup["model"]))


def test_evaluation_yolact_plus(setup):
    model = "yolact_plus_resnet50"
    cfg = _door_cfg(model, setup["folder"])
    _check_door(setup, "evaluation (--eval-only)", _evaluation(cfg, golden.converted_model(model, cfg)), model)


@pytest.fixture(scope="module")
def yolact_predictor(setup):
    return YolactPredictor(setup["cfg"])


def test_yolact_predictor_on_a_file(setup, yolact_predictor):
    _check_door(setup, "YolactPredictor(file)", yolact_predictor(setup["path"])["instances"])


def test_yolact_predictor_on_an_array(setup, yolact_predictor):
    instances = yolact_predictor(read_image(setup["path"], "BGR"))["instances"]
    _check_door(setup, "YolactPredictor(BGR array)", instances)


def test_default_predictor(setup):
    predictor = DefaultPredictor(setup["cfg"])
    _check_door(setup, "DefaultPredictor(BGR array)", predictor(read_image(setup["path"], "BGR"))["instances"])


def test_demo(setup):
    demo = _load_module("yolact_tool_demo_golden", os.path.join(TOOLS, "demo.py"))
    predictor = demo.InstancePredictor(setup["cfg"], confidence_threshold=0.0)
    _check_door(setup, "demo InstancePredictor", predictor(read_image(setup["path"], "BGR")))


def test_exported_torchscript(setup):
    cfg, image = setup["cfg"], _rgb_tensor(setup["path"])
    path = os.path.join(setup["folder"], "model.ts")
    export_torchscript(setup["model"], preprocess_image(image, cfg.MODEL.YOLACT.INPUT_SIZE), path)
    _check_door(setup, "ExportedYolact(.ts)", ExportedYolact(path, cfg)([{"image": image}])[0]["instances"])


def test_benchmark(setup):
    _check_door(setup, "benchmark inputs", _benchmark(setup, setup["model"]))
