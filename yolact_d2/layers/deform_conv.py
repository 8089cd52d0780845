"""
Deformable convolutions that run everywhere: detectron2's compiled ops when they are available and the
input is on a GPU; on a CPU :func:`sampled_deform_conv2d` (bilinear sampling by ``F.grid_sample``, then one
matrix product), whose backward pass is faster there than torchvision's CPU kernel; otherwise (a CUDA
input without detectron2's ``_C``, where detectron2's own ``DeformConv`` classes cannot even be built, and
while tracing or exporting) ``torchvision.ops.deform_conv2d``, which exports to ONNX's ``DeformConv``.

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
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

from .tracing import is_tracing

__all__ = ["DeformConv", "ModulatedDeformConv", "detectron2_deform_ops_available", "sampled_deform_conv2d"]


@functools.lru_cache(maxsize=None)
def detectron2_deform_ops_available() -> bool:
    """Whether detectron2 was built with its compiled deformable-conv kernels."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return hasattr(_C, "deform_conv_forward")


def sampled_deform_conv2d(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
    stride=1, padding=0, dilation=1, mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """
    The deformable convolution of ``torchvision.ops.deform_conv2d`` (same arguments, same result), as
    ``F.grid_sample`` of every kernel tap's sampling points followed by one (grouped) matrix product.

    Tap k (row-major in the kernel) of output pixel (i, j) reads input pixel coordinates
    y = i * stride - padding + ky * dilation + offset_y, x = j * stride - padding + kx * dilation + offset_x,
    bilinearly, with zeros outside the image (pixel centres at integer coordinates).

    Args:
        x: (N, C, H, W).
        offset: (N, 2 * G * kh * kw, H', W'), G deformable groups (see the module docstring for the layout).
        weight: (O, C / groups, kh, kw); groups = C / weight.shape[1].
        bias: (O,) or None.
        mask: (N, G * kh * kw, H', W') modulation (DCNv2), or None (DCNv1).
    Returns:
        (N, O, H', W') in the dtype of ``x``.

    Sampling coordinates and the bilinear sampling are computed in the wider of float32 and the dtype of
    ``x``: in bfloat16 (8 significant bits) a coordinate of a few tens of pixels would lose its fractional
    part, and float64 stays float64. The matrix product runs in the dtype of ``x`` (or autocast's).
    """
    n, c, h, w = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    taps, (out_h, out_w) = kh * kw, offset.shape[-2:]
    deform_groups, groups = offset.shape[1] // (2 * taps), c // group_channels
    sampling_dtype = torch.promote_types(x.dtype, torch.float32)
    off = offset.to(sampling_dtype).reshape(n, deform_groups, taps, 2, out_h, out_w)  # reshape: any memory format
    coord = {"device": x.device, "dtype": sampling_dtype}
    tap_y = (torch.arange(kh, **coord) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, **coord) * dw).repeat(kh)
    rows = torch.arange(out_h, **coord) * sh - ph
    cols = torch.arange(out_w, **coord) * sw - pw
    ys = rows[:, None] + tap_y[:, None, None] + off[:, :, :, 0]  # (N, G, taps, H', W')
    xs = cols[None, :] + tap_x[:, None, None] + off[:, :, :, 1]
    # grid_sample's normalised coordinates with align_corners=False: pixel p -> (2p + 1) / size - 1
    grid = torch.stack(((2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1), dim=-1)
    samples = F.grid_sample(
        x.to(sampling_dtype).reshape(n * deform_groups, c // deform_groups, h, w),
        grid.view(n * deform_groups, taps * out_h, out_w, 2),
        mode="bilinear", padding_mode="zeros", align_corners=False,
    ).view(n, deform_groups, c // deform_groups, taps, out_h * out_w)
    if mask is not None:
        samples = samples * mask.to(sampling_dtype).reshape(n, deform_groups, 1, taps, out_h * out_w)
    samples = samples.to(x.dtype).view(n, groups, group_channels * taps, out_h * out_w)
    out = weight.reshape(groups, out_channels // groups, group_channels * taps) @ samples
    out = out.view(n, out_channels, out_h, out_w)
    return out if bias is None else out + bias[:, None, None]


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

    @staticmethod
    def _implementation(x: torch.Tensor) -> str:
        """Which op runs on ``x``: "detectron2", "sampled" or "torchvision" (see the module docstring)."""
        # detectron2's op is a Python autograd.Function, which torch.jit.trace and torch.export cannot record;
        # the exported graph keeps torchvision's single op rather than the sampling it stands for
        if is_tracing():
            return "torchvision"
        if x.is_cuda:
            return "detectron2" if detectron2_deform_ops_available() else "torchvision"
        return "sampled"

    def _run_without_detectron2(self, implementation: str, x, offset, mask=None) -> torch.Tensor:
        """The convolution by the sampled op or torchvision's (``mask`` None: DCNv1), in the dtype of ``x``."""
        if implementation == "sampled":
            return sampled_deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                         mask)
        if x.is_cuda or x.dtype in (torch.float32, torch.float64):
            return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)
        # torchvision's CPU kernel has no bfloat16 / float16 (e.g. tracing a model under CPU autocast)
        args = [None if t is None else t.float() for t in (x, offset, self.weight, self.bias, mask)]
        with torch.autocast("cpu", enabled=False):
            out = deform_conv2d(*args[:4], self.stride, self.padding, self.dilation, args[4])
        return out.to(x.dtype)

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
        implementation = self._implementation(x)
        if implementation == "detectron2":
            from detectron2.layers.deform_conv import deform_conv

            x = deform_conv(x, offset, self.weight, self.stride, self.padding, self.dilation, self.groups,
                            self.deformable_groups)
        else:
            x = self._run_without_detectron2(implementation, x, offset)
        return self._finish(x)


class ModulatedDeformConv(_DeformConvBase):
    """DCNv2 (:paper:`deformconv2`): ``forward(x, offset, mask)``; bias by default, as detectron2's."""

    def __init__(self, *args, bias=True, **kwargs):
        super().__init__(*args, bias=bias, **kwargs)

    def forward(self, x, offset, mask):
        implementation = self._implementation(x)
        if implementation == "detectron2":
            from detectron2.layers.deform_conv import modulated_deform_conv

            x = modulated_deform_conv(x, offset, mask, self.weight, self.bias, self.stride, self.padding,
                                      self.dilation, self.groups, self.deformable_groups)
        else:
            x = self._run_without_detectron2(implementation, x, offset, mask)
        return self._finish(x)
