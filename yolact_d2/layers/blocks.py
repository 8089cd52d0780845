"""Small building blocks shared by YOLACT's branches."""
from typing import List

import fvcore.nn.weight_init as weight_init
from torch import nn

__all__ = ["conv_relu_stack"]


def conv_relu_stack(in_channels: int, dims: List[int]) -> nn.Sequential:
    """
    A stack of (3x3 conv, stride 1, padding 1) + ReLU layers with ``dims[i]`` output channels each;
    an empty ``dims`` gives the identity. Spatial size is preserved.
    """
    layers = []
    for dim in dims:
        conv = nn.Conv2d(in_channels, dim, 3, padding=1)
        weight_init.c2_xavier_fill(conv)
        layers += [conv, nn.ReLU(inplace=True)]
        in_channels = dim
    return nn.Sequential(*layers)
