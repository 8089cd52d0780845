"""
Model complexity: fvcore's FLOP count of the inference forward (through detectron2's ``FlopCountAnalysis``,
which traces models taking ``list[dict]``) and parameter counts.

fvcore counts one fused multiply-add as one flop, so its totals are GMACs (a conv of a K x K x Cin kernel
producing Cout x H x W values counts H W Cout Cin K K). Element-wise ops (activations, additions, sigmoid,
softmax...) and NMS are not counted, as in detectron2. Deformable convs (``torchvision::deform_conv2d``) are
counted like the plain conv of the same shape (their bilinear sampling is not); a deformable conv run through
detectron2's compiled CUDA op is a Python op that fvcore cannot see.
"""
from typing import Dict, List, Sequence

import torch
from fvcore.nn.jit_handles import conv_flop_count, get_shape
from torch import nn

from detectron2.utils.analysis import FlopCountAnalysis

__all__ = ["count_parameters", "analyze_complexity"]

_WRAPPER_PREFIX = "model."  # detectron2's TracingAdapter holds the model as its ``model``
# The traced ``record_function`` ranges of YOLACT's stages: markers, no computation (fvcore: None = no flops).
_PROFILER_RANGE_OPS = {"profiler::_record_function_enter_new": None, "profiler::_record_function_exit": None}


def _deform_conv_flop_jit(inputs: List, outputs: List) -> int:
    """MACs of ``torchvision::deform_conv2d(input, weight, offset, mask, bias, ...)``: those of a plain conv."""
    return conv_flop_count(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0]))


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """All parameters and the trainable ones (frozen stages excluded)."""
    params = list(model.parameters())
    return {
        "params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
    }


def analyze_complexity(model: nn.Module, inputs: Sequence[Dict]) -> Dict:
    """
    Trace ``model(inputs)`` (eval mode) and count its FLOPs.

    Returns:
        dict: ``gmacs`` (total, G = 1e9), ``gmacs_by_module`` (module name as in ``model.named_modules()``,
        "" for the whole model -> GMACs of everything run inside it), ``uncounted_ops`` (op -> number of calls
        fvcore has no formula for), and :func:`count_parameters`.
    """
    analysis = FlopCountAnalysis(model, list(inputs))
    analysis.set_op_handle(**{"torchvision::deform_conv2d": _deform_conv_flop_jit, **_PROFILER_RANGE_OPS})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with torch.no_grad():
        by_module = analysis.by_module()
    gmacs_by_module = {
        name[len(_WRAPPER_PREFIX):]: n / 1e9 for name, n in by_module.items() if name.startswith(_WRAPPER_PREFIX)
    }
    gmacs_by_module[""] = analysis.total() / 1e9
    return {
        "gmacs": analysis.total() / 1e9,
        "gmacs_by_module": gmacs_by_module,
        "uncounted_ops": dict(analysis.unsupported_ops()),
        **count_parameters(model),
    }
