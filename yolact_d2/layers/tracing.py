"""Whether the code is being recorded into a graph rather than run eagerly."""
import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """
    True under ``torch.jit.trace``, ``torch.compile`` or ``torch.export``: code that reads tensor values or
    shapes as Python numbers, or picks ops that the recorder cannot follow, must take its graph-safe path.
    """
    return torch.jit.is_tracing() or torch.compiler.is_compiling()
