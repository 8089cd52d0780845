"""YOLACT's prediction head: class, box and mask-coefficient branches shared across pyramid levels."""
import math
from typing import List, Tuple

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry

from ..layers import conv_relu_stack

__all__ = ["YOLACT_HEAD_REGISTRY", "YolactHead", "YolactDecoupledHead", "build_yolact_head"]

YOLACT_HEAD_REGISTRY = Registry("YOLACT_HEAD")
YOLACT_HEAD_REGISTRY.__doc__ = """
Registry for YOLACT prediction heads, selected by ``MODEL.YOLACT.HEAD.NAME``; called as
``obj(cfg, input_shapes, num_anchors)`` with the ShapeSpecs of ``MODEL.YOLACT.IN_FEATURES`` and the number
of anchors per location. A head maps a list of feature maps to (class logits, box deltas, coefficients),
each concatenated over levels: (N, R, C + 1), (N, R, 4), (N, R, k).
"""


def _flatten(x: torch.Tensor, last_dim: int) -> torch.Tensor:
    """(N, A * D, H, W) -> (N, H * W * A, D): row, column, then anchor, as the anchors are ordered."""
    n = x.shape[0]
    return x.permute(0, 2, 3, 1).reshape(n, -1, last_dim)


@YOLACT_HEAD_REGISTRY.register()
class YolactHead(nn.Module):
    """
    RetinaNet-style but lighter: shared 3x3 conv (+ optional norm) + ReLU layers, then three parallel 3x3
    convs giving per anchor C + 1 class logits (background last, for a softmax), 4 box deltas (SSD coding)
    and k mask coefficients (tanh). One set of weights for every pyramid level.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_prototypes: int,
        shared_conv_dims: List[int],
        norm: str = "",
        prior_prob: float = 0.0,
    ):
        """
        Args:
            prior_prob: when > 0, the class conv's biases start so that at every anchor each foreground class
                has this softmax probability and the background the rest (for the focal loss); 0: zero biases.
        """
        super().__init__()
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self._build_towers(in_channels, shared_conv_dims, norm)
        dim = shared_conv_dims[-1] if shared_conv_dims else in_channels
        self.cls_score = nn.Conv2d(dim, num_anchors * (num_classes + 1), 3, padding=1)
        self.bbox_pred = nn.Conv2d(dim, num_anchors * 4, 3, padding=1)
        self.coef_pred = nn.Conv2d(dim, num_anchors * num_prototypes, 3, padding=1)
        for layer in (self.cls_score, self.bbox_pred, self.coef_pred):
            weight_init.c2_xavier_fill(layer)
        if prior_prob > 0:
            self._init_class_prior(prior_prob)

    def _init_class_prior(self, prior_prob: float):
        """Foreground biases 0 and background bias log(1 / p - C): softmax gives each foreground class p."""
        if prior_prob * self.num_classes >= 1:
            raise ValueError(
                f"MODEL.YOLACT.HEAD.PRIOR_PROB={prior_prob} leaves no probability to the background with "
                f"{self.num_classes} classes: it must be below 1 / {self.num_classes}"
            )
        with torch.no_grad():
            biases = self.cls_score.bias.view(-1, self.num_classes + 1)
            biases.zero_()
            biases[:, -1] = math.log(1 / prior_prob - self.num_classes)

    def _build_towers(self, in_channels: int, conv_dims: List[int], norm: str):
        self.shared = conv_relu_stack(in_channels, conv_dims, norm)

    def _towers(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (N, D, H, W) features of one level that the class, box and coefficient convs read."""
        x = self.shared(x)
        return x, x, x

    @classmethod
    def from_config(cls, cfg, input_shapes: List[ShapeSpec], num_anchors: int):
        channels = {s.channels for s in input_shapes}
        if len(channels) != 1:
            raise ValueError(f"YolactHead shares weights across levels; got channel counts {sorted(channels)}")
        return {
            "in_channels": channels.pop(),
            "num_anchors": num_anchors,
            "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES,
            "num_prototypes": cfg.MODEL.YOLACT.NUM_PROTOTYPES,
            "shared_conv_dims": list(cfg.MODEL.YOLACT.HEAD.SHARED_CONV_DIMS),
            "norm": cfg.MODEL.YOLACT.HEAD.NORM,
            "prior_prob": cfg.MODEL.YOLACT.HEAD.PRIOR_PROB,
        }

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            features: per level (N, C, Hi, Wi).
        Returns:
            cls_logits (N, R, num_classes + 1), box_deltas (N, R, 4), coefficients (N, R, k) in [-1, 1],
            R = sum_i Hi * Wi * A, ordered by level, row, column, anchor.
        """
        cls_logits, box_deltas, coefs = [], [], []
        for x in features:
            cls_x, box_x, coef_x = self._towers(x)
            cls_logits.append(_flatten(self.cls_score(cls_x), self.num_classes + 1))
            box_deltas.append(_flatten(self.bbox_pred(box_x), 4))
            coefs.append(_flatten(self.coef_pred(coef_x), self.num_prototypes))
        return torch.cat(cls_logits, 1), torch.cat(box_deltas, 1), torch.tanh(torch.cat(coefs, 1))


@YOLACT_HEAD_REGISTRY.register()
class YolactDecoupledHead(YolactHead):
    """
    ``YolactHead`` with one conv tower per branch (``SHARED_CONV_DIMS`` each) instead of one shared by all
    three: classification and localisation do not compete for the same features (YOLOX's decoupled head).
    Not in the original. It runs the tower's convs three times, so it costs more time per iteration; try it when
    the class branch, rather than the boxes, limits the AP.
    """

    def _build_towers(self, in_channels: int, conv_dims: List[int], norm: str):
        self.cls_tower = conv_relu_stack(in_channels, conv_dims, norm)
        self.box_tower = conv_relu_stack(in_channels, conv_dims, norm)
        self.coef_tower = conv_relu_stack(in_channels, conv_dims, norm)

    def _towers(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.cls_tower(x), self.box_tower(x), self.coef_tower(x)


def build_yolact_head(cfg, input_shapes: List[ShapeSpec], num_anchors: int) -> nn.Module:
    """Build the head named by ``MODEL.YOLACT.HEAD.NAME``."""
    return YOLACT_HEAD_REGISTRY.get(cfg.MODEL.YOLACT.HEAD.NAME)(cfg, input_shapes, num_anchors)
