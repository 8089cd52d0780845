"""
The models a benchmark compares: their configs (files, or detectron2's model zoo as ``model_zoo:NAME``) set to
one input size, device and work mode, and the models built from them: with random weights (whose batch norm
statistics are measured on the benchmark's images, so that activations and outputs look like a trained
model's) or with trained ones, in a precision: YOLACT by its ``MODEL.YOLACT.PRECISION`` (the network in that
precision, the post-processing in float32), other models by autocast around their whole forward
(:class:`AutocastModel`).
"""
import os
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from detectron2.config import CfgNode, get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from ..config import add_yolact_config
from ..layers import inference_autocast
from ..quiet_imports import quiet_third_party_imports
from ..utils.detectron2_adapter import ExtensibleCheckpointer

with quiet_third_party_imports():  # detectron2.model_zoo imports the deprecated pkg_resources
    from detectron2 import model_zoo

__all__ = [
    "MODEL_ZOO_PREFIX",
    "DEFAULT_CONFIGS",
    "resolve_path",
    "resolve_config_file",
    "config_label",
    "is_yolact",
    "load_config",
    "set_precision",
    "benchmark_config",
    "build_random_model",
    "build_trained_model",
    "AutocastModel",
    "in_precision",
]

MODEL_ZOO_PREFIX = "model_zoo:"
# YOLACT R-50, YOLACT++ R-50 and detectron2's Mask R-CNN R-50-FPN.
DEFAULT_CONFIGS = (
    "configs/yolact_R_50_FPN_550.yaml",
    "configs/yolact_plus_R_50_FPN_550.yaml",
    MODEL_ZOO_PREFIX + "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
)
# Relative paths are looked up in the working directory, then in the repository holding this package.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_path(path: str) -> str:
    """``path`` if it exists (or is absolute), else the repository's file of that relative path if it exists."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    in_repo = os.path.join(_REPO_ROOT, path)
    return in_repo if os.path.exists(in_repo) else path


def resolve_config_file(spec: str) -> str:
    """The config file of ``spec``: a path (see :func:`resolve_path`) or ``model_zoo:NAME`` for detectron2's
    ``model_zoo.get_config_file(NAME)``."""
    if spec.startswith(MODEL_ZOO_PREFIX):
        return model_zoo.get_config_file(spec[len(MODEL_ZOO_PREFIX):])
    return resolve_path(spec)


def config_label(spec: str) -> str:
    """A short name for a config: its file name without the extension."""
    return os.path.splitext(os.path.basename(spec))[0]


def is_yolact(cfg: CfgNode) -> bool:
    return cfg.MODEL.META_ARCHITECTURE == "YOLACT"


def load_config(spec: str, *, device: str, opts: Sequence[str] = ()) -> CfgNode:
    """A detectron2 config with yolact_d2's keys, merged from ``spec``, on ``device``, with ``opts`` applied."""
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(resolve_config_file(spec))
    cfg.MODEL.DEVICE = device
    cfg.merge_from_list(list(opts))
    return cfg


def _set_input_size(cfg: CfgNode, size: int) -> None:
    """YOLACT resizes inside the model to its square input; an R-CNN gets ``size`` as both test size limits,
    so that a ``size`` x ``size`` image is fed unchanged (and is padded to the FPN's divisibility)."""
    if is_yolact(cfg):
        cfg.MODEL.YOLACT.INPUT_SIZE = size
    else:
        cfg.INPUT.MIN_SIZE_TEST = size
        cfg.INPUT.MAX_SIZE_TEST = size


def _set_fixed_detections(cfg: CfgNode, num_detections: int) -> None:
    """Score threshold 0 and ``num_detections`` per image: every model emits exactly that many (the work is
    equal); the count is reported with each measurement to show it."""
    cfg.TEST.DETECTIONS_PER_IMAGE = num_detections
    if is_yolact(cfg):
        cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.0
    else:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0


def set_precision(cfg: CfgNode, precision: str) -> CfgNode:
    """``cfg`` with a YOLACT's ``MODEL.YOLACT.PRECISION`` set to ``precision`` (others: :func:`in_precision`)."""
    if is_yolact(cfg):
        cfg.MODEL.YOLACT.PRECISION = precision
    return cfg


def benchmark_config(
    spec: str, *, device: str, input_size: int, fixed_detections: Optional[int] = None, opts: Sequence[str] = (),
    precision: str = "float32",
) -> CfgNode:
    """
    ``spec`` with random weights (``MODEL.WEIGHTS ""``) at ``input_size``, at its own score threshold, or with
    ``fixed_detections`` detections per image when given. ``opts`` are applied last, then a YOLACT's
    ``precision`` (:func:`set_precision`).
    """
    cfg = load_config(spec, device=device)
    cfg.MODEL.WEIGHTS = ""
    _set_input_size(cfg, input_size)
    if fixed_detections is not None:
        _set_fixed_detections(cfg, fixed_detections)
    cfg.merge_from_list(list(opts))
    return set_precision(cfg, precision)


def _normalize_batch_norms(model: nn.Module, inputs: Sequence[Dict]) -> None:
    """
    Set the running statistics of every (frozen) batch norm to those of its input on ``inputs``, layer after
    layer in one forward, so that random weights keep activations at the scale trained ones give. With the
    identity statistics of an untrained FrozenBN, activations grow by orders of magnitude through a ResNet-50
    and the outputs degenerate (saturated scores, proposals clipped to empty boxes), which changes the work.
    """

    def calibrate(module, args):
        x = args[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)))

    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d, nn.SyncBatchNorm))]
    handles = [m.register_forward_pre_hook(calibrate) for m in norms if m.running_mean is not None]
    try:
        with torch.no_grad():
            model(list(inputs))
    finally:
        for handle in handles:
            handle.remove()


def build_random_model(cfg: CfgNode, inputs: Sequence[Dict]) -> nn.Module:
    """
    The config's model with seeded random weights, its batch norm statistics taken from ``inputs`` (detectron2
    input dicts, see :func:`_normalize_batch_norms`), in eval mode.
    """
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _normalize_batch_norms(model, inputs)
    return model


class _RecordingCheckpointer(ExtensibleCheckpointer):
    """A DetectionCheckpointer that keeps the keys that did not fit the model, which detectron2 only logs."""

    def load_model_weights(self, checkpoint):
        self.incompatible = super().load_model_weights(checkpoint)
        return self.incompatible


def build_trained_model(cfg: CfgNode) -> nn.Module:
    """
    The config's model with the weights of ``cfg.MODEL.WEIGHTS``, in eval mode.

    Raises:
        ValueError: when the checkpoint lacks some of the model's tensors or has them in other shapes (e.g. it
            was trained with another anchor layout): detectron2's loader only warns and keeps those tensors
            random, which would time and score a different model.
    """
    model = build_model(cfg).eval()
    checkpointer = _RecordingCheckpointer(model)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    incompatible = checkpointer.incompatible
    wrong = [f"{key} {tuple(got)} (model {tuple(want)})" for key, got, want in incompatible.incorrect_shapes]
    if incompatible.missing_keys or wrong:
        raise ValueError(
            f"{cfg.MODEL.WEIGHTS} does not fit the config's model: missing {incompatible.missing_keys}, "
            f"other shapes {wrong}; was it trained with another config?"
        )
    return model


class AutocastModel(nn.Module):
    """A detectron2 model whose whole forward runs under :func:`yolact_d2.layers.inference_autocast`."""

    def __init__(self, model: nn.Module, precision: str, device: str):
        super().__init__()
        self.model = model
        self.precision = precision
        self.device = device

    def forward(self, batched_inputs):
        with inference_autocast(self.precision, self.device):
            return self.model(batched_inputs)


def in_precision(model: nn.Module, cfg: CfgNode, precision: str) -> nn.Module:
    """
    ``model``, built from ``cfg``, running inference in ``precision``: a YOLACT as it is (its config has the
    precision, :func:`set_precision`), another model in float32 as it is, else in an :class:`AutocastModel`.
    """
    if is_yolact(cfg):
        if model.precision != precision:
            raise ValueError(f"The YOLACT model runs in {model.precision}, not {precision}: build it from a config "
                             f"with MODEL.YOLACT.PRECISION {precision}")
        return model
    return model if precision == "float32" else AutocastModel(model, precision, cfg.MODEL.DEVICE)
