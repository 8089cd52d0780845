"""
Write a YOLACT, post-processing included, to TorchScript (``torch.jit.trace``) or ONNX (``torch.onnx.export``,
its torch.export-based exporter).

Both record the graph on one sample image but stay correct for any image of that size: the post-processing has
no Python control flow on tensor values, so the number of candidates and detections is dynamic in the graph.
"""
import warnings

import torch

from .exportable import YolactExportable, output_names

__all__ = ["export_torchscript", "export_onnx", "ONNX_OPSET"]

# Opset 19 is the first with DeformConv, which YOLACT++'s deformable convs export to.
ONNX_OPSET = 19


def export_torchscript(model, images: torch.Tensor, path: str) -> None:
    """
    Trace ``YolactExportable(model)`` on ``images`` and save it to ``path`` (``model.ts``, for
    ``torch.jit.load``). The file runs on the device the model was on.

    Args:
        model: a :class:`YOLACT` in eval mode.
        images: (1, 3, S, S) float32 sample, as :class:`YolactExportable` takes it.
    """
    exportable = YolactExportable(model)
    with torch.no_grad(), warnings.catch_warnings():
        # the trace turns sizes into constants, which is right: they are fixed by the input size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(exportable, (images,), check_trace=False)
    traced.save(path)


def export_onnx(model, images: torch.Tensor, path: str) -> None:
    """
    Export ``YolactExportable(model)`` to the ONNX file ``path`` (opset :data:`ONNX_OPSET`, weights inside),
    with input ``images`` (1, 3, S, S) and outputs ``boxes``, ``scores``, ``classes``, ``masks`` (and
    ``mask_scores`` for YOLACT++; their first dimension is dynamic). Fast NMS exports to plain tensor ops,
    StandardNMS's torchvision ``batched_nms`` to ``NonMaxSuppression``, YOLACT++'s deformable convs to
    ``DeformConv``; onnxruntime runs all of them.

    Args:
        model: a :class:`YOLACT` in eval mode.
        images: (1, 3, S, S) float32 sample, as :class:`YolactExportable` takes it.
    """
    exportable = YolactExportable(model)
    with torch.no_grad():
        torch.onnx.export(
            exportable,
            (images,),
            path,
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=["images"],
            output_names=list(output_names(model)),
            external_data=False,
            verbose=False,
        )
