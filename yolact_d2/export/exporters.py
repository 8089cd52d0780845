"""
Write a YOLACT, post-processing included, to TorchScript (``torch.jit.trace``) or ONNX (``torch.onnx.export``,
its torch.export-based exporter).

Both record the graph on one sample image but stay correct for any image of that size: the post-processing has
no Python control flow on tensor values, so the number of candidates and detections is dynamic in the graph.
"""
import contextlib
import warnings
from typing import Iterator, List, Sequence

import torch
from torch.jit import TracerWarning

from .exportable import YolactExportable, output_names

__all__ = ["export_torchscript", "export_onnx", "trace_check_images", "ONNX_OPSET", "CHECKED_TRACER_WARNINGS"]

# Opset 19 is the first with DeformConv, which YOLACT++'s deformable convs export to.
ONNX_OPSET = 19

# The TracerWarnings that tracing YOLACT / YOLACT++ gives, each read and found harmless: (message regex, module
# regex). All come from sizes, which the fixed (1, 3, S, S) input makes constant, or from config constants:
# tracing records them as constants, which is right for every image of that size. Any other TracerWarning is
# shown; the trace check (check_inputs) is what proves the graph right for other images.
CHECKED_TRACER_WARNINGS = (
    # YolactExportable.forward: the check that the input is (1, 3, S, S).
    (r"Converting a tensor to a Python boolean", r"yolact_d2\.export\.exportable"),
    # as_float_image: the check that the image has 1 or 3 channels.
    (r"Converting a tensor to a Python boolean", r"yolact_d2\.modeling\.meta_arch"),
    # YOLACT.assemble_masks: the prototype size (fixed by S) scales the boxes to prototype pixels.
    (r"Converting a tensor to a Python float", r"yolact_d2\.modeling\.meta_arch"),
    # MaskIoUNet.forward (YOLACT++): padding the prototype-sized masks to the net's minimum size.
    (r"Converting a tensor to a Python boolean", r"yolact_d2\.modeling\.mask_rescoring"),
    # torchvision's deform_conv2d (YOLACT++): its check of the offsets' channel count.
    (r"Converting a tensor to a Python boolean", r"torchvision\.ops\.deform_conv"),
    # torch's group_norm (GN in the backbone, FPN, protonet or head): its check of the values per group.
    (r"Converting a tensor to a Python boolean", r"torch\.nn\.functional"),
    # SyncBatchNorm (the COCO configs' norm): its check that the input has channels.
    (r"Converting a tensor to a Python boolean", r"torch\.nn\.modules\.batchnorm"),
    # YolactTopBlock: whether P5 / P6 is one pixel wide (fixed by S) decides the precision of P6 / P7.
    (r"Converting a tensor to a Python boolean", r"yolact_d2\.modeling\.backbone"),
    # YolactAnchorGenerator: the anchors' cell shapes come from the config's sizes and aspect ratios.
    (r"torch\.tensor results are registered as constants", r"yolact_d2\.modeling\.anchors"),
)


@contextlib.contextmanager
def _checked_tracer_warnings() -> Iterator[None]:
    """Ignore :data:`CHECKED_TRACER_WARNINGS`; make the trace check's output mismatches errors."""
    with warnings.catch_warnings():
        for message, module in CHECKED_TRACER_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=TracerWarning, module=module + r"\Z")
        # torch.jit.trace's check reports outputs that differ from eager mode's as warnings
        warnings.filterwarnings("error", message=r"Output nr \d+\. of the traced function", category=TracerWarning)
        yield


def trace_check_images(images: torch.Tensor) -> List[torch.Tensor]:
    """
    The images (1, 3, S, S) that a trace recorded on ``images`` is checked on by default besides those given:
    its mirror image (other detections) and a uniform image of its mean colour (few or none).
    """
    return [images.flip(-1), images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()]


def export_torchscript(model, images: torch.Tensor, path: str, check_images: Sequence[torch.Tensor] = ()) -> None:
    """
    Trace ``YolactExportable(model)`` on ``images`` and save it to ``path`` (``model.ts``, for
    ``torch.jit.load``). The file runs on the device the model was on.

    The trace is checked (``torch.jit.trace``'s ``check_inputs``) on :func:`trace_check_images` of ``images``
    and on ``check_images``: traced again on each, the graph must be the same, and its outputs (whose number of
    detections varies with the image) must equal eager mode's.

    Args:
        model: a :class:`YOLACT` in eval mode.
        images: (1, 3, S, S) float32 sample, as :class:`YolactExportable` takes it.
        check_images: more (1, 3, S, S) images to check the trace on.

    Raises:
        RuntimeError: when the check fails (a graph that is not correct for every image); nothing is written.
    """
    exportable = YolactExportable(model)
    check_inputs = [(x,) for x in trace_check_images(images) + list(check_images)]
    with torch.no_grad(), _checked_tracer_warnings():
        try:
            traced = torch.jit.trace(exportable, (images,), check_inputs=check_inputs)
        except (torch.jit.TracingCheckError, TracerWarning) as e:
            raise RuntimeError(
                f"The TorchScript trace of {type(model).__name__} is not correct for every image, so {path} is "
                f"not written; a value-dependent Python branch in the model or its post-processor? {e}"
            ) from e
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
