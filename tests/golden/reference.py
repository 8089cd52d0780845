"""
The golden outputs of the original YOLACT (README.md here) and what tests need to compare yolact_d2 with them:
the fixtures, the converted models of configs/original/, and :func:`assert_matches_golden` for ``Instances``.

Test modules anywhere under tests/ import this file by path (``import reference`` may find another folder's
module of that name)::

    spec = importlib.util.spec_from_file_location("golden_reference", os.path.join(TESTS, "golden", "reference.py"))
    golden = importlib.util.module_from_spec(spec); spec.loader.exec_module(golden)
    instances = golden.converted_model("yolact_resnet50")([{"image": ...}])[0]["instances"]
    golden.assert_matches_golden(instances, golden.load_golden("yolact_resnet50", "photo_480x640"))
"""
import functools
import gzip
import importlib.util
import json
import os
from typing import Dict, List, Sequence

import numpy as np
import torch

GOLDEN_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(GOLDEN_DIR))
# The models with recorded outputs, and the synthetic images they ran on (tests/golden/inputs.py).
MODELS = ("yolact_resnet50", "yolact_plus_resnet50")
IMAGES = ("photo_480x640", "small_200x300")
MODELS_FILE = "original_models.json.gz"

# Tolerances of float32 results. Scores and boxes differ from the original's by rounding only (about 1e-6 and
# 1e-4 px); a wrong class order, anchor or box coding moves them by orders of magnitude more.
SCORE_ATOL = 1e-4
BOX_ATOL = 0.05  # pixels of the image
MIN_MASK_IOU = 0.99


def _load_module(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inputs = _load_module("golden_inputs", os.path.join(GOLDEN_DIR, "inputs.py"))


@functools.lru_cache(maxsize=None)
def converter():
    """tools/convert_yolact_weights.py as a module."""
    return _load_module("convert_yolact_weights", os.path.join(REPO_ROOT, "tools", "convert_yolact_weights.py"))


@functools.lru_cache(maxsize=None)
def _read(filename: str) -> Dict:
    with gzip.open(os.path.join(GOLDEN_DIR, filename), "rt", encoding="utf-8") as f:
        return json.load(f)


def load_fixture(model: str) -> Dict:
    """Everything recorded for ``model`` (one of :data:`MODELS`): config, inference, inference_float64, training."""
    return _read(f"{model}.json.gz")


def load_golden(model: str, image: str) -> Dict:
    """The original's inference on ``image`` (one of :data:`IMAGES`): ``image``, ``head``, ``detections``."""
    return load_fixture(model)["inference"][image]


def original_keys_and_shapes(model: str) -> List:
    """The (key, shape) list of the original's state dict of ``model`` (yolact_base, yolact_plus_base too)."""
    return _read(MODELS_FILE)["state_dicts"][model]


def original_config(model: str) -> Dict:
    """Settings of the original's config of ``model`` (any model the converter supports)."""
    return _read(MODELS_FILE)["configs"][model]


def original_state_dict(model: str) -> Dict[str, torch.Tensor]:
    """The weights the golden outputs were recorded with, in the original's format (see inputs.py)."""
    return inputs.original_state_dict(original_keys_and_shapes(model))


def golden_image(image: str) -> np.ndarray:
    """The synthetic image ``image``, uint8 (H, W, 3) RGB (configs/original/ take RGB)."""
    return inputs.golden_image(image)


def golden_cfg(model: str):
    """The config configs/original/<model>.yaml on the CPU, without weights."""
    from detectron2.config import get_cfg

    from yolact_d2 import add_yolact_config

    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(converter().original_config_file(model))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def converted_state_dict(model: str, net: torch.nn.Module, dtype=torch.float32) -> Dict[str, torch.Tensor]:
    """
    The golden weights converted by tools/convert_yolact_weights.py for ``net``, their floating-point tensors
    in ``dtype`` before the conversion (which folds YOLACT++'s DCN biases into norms in that dtype).
    """
    tool = converter()
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in original_state_dict(model).items()}
    state_dict = tool.fit_batch_norm_counters(tool.convert_yolact(weights), net)
    tool.check_matches_model(state_dict, net)
    return state_dict


def converted_model(model: str, cfg=None, dtype=torch.float32) -> torch.nn.Module:
    """The model of ``cfg`` (default :func:`golden_cfg`) in ``dtype`` with the converted golden weights, in eval mode."""
    from detectron2.modeling import build_model

    net = build_model(cfg if cfg is not None else golden_cfg(model)).to(dtype)
    net.load_state_dict(converted_state_dict(model, net, dtype))
    return net.eval()


def image_input(image: str) -> Dict:
    """A detectron2 model input of the golden image: uint8 (3, H, W) RGB, as read."""
    return {"image": torch.from_numpy(np.ascontiguousarray(golden_image(image).transpose(2, 0, 1)))}


def decode_mask(runs: Sequence[int], height: int, width: int) -> np.ndarray:
    """A mask recorded as run lengths (row-major, starting with zeros) -> bool (H, W)."""
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(height, width)


def mask_ious(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """IoU of bool masks (D, H, W) pairwise in order; 1 where both are empty."""
    inter = (actual & expected).reshape(len(actual), -1).sum(1)
    union = (actual | expected).reshape(len(actual), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def assert_matches_golden(instances, golden: Dict, score_atol: float = SCORE_ATOL, box_atol: float = BOX_ATOL,
                          min_mask_iou: float = MIN_MASK_IOU) -> None:
    """
    Assert that detectron2 ``Instances`` of a golden image, in the image's pixels, are the original's detections
    ``golden`` (:func:`load_golden`): the same classes in the same order, scores (and YOLACT++'s mask scores)
    within ``score_atol``, boxes within ``box_atol`` pixels and each mask at IoU >= ``min_mask_iou``.
    """
    expected = golden["detections"]
    height, width = golden["image"]["height"], golden["image"]["width"]
    assert instances.image_size == (height, width), f"image size {instances.image_size}, golden {(height, width)}"
    classes = instances.pred_classes.tolist()
    assert classes == expected["classes"], (
        f"{len(classes)} detections of classes {classes[:12]}..., the original's {len(expected['classes'])} "
        f"{expected['classes'][:12]}...")
    np.testing.assert_allclose(instances.scores.detach().numpy(), expected["scores"], rtol=0, atol=score_atol)
    if "mask_scores" in expected:
        np.testing.assert_allclose(instances.mask_scores.detach().numpy(), expected["mask_scores"], rtol=0,
                                   atol=score_atol)
    np.testing.assert_allclose(instances.pred_boxes.tensor.detach().numpy(), np.reshape(expected["boxes"], (-1, 4)),
                               rtol=0, atol=box_atol)
    golden_masks = np.stack([decode_mask(r, height, width) for r in expected["masks_rle"]])
    ious = mask_ious(instances.pred_masks.numpy().astype(bool), golden_masks)
    worst = int(ious.argmin())
    assert ious[worst] >= min_mask_iou, f"mask {worst} has IoU {ious[worst]:.4f} with the original's"


def training_batch(input_size: int) -> List[Dict]:
    """
    The loss fixtures' batch as model inputs: its golden images as read, with their ``instances`` (``gt_boxes``,
    ``gt_classes``, ``gt_masks``, in pixels of the input_size network input) and ``crowd_boxes``.
    """
    from detectron2.structures import BitMasks, Boxes, Instances

    batch = []
    for name, target in zip(IMAGES, inputs.training_targets(input_size)):
        instances = Instances((input_size, input_size))
        instances.gt_boxes = Boxes(target["boxes"])
        instances.gt_classes = target["classes"]
        instances.gt_masks = BitMasks(target["masks"] > 0.5)
        batch.append({**image_input(name), "instances": instances, "crowd_boxes": Boxes(target["crowd_boxes"])})
    return batch


def converted_parameter(name: str) -> str:
    """yolact_d2's name of the original's parameter ``name`` (by the converter's renaming)."""
    module, _, param = name.rpartition(".")
    return f"{converter().yolact_module(module)}.{param}"
