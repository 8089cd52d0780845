"""
The fixed inputs of the golden outputs (README.md here): weights, images and a training batch, each a
deterministic function of its name, so that dev/make_golden_outputs.py (which runs the original YOLACT on them)
and the tests (which run yolact_d2 on them) build the same ones without storing them.

Only numpy and torch: the script imports this file by path next to the original's code.
"""
import zlib
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

# The synthetic images: name -> (height, width). 480 x 640 is a typical photo; 200 x 300 is smaller than the
# network input and of another aspect ratio (it is upsampled).
IMAGE_SIZES = {"photo_480x640": (480, 640), "small_200x300": (200, 300)}

# The scale of each kind of weight, chosen so that random weights give confident detections (the original's
# 100 per image, scores about 0.15-0.85) whose float32 results do not depend on rounding (the script checks them
# against float64): the last norm of each block shrinks its residual branch, the class scores are spread (large
# class-logit weights, a background bias), the mask coefficients are near +-1 and the prototypes small, so that
# mask logits stay where sigmoid is not saturated in float32 (the original's mask loss, a BCE of sigmoid outputs,
# clamps log(0) where it is).
_CONV_GAIN = 1.4
_CLASS_LOGIT_GAIN = 3.0
_BACKGROUND_BIAS = 11.0
_RESIDUAL_NORM_SCALE = 0.3
_OFFSET_GAIN = 0.3
_COEF_GAIN = 3.0
_PROTO_GAIN = 0.3


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def original_weight(name: str, shape: Sequence[int]) -> torch.Tensor:
    """
    The tensor ``name`` (a key of the original's state dict, e.g. ``backbone.layers.0.0.bn1.running_var``) of
    the given shape: a function of (name, shape) only.

    Conv weights are Gaussian of std gain / sqrt(fan-in); conv biases and norm shifts / means are small
    Gaussians; norm scales and variances are positive around 1. ``prediction_layers.0.conf_layer``'s class 0
    (the original's background) gets a positive bias.
    """
    shape = tuple(int(s) for s in shape)
    rng = _rng(name)
    if name.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.int64)
    module, _, param = name.rpartition(".")
    if len(shape) == 4:
        gain = _CONV_GAIN
        if module.endswith("conf_layer"):
            gain = _CLASS_LOGIT_GAIN
        elif module.endswith("mask_layer"):
            gain = _COEF_GAIN
        elif module.endswith("proto_net.10"):
            gain = _PROTO_GAIN
        elif module.endswith("conv_offset_mask"):
            gain = _OFFSET_GAIN
        values = rng.standard_normal(shape) * gain / np.sqrt(np.prod(shape[1:]))
        if module.endswith("conf_layer"):  # no common mode: classes compete on the features, not their level
            values -= values.mean(axis=(1, 2, 3), keepdims=True)
    elif param == "running_var":
        values = rng.uniform(0.5, 1.5, shape)
    elif param == "weight":  # a norm's scale
        scale = _RESIDUAL_NORM_SCALE if module.endswith(("bn3", "downsample.1")) else 1.0
        values = scale * rng.uniform(0.8, 1.2, shape)
    else:  # conv biases, norm shifts and running means
        values = 0.1 * rng.standard_normal(shape)
        if module.endswith("conf_layer") and param == "bias":
            num_anchors = shape[0] // 81
            values.reshape(num_anchors, 81)[:, 0] += _BACKGROUND_BIAS
    return torch.from_numpy(np.asarray(values, dtype=np.float32))


def original_state_dict(keys_and_shapes: Sequence[Tuple[str, Sequence[int]]]) -> Dict[str, torch.Tensor]:
    """The original-format state dict with the given keys and shapes (see :func:`original_weight`)."""
    return {name: original_weight(name, shape) for name, shape in keys_and_shapes}


def golden_image(name: str) -> np.ndarray:
    """
    Synthetic image ``name`` (a key of :data:`IMAGE_SIZES`): uint8 (H, W, 3), RGB. Smooth colour gradients with
    a few filled ellipses and rectangles and mild noise, so that the network sees structure at every scale.
    """
    height, width = IMAGE_SIZES[name]
    rng = _rng(name)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = y / height, x / width
    image = np.stack([
        120 + 80 * np.sin(3 * x + 1), 100 + 90 * np.cos(2 * y + 4 * x), 90 + 70 * np.sin(5 * y * x + 2)
    ], axis=-1)
    for _ in range(6):
        cx, cy = rng.uniform(0.1, 0.9, 2)
        rx, ry = rng.uniform(0.05, 0.3, 2)
        color = rng.uniform(0, 255, 3)
        if rng.uniform() < 0.5:
            inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
        else:
            inside = (abs(x - cx) <= rx) & (abs(y - cy) <= ry)
        image[inside] = color
    image += rng.normal(0, 6, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# The training batch of the loss fixtures: one image (the first of IMAGE_SIZES), its objects as (class, box) with
# the box XYXY in pixels of the S x S network input at S = 550 (scaled to other sizes by training_targets), and
# a crowd box. Two objects have no anchor at the positive IoU (0.5), so the matching forces one positive: for
# the 100 x 20 box several anchors tie for the best IoU (anchors of one shape shifted along the box; the
# original's pick is the tie-break), for the 29 x 8.7 box one anchor is the best by a margin in both models.
_OBJECTS_550 = (
    ((3, (60.0, 80.0, 260.0, 300.0)), (17, (250.0, 300.0, 350.0, 320.0)), (0, (300.0, 40.0, 520.0, 200.0)),
     (56, (350.0, 320.0, 470.0, 530.0)), (9, (477.0, 373.1, 506.0, 381.8))),
)
_CROWDS_550 = (((40.0, 340.0, 300.0, 530.0),),)


def training_targets(input_size: int = 550) -> List[Dict[str, torch.Tensor]]:
    """
    The fixed batch's targets, per image: ``classes`` (G,) int64 (0-based foreground classes), ``boxes`` (G, 4)
    float32 XYXY in pixels of the input_size x input_size network input, ``masks`` (G, S, S) float32 0/1 (an
    ellipse inscribed in each box) and ``crowd_boxes`` (K, 4) in the same pixels.
    """
    scale = input_size / 550
    grid = torch.arange(input_size, dtype=torch.float32) + 0.5
    targets = []
    for objects, crowds in zip(_OBJECTS_550, _CROWDS_550):
        boxes = torch.tensor([box for _, box in objects], dtype=torch.float32) * scale
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
        masks = ((grid[None, None, :] - cx[:, None, None]) / rx[:, None, None]) ** 2 + (
            (grid[None, :, None] - cy[:, None, None]) / ry[:, None, None]) ** 2 <= 1
        targets.append({
            "classes": torch.tensor([c for c, _ in objects], dtype=torch.int64),
            "boxes": boxes,
            "masks": masks.float(),
            "crowd_boxes": torch.tensor(crowds, dtype=torch.float32).reshape(-1, 4) * scale,
        })
    return targets
