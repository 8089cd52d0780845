"""
Deformable convolutions that run everywhere: detectron2's compiled ops when they are available and the
input is on a GPU, ``torchvision.ops.deform_conv2d`` otherwise (CPU, a detectron2 built without ``_C``,
where detectron2's own ``DeformConv`` classes cannot even be built, and while tracing or exporting).

The modules have the constructor and parameters of detectron2's ``DeformConv`` / ``ModulatedDeformConv``
(``weight`` (out, in / groups, kh, kw), ``bias`` for the modulated one, optional ``norm`` and ``activation``),
so a checkpoint trained with either implementation loads in the other. Offsets follow the DCN layout shared
by both ops: (N, 2 * G * kh * kw, H', W'); for deformable group g and kernel position k (row-major), channel
2 (g kh kw + k) is the vertical (y) and the next one the horizontal (x) displacement in input pixels. The
modulation mask is (N, G * kh * kw, H', W') in [0, 1].
"""
import functools
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv", "ModulatedDeformConv", "detectron2_deform_ops_available"]


@functools.lru_cache(maxsize=None)
def detectron2_deform_ops_available() -> bool:
    """Whether detectron2 was built with its compiled deformable-conv kernels."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return hasattr(_C, "deform_conv_forward")


class _DeformConvBase(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 deformable_groups=1, bias=False, norm: Optional[nn.Module] = None, activation=None):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels {in_channels} and out_channels {out_channels} must divide by groups {groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def _use_detectron2_op(self, x: torch.Tensor) -> bool:
        # detectron2's op is a Python autograd.Function, which torch.jit.trace and torch.export cannot record
        exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
        return x.is_cuda and detectron2_deform_ops_available() and not exporting

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}")


class DeformConv(_DeformConvBase):
    """DCNv1 (:paper:`deformconv`): ``forward(x, offset)``, no bias."""

    def __init__(self, *args, bias=False, **kwargs):
        if bias:
            raise ValueError("DeformConv has no bias (as detectron2's); use the norm layer's shift")
        super().__init__(*args, bias=False, **kwargs)

    def forward(self, x, offset):
        if self._use_detectron2_op(x):
            from detectron2.layers.deform_conv import deform_conv

            x = deform_conv(x, offset, self.weight, self.stride, self.padding, self.dilation, self.groups,
                            self.deformable_groups)
        else:
            x = deform_conv2d(x, offset, self.weight, None, self.stride, self.padding, self.dilation)
        return self._finish(x)


class ModulatedDeformConv(_DeformConvBase):
    """DCNv2 (:paper:`deformconv2`): ``forward(x, offset, mask)``; bias by default, as detectron2's."""

    def __init__(self, *args, bias=True, **kwargs):
        super().__init__(*args, bias=bias, **kwargs)

    def forward(self, x, offset, mask):
        if self._use_detectron2_op(x):
            from detectron2.layers.deform_conv import modulated_deform_conv

            x = modulated_deform_conv(x, offset, mask, self.weight, self.bias, self.stride, self.padding,
                                      self.dilation, self.groups, self.deformable_groups)
        else:
            x = deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)
        return self._finish(x)
