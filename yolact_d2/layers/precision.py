"""
The numeric precision a model's inference runs in: float32, or bfloat16 / float16 by ``torch.autocast`` (the
weights stay float32; autocast runs convolutions and matrix products in the low precision).

bfloat16 has float32's exponent range, so activations cannot overflow; it pays off on CPUs with native
bfloat16 (AVX512-BF16 or AMX) and on recent GPUs. float16 is for CUDA: CPUs run it emulated.
"""
import contextlib
import logging
from typing import ContextManager

import torch

__all__ = ["PRECISIONS", "cpu_has_native_bfloat16", "resolve_precision", "inference_autocast"]

logger = logging.getLogger(__name__)

# The precisions of inference, by their torch dtype names.
PRECISIONS = ("float32", "bfloat16", "float16")


def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX) rather than by conversion."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # pylint: disable=protected-access


def _device_type(device) -> str:
    """"cpu" or "cuda" of a device name ("cuda:1") or ``torch.device``."""
    return torch.device(device).type


def resolve_precision(precision: str, device) -> str:
    """
    The precision inference on ``device`` (a name such as "cpu", "cuda:0", or a ``torch.device``) runs in when
    ``precision`` is asked for: ``precision`` itself, except "bfloat16" on a CPU without native bfloat16, which
    would be emulated many times slower than float32, and runs in "float32" (with a warning).

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`, or is "float16" on a CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    device_type = _device_type(device)
    if device_type == "cpu" and precision == "float16":
        raise ValueError(
            "Precision 'float16' is for CUDA devices: CPUs emulate it. On the CPU use 'bfloat16' (native on CPUs "
            "with AVX512-BF16 or AMX) or 'float32'"
        )
    if device_type == "cpu" and precision == "bfloat16" and not cpu_has_native_bfloat16():
        logger.warning(
            "Precision 'bfloat16' asked for, but this CPU has no native bfloat16 (AVX512-BF16 / AMX): emulated, it "
            "would run many times slower than float32, so inference runs in float32"
        )
        return "float32"
    return precision


def inference_autocast(precision: str, device) -> ContextManager:
    """
    A context in which the network runs in ``precision`` (one of :data:`PRECISIONS`, as
    :func:`resolve_precision` returns it) on ``device``: nothing changes for "float32", else
    ``torch.autocast`` to that dtype. Tensors computed inside come out in that dtype where autocast lowered them.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(_device_type(device), dtype=getattr(torch, precision))
