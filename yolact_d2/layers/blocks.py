"""Small building blocks shared by YOLACT's branches."""
from typing import List

import fvcore.nn.weight_init as weight_init
from torch import nn

from detectron2.layers import Conv2d, get_norm

__all__ = ["conv_relu_stack"]


def conv_relu_stack(in_channels: int, dims: List[int], norm: str = "") -> nn.Sequential:
    """
    A stack of (3x3 conv, stride 1, padding 1) [+ norm] + ReLU layers with ``dims[i]`` output channels each;
    an empty ``dims`` gives the identity. Spatial size is preserved.

    Args:
        norm: a detectron2 norm name (``get_norm``: "GN", "BN", ...) applied after each conv, which then has
            no bias; "" (the original YOLACT) for plain convs with bias.
    """
    layers = []
    for dim in dims:
        conv = Conv2d(in_channels, dim, 3, padding=1, bias=not norm, norm=get_norm(norm, dim))
        weight_init.c2_xavier_fill(conv)
        layers += [conv, nn.ReLU(inplace=True)]
        in_channels = dim
    return nn.Sequential(*layers)
