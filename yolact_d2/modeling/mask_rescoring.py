"""YOLACT++'s fast mask re-scoring: predict each mask's IoU with its ground truth from the mask alone."""
from typing import List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable

__all__ = ["MaskIoUNet", "mask_iou"]


class MaskIoUNet(nn.Module):
    """
    A small FCN without fully-connected layers: stride-2 3x3 convs (no padding) + ReLU with ``conv_dims``
    channels, a 1x1 conv to one output per class + ReLU, then a global max pool.

    Input: masks (D, Hp, Wp) in [0, 1], cropped, at prototype resolution (zero-padded at the bottom and right
    to the smallest size the unpadded convs accept, for small inputs). Output: (D, C) predicted IoU.
    """

    @configurable
    def __init__(self, num_classes: int, conv_dims: List[int]):
        super().__init__()
        layers, in_channels = [], 1
        for dim in conv_dims:
            layers += [nn.Conv2d(in_channels, dim, 3, stride=2), nn.ReLU(inplace=True)]
            in_channels = dim
        layers += [nn.Conv2d(in_channels, num_classes, 1), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        # smallest input giving a 1 x 1 output: s -> 2 s + 1 per stride-2 3x3 conv, backwards from 1
        self.min_size = 1
        for _ in conv_dims:
            self.min_size = 2 * self.min_size + 1
        for m in self.layers:
            if isinstance(m, nn.Conv2d):
                weight_init.c2_msra_fill(m)

    @classmethod
    def from_config(cls, cfg):
        ycfg = cfg.MODEL.YOLACT
        return {"num_classes": ycfg.NUM_CLASSES, "conv_dims": list(ycfg.MASK_RESCORING.CONV_DIMS)}

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        h, w = masks.shape[-2:]
        masks = F.pad(masks, (0, max(0, self.min_size - w), 0, max(0, self.min_size - h)))
        x = self.layers(masks[:, None])
        return F.adaptive_max_pool2d(x, 1).flatten(1)


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks pred (D, H, W) and gt (D, H, W), pairwise by index: (D,); 0 when both are empty."""
    pred, gt = pred.flatten(1).float(), gt.flatten(1).float()
    inter = (pred * gt).sum(1)
    union = pred.sum(1) + gt.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
