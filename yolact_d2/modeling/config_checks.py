"""
Checks of a YOLACT config made before its model is built (:meth:`YOLACT.from_config`): values no model can have
(no prototypes, empty anchor lists, non-positive sizes), thresholds outside [0, 1], component names that are
not registered, and a ``MODEL.DEVICE`` this machine does not have. One error lists every problem, each naming
the key, its value and the rule, instead of a shape error deep in a layer or a model that silently outputs
nothing.

``MODEL.YOLACT.INPUT_SIZE`` only needs to be positive: the FPN resizes each coarser level to the exact size of
the finer one, and the anchors are centred on each level's own grid, so sizes that are not multiples of the
strides (8 to 128) build, train and run.
"""
from typing import Callable, List, Tuple

import torch

from ..layers import PRECISIONS
from .head import YOLACT_HEAD_REGISTRY
from .postprocessing import POSTPROCESSOR_REGISTRY
from .protonet import PROTONET_REGISTRY

__all__ = ["check_yolact_config"]


def _positive(value) -> bool:
    return value > 0


def _probability(value) -> bool:
    return 0.0 <= value <= 1.0


def _positive_list(values) -> bool:
    return all(v > 0 for v in values)


def _non_empty_positive_lists(lists) -> bool:
    return len(lists) > 0 and all(len(values) > 0 and _positive_list(values) for values in lists)


# (key, predicate on its value, the rule the error states)
_RULES: List[Tuple[str, Callable, str]] = [
    ("MODEL.YOLACT.NUM_CLASSES", _positive, "at least 1"),
    ("MODEL.YOLACT.NUM_PROTOTYPES", _positive, "at least 1"),
    ("MODEL.YOLACT.INPUT_SIZE", _positive, "a positive number of pixels (any, not only multiples of the strides)"),
    ("MODEL.YOLACT.IN_FEATURES", lambda v: len(v) > 0, "at least one backbone feature, e.g. ['p3', ..., 'p7']"),
    ("MODEL.YOLACT.ANCHOR.SIZES", _non_empty_positive_lists, "one non-empty list of positive sizes per level"),
    ("MODEL.YOLACT.ANCHOR.ASPECT_RATIOS", _non_empty_positive_lists, "a non-empty list of positive ratios"),
    ("MODEL.YOLACT.PROTONET.CONV_DIMS", _positive_list, "positive channel counts"),
    ("MODEL.YOLACT.PROTONET.POST_UPSAMPLE_CONV_DIMS", _positive_list, "positive channel counts"),
    ("MODEL.YOLACT.PROTONET.UPSAMPLE_FACTOR", _positive, "at least 1 (1: no upsampling)"),
    ("MODEL.YOLACT.HEAD.SHARED_CONV_DIMS", _positive_list, "positive channel counts"),
    ("MODEL.YOLACT.MASK_RESCORING.CONV_DIMS", _positive_list, "positive channel counts"),
    ("MODEL.YOLACT.MATCHER.POSITIVE_IOU", _probability, "in [0, 1]"),
    ("MODEL.YOLACT.MATCHER.NEGATIVE_IOU", _probability, "in [0, 1]"),
    ("MODEL.YOLACT.MATCHER.CROWD_IOU", _probability, "in [0, 1]"),
    ("MODEL.YOLACT.LOSS.MASKS_TO_TRAIN", _positive, "at least 1"),
    ("MODEL.YOLACT.POSTPROCESS.TOP_K", _positive, "at least 1"),
    ("MODEL.YOLACT.POSTPROCESS.NMS_THRESH", _probability, "in [0, 1]"),
    ("MODEL.YOLACT.POSTPROCESS.SCORE_THRESH", _probability, "in [0, 1]"),
    ("MODEL.YOLACT.POSTPROCESS.MASK_THRESH", _probability, "in [0, 1]"),
    ("TEST.DETECTIONS_PER_IMAGE", _positive, "at least 1"),
    ("MODEL.YOLACT.PRECISION", lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
]

_REGISTRIES = [
    ("MODEL.YOLACT.PROTONET.NAME", PROTONET_REGISTRY),
    ("MODEL.YOLACT.HEAD.NAME", YOLACT_HEAD_REGISTRY),
    ("MODEL.YOLACT.POSTPROCESS.NAME", POSTPROCESSOR_REGISTRY),
]


def _value(cfg, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _device_problem(device: str) -> str:
    """Why ``MODEL.DEVICE`` cannot be used on this machine, or "" when it can."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        return f"MODEL.DEVICE '{device}' is not a torch device; use 'cpu' or 'cuda' (or 'cuda:N')"
    if parsed.type != "cuda":
        return ""
    if not torch.cuda.is_available():
        return (
            f"MODEL.DEVICE is '{device}' but torch finds no CUDA GPU on this machine (torch.cuda.is_available() is "
            f"False); run on the CPU with MODEL.DEVICE cpu"
        )
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        return f"MODEL.DEVICE is '{device}' but this machine has {torch.cuda.device_count()} CUDA GPUs"
    return ""


def check_yolact_config(cfg) -> None:
    """
    Raise a ValueError listing every value of ``cfg.MODEL.YOLACT`` (and ``MODEL.DEVICE``,
    ``TEST.DETECTIONS_PER_IMAGE``) that no YOLACT model can be built or run with; return None when there is none.
    """
    problems = [
        f"{key} is {_value(cfg, key)}: it must be {rule}" for key, ok, rule in _RULES if not ok(_value(cfg, key))
    ]
    for key, registry in _REGISTRIES:
        name = _value(cfg, key)
        if name not in registry:
            problems.append(f"{key} '{name}' is not registered; registered: {sorted(n for n, _ in registry)}")
    device = _device_problem(cfg.MODEL.DEVICE)
    if device:
        problems.append(device)
    if problems:
        raise ValueError("Invalid YOLACT config:\n  " + "\n  ".join(problems))
