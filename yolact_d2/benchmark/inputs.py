"""
The images every model of a benchmark sees: square ``S x S`` BGR tensors (3, S, S), synthetic and
deterministic (uint8) or read from files (float32, resized by YOLACT's own resize), turned into detectron2's
input dicts for each config (at inference, and with synthetic ground truth for training).
"""
from typing import Dict, List, Sequence

import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.structures import BitMasks, Instances

from ..data import read_image
from ..data.build import config_num_classes
from ..modeling.meta_arch import resize_to_input

__all__ = ["synthetic_images", "read_images", "inference_inputs", "training_inputs"]


def synthetic_images(num_images: int, size: int, seed: int = 0) -> List[torch.Tensor]:
    """``num_images`` deterministic random BGR images (3, size, size), uint8."""
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8)) for _ in range(num_images)]


def read_images(paths: Sequence[str], size: int) -> List[torch.Tensor]:
    """
    The image files (read by :func:`yolact_d2.data.read_image`: upright, gray / alpha / 16-bit made 8-bit BGR),
    resized to size x size by YOLACT's test-time resize (:func:`yolact_d2.modeling.meta_arch.resize_to_input`,
    unrounded): (3, size, size) float32 pixel values, the very input YOLACT at ``INPUT_SIZE`` size makes of each
    file (before normalisation), which it then does not resize again.
    """
    images = []
    for path in paths:
        image = torch.from_numpy(np.ascontiguousarray(read_image(path, format="BGR").transpose(2, 0, 1)))
        images.append(resize_to_input(image.float(), size, preserve_aspect_ratio=False)[0])
    return images


def inference_inputs(images: Sequence[torch.Tensor], cfg: CfgNode) -> List[Dict]:
    """detectron2 input dicts of the BGR ``images``, in the config's ``INPUT.FORMAT`` ("BGR" or "RGB")."""
    if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
        raise ValueError(f"The benchmark feeds BGR or RGB images; the config has INPUT.FORMAT {cfg.INPUT.FORMAT}")
    flip = cfg.INPUT.FORMAT == "RGB"
    return [
        {"image": image.flip(0) if flip else image, "height": image.shape[1], "width": image.shape[2]}
        for image in images
    ]


def _synthetic_instances(size: int, num_instances: int, num_classes: int, rng) -> Instances:
    """``num_instances`` elliptic objects of random classes: gt_masks (BitMasks), their gt_boxes, gt_classes."""
    rows, cols = np.mgrid[0:size, 0:size]
    masks = []
    for _ in range(num_instances):
        w, h = rng.uniform(0.15, 0.4, 2) * size
        cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
        masks.append(((cols - cx) / (w / 2)) ** 2 + ((rows - cy) / (h / 2)) ** 2 <= 1)
    gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
    instances = Instances((size, size))
    instances.gt_boxes = gt_masks.get_bounding_boxes()
    instances.gt_classes = torch.from_numpy(rng.integers(0, num_classes, num_instances))
    instances.gt_masks = gt_masks
    return instances


def training_inputs(images: Sequence[torch.Tensor], cfg: CfgNode, num_instances: int = 3, seed: int = 0):
    """
    :func:`inference_inputs` with ``instances``: ``num_instances`` synthetic objects per image (boxes, classes
    and masks in the image's pixels, which are also YOLACT's network input when the image is its input size).
    """
    rng = np.random.default_rng(seed)
    num_classes = config_num_classes(cfg)
    inputs = inference_inputs(images, cfg)
    for x in inputs:
        x["instances"] = _synthetic_instances(x["image"].shape[-1], num_instances, num_classes, rng)
    return inputs
