"""GroupNorm for networks that run on channels-last (NHWC) tensors."""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelsLastGroupNorm", "convert_group_norms"]


class ChannelsLastGroupNorm(nn.GroupNorm):
    """
    ``nn.GroupNorm`` (same parameters, state-dict keys and values) that keeps channels-last tensors fast on the
    CPU in reduced precision. PyTorch's CPU kernel for a bfloat16 / float16 channels-last input is much slower in
    the backward pass than for the same tensor in NCHW, so such an input is normalised in the contiguous (NCHW)
    layout and the result given back channels-last (the copies cost far less). Every other input goes to ``nn.GroupNorm`` unchanged.

    Input and output: (N, C, H, W), the output in the input's memory format.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _is_slow_cpu_case(x):
            return super().forward(x)
        y = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
        return y.contiguous(memory_format=torch.channels_last)


def _is_slow_cpu_case(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-d, reduced-precision, channels-last (and not also contiguous) CPU tensor."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.bfloat16, torch.float16)
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


def convert_group_norms(module: nn.Module) -> nn.Module:
    """
    Replace, in place, every ``nn.GroupNorm`` (exactly that class) inside ``module`` by a
    :class:`ChannelsLastGroupNorm` holding the same parameter objects, so that an optimizer or checkpoint
    built before or after the conversion sees the same tensors under the same names. Returns ``module``.
    """
    for name, child in module.named_children():
        if type(child) is nn.GroupNorm:  # pylint: disable=unidiomatic-typecheck
            setattr(module, name, _channels_last_copy(child))
        else:
            convert_group_norms(child)
    return module


def _channels_last_copy(norm: nn.GroupNorm) -> ChannelsLastGroupNorm:
    """A :class:`ChannelsLastGroupNorm` with the settings of ``norm`` and its parameter objects."""
    converted = ChannelsLastGroupNorm(norm.num_groups, norm.num_channels, norm.eps, norm.affine)
    if norm.affine:
        converted.weight, converted.bias = norm.weight, norm.bias
    return converted.train(norm.training)
