"""The whole YOLACT inference, post-processing included, as one traceable module."""
from typing import Tuple

import torch
from torch import nn

from ..modeling import YOLACT

__all__ = ["YolactExportable", "check_exportable", "output_names", "OUTPUT_NAMES"]

# The exported graph's outputs, in order (also the output names of the ONNX file); YOLACT++ adds MASK_SCORES.
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks")
MASK_SCORES = "mask_scores"


def check_exportable(model: nn.Module) -> None:
    """Raise a ValueError saying why ``model`` cannot be exported, if it cannot."""
    if not isinstance(model, YOLACT):
        raise ValueError(f"Only YOLACT models can be exported here; got {type(model).__name__}")
    if model.training:
        raise ValueError("Export traces inference: put the model in eval mode first (model.eval())")
    is_exportable = getattr(model.postprocessor, "is_exportable", None)
    if is_exportable is None or not is_exportable():
        raise ValueError(
            f"MODEL.YOLACT.POSTPROCESS.NAME={type(model.postprocessor).__name__!r} cannot be exported: its class "
            "does not set `exportable = True` in its body (a trace correct for every input: no Python control "
            "flow on tensor values)."
        )
    if model.precision != "float32":
        raise ValueError(
            f"MODEL.YOLACT.PRECISION={model.precision!r} cannot be exported: export records the float32 graph. "
            "Export with MODEL.YOLACT.PRECISION float32; the exported file's runtime sets its own precision."
        )
    if model.preserve_aspect_ratio and model.mask_rescoring is not None:
        raise ValueError(
            "MODEL.YOLACT.PRESERVE_ASPECT_RATIO=True with YOLACT++'s mask re-scoring cannot be exported: the graph "
            "does not know the image's region of the input, so it crops masks to the whole square and the "
            "re-scoring net would see them over the padding. Export with PRESERVE_ASPECT_RATIO False."
        )


def output_names(model: YOLACT) -> Tuple[str, ...]:
    """The names of the exported graph's outputs of ``model``, in order."""
    return OUTPUT_NAMES + ((MASK_SCORES,) if model.mask_rescoring is not None else ())


class YolactExportable(nn.Module):
    """
    A :class:`YOLACT` in eval mode, wrapped for ``torch.jit.trace`` and ``torch.onnx.export``: one image at
    the fixed network size in, its detections out. Everything from normalisation to YOLACT++'s re-scoring is
    in the graph: backbone, FPN, protonet, head, anchors (constants), box decoding, the configured NMS, mask
    assembly and crop, re-scoring. Only pasting the masks onto the original image stays outside
    (:func:`yolact_d2.export.paste_masks`, :func:`yolact_d2.export.outputs_to_instances`).

    ``forward(images)``:

    * images: (1, 3, S, S) float32 pixel values (0-255) in ``INPUT.FORMAT``, the image already resized to the
      square network input, S = ``MODEL.YOLACT.INPUT_SIZE``, and with ``PRESERVE_ASPECT_RATIO`` padded with the
      pixel mean (:func:`yolact_d2.export.preprocess_image`); boxes are clipped to the whole input, and
      :func:`yolact_d2.export.outputs_to_instances` maps them from the image's region.
      A traced graph accepts no other shape.
    * returns (boxes, scores, classes, masks) for the D detections, 0 <= D <= ``TEST.DETECTIONS_PER_IMAGE``
      (D depends on the image): boxes (D, 4) float XYXY in input pixels within [0, S]; scores (D,) in
      decreasing order; classes (D,) int64 in [0, NUM_CLASSES); masks (D, Hp, Wp) float soft masks in [0, 1]
      at prototype resolution, covering the whole S x S input, zero outside their box (padded by 1 pixel);
      with YOLACT++'s re-scoring a fifth output, mask_scores (D,), the scores of the masks (see
      :meth:`YOLACT.detect`).
    """

    def __init__(self, model: YOLACT):
        check_exportable(model)
        super().__init__()
        self.model = model
        self.eval()

    @property
    def input_size(self) -> int:
        return self.model.input_size

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        s = self.input_size
        if tuple(images.shape) != (1, 3, s, s):
            shape = tuple(int(d) for d in images.shape)  # sizes are tensors while tracing
            raise ValueError(f"YolactExportable takes images of shape (1, 3, {s}, {s}); got {shape}")
        # a reshape to constant sizes (not images[0]) makes a traced graph refuse a batch of several images
        normalized = self.model.normalize(images.reshape(3, s, s))
        detections = self.model.inference(normalized[None], [(s, s)])[0]
        return tuple(detections[:4]) if detections.mask_scores is None else tuple(detections)
