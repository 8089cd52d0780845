"""YOLACT's semantic-segmentation branch: an auxiliary training signal on the FPN features (mmdet's YOLACTSegmHead)."""
from typing import Dict, List

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

__all__ = ["YolactSemSegHead"]


class YolactSemSegHead(nn.Module):
    """
    One 1x1 conv from the feature channels to C class logits, shared by the feature maps ``in_features``
    names. It only feeds the loss: inference never runs it.

    ``forward(features)``: the backbone's features by name -> per name of ``in_features``, class logits
    (N, C, h, w) at that feature's resolution.
    """

    @configurable
    def __init__(self, *, in_features: List[str], in_channels: int, num_classes: int):
        """
        Args:
            in_features: names of the features it reads (they share the conv, so one channel count).
            in_channels: their channel count.
            num_classes: C, foreground classes (a sigmoid per class: no background).
        """
        super().__init__()
        self.in_features = list(in_features)
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features = list(cfg.MODEL.YOLACT.LOSS.SEM_SEG_IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if not in_features or missing:
            raise ValueError(
                f"MODEL.YOLACT.LOSS.SEM_SEG_IN_FEATURES={in_features} must name one or more of the backbone's "
                f"features {sorted(input_shape)}"
            )
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) > 1:
            raise ValueError(
                f"MODEL.YOLACT.LOSS.SEM_SEG_IN_FEATURES={in_features} share one 1x1 conv, so they need one "
                f"channel count; they have {sorted(channels)}"
            )
        return {"in_features": in_features, "in_channels": channels.pop(), "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES}

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {name: self.conv(features[name]) for name in self.in_features}
