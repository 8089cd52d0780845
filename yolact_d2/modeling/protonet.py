"""Protonet: the FCN that produces YOLACT's k prototype masks."""
from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry

from ..layers import conv_relu_stack

__all__ = ["PROTONET_REGISTRY", "ProtoNet", "build_protonet"]

PROTONET_REGISTRY = Registry("PROTONET")
PROTONET_REGISTRY.__doc__ = """
Registry for YOLACT protonets: modules taking the backbone's feature dict and returning prototypes
(N, k, Hp, Wp). Selected by ``MODEL.YOLACT.PROTONET.NAME``; called as ``obj(cfg, input_shape)`` with
``input_shape`` the backbone's ``output_shape()`` dict.
"""



@PROTONET_REGISTRY.register()
class ProtoNet(nn.Module):
    """
    On one feature map (P3, stride 8): 3x3 conv (+ optional norm) + ReLU layers, a bilinear upsampling, more
    such layers, then a 1x1 conv to k prototypes and a ReLU. With the paper's layout the output is at 1/4 of the
    input resolution (138 x 138 for a 550 x 550 input).
    """

    @configurable
    def __init__(
        self,
        *,
        in_feature: str,
        in_channels: int,
        conv_dims: List[int],
        upsample_factor: int,
        post_upsample_conv_dims: List[int],
        num_prototypes: int,
        norm: str = "",
    ):
        super().__init__()
        self.in_feature = in_feature
        self.upsample_factor = upsample_factor
        self.pre = conv_relu_stack(in_channels, conv_dims, norm)
        last = conv_dims[-1] if conv_dims else in_channels
        self.post = conv_relu_stack(last, post_upsample_conv_dims, norm)
        last = post_upsample_conv_dims[-1] if post_upsample_conv_dims else last
        self.predictor = nn.Conv2d(last, num_prototypes, 1)
        weight_init.c2_xavier_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        pcfg = cfg.MODEL.YOLACT.PROTONET
        return {
            "in_feature": pcfg.IN_FEATURE,
            "in_channels": input_shape[pcfg.IN_FEATURE].channels,
            "conv_dims": list(pcfg.CONV_DIMS),
            "upsample_factor": pcfg.UPSAMPLE_FACTOR,
            "post_upsample_conv_dims": list(pcfg.POST_UPSAMPLE_CONV_DIMS),
            "num_prototypes": cfg.MODEL.YOLACT.NUM_PROTOTYPES,
            "norm": pcfg.NORM,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: backbone outputs; ``features[in_feature]`` is (N, C, H, W).
        Returns:
            prototypes (N, k, H * f, W * f), non-negative, f = ``upsample_factor``.
        """
        x = self.pre(features[self.in_feature])
        if self.upsample_factor > 1:
            x = F.interpolate(x, scale_factor=self.upsample_factor, mode="bilinear", align_corners=False)
        return F.relu(self.predictor(self.post(x)))


def build_protonet(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the protonet named by ``MODEL.YOLACT.PROTONET.NAME``."""
    return PROTONET_REGISTRY.get(cfg.MODEL.YOLACT.PROTONET.NAME)(cfg, input_shape)
