"""Run an exported YOLACT (TorchScript or ONNX file) like the eager model: detectron2 inputs in, Instances out."""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from detectron2.structures import Instances

from ..modeling.meta_arch import as_float_image, detections_to_instances, output_image_size, resize_to_input

__all__ = ["ExportedYolact", "preprocess_image", "outputs_to_instances"]


def preprocess_image(
    image: torch.Tensor, input_size: int, preserve_aspect_ratio: bool = False, pad_value: Sequence[float] = (0, 0, 0)
) -> torch.Tensor:
    """
    An input's ``image`` (3, H, W) or (1, H, W) in ``INPUT.FORMAT``, uint8 or float, as the exported model takes
    it: resized as the eager model resizes (:func:`yolact_d2.modeling.meta_arch.resize_to_input`; with
    ``preserve_aspect_ratio``, padded with ``pad_value``, the pixel mean) to (1, 3, S, S) float32, 0-255.
    """
    return _network_input(image, input_size, preserve_aspect_ratio, pad_value)[0]


def _network_input(
    image: torch.Tensor, input_size: int, preserve_aspect_ratio: bool, pad_value: Sequence[float]
) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """:func:`preprocess_image`'s (1, 3, S, S) and the (h, w) region of the input the image occupies."""
    image = as_float_image(image)
    resized, region = resize_to_input(image, input_size, preserve_aspect_ratio, image.new_tensor(pad_value))
    return resized[None], region


def outputs_to_instances(
    outputs: Sequence[torch.Tensor], output_size: Tuple[int, int], input_size: int, mask_threshold: float,
    region: Optional[Tuple[int, int]] = None,
) -> Instances:
    """
    The exported model's outputs (boxes, scores, classes, masks[, mask_scores]) for one image as the eager
    model's :class:`Instances` of ``output_size`` (H, W): boxes scaled from the image's ``region`` (h, w) of the
    S x S input (default: all of it) and clipped, masks pasted (bilinear resize, then ``> mask_threshold``;
    :func:`yolact_d2.export.paste_masks`).
    """
    region = region or (input_size, input_size)
    return detections_to_instances(*outputs[:4], region, input_size, output_size, mask_threshold, *outputs[4:])


class _TorchScriptRunner:
    def __init__(self, path: str, device: torch.device):
        self.module = torch.jit.load(path, map_location=device)
        self.device = device

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(self.module(images.to(self.device)))


class _OnnxRunner:
    def __init__(self, path: str, device: torch.device):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(path, providers=onnxruntime.get_available_providers())
        self.device = device

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = self.session.run(None, {"images": images.cpu().numpy()})
        return tuple(torch.from_numpy(o).to(self.device) for o in outputs)


_RUNNERS = {".ts": _TorchScriptRunner, ".pt": _TorchScriptRunner, ".onnx": _OnnxRunner}


class ExportedYolact:
    """
    An exported YOLACT (``model.ts``, run by TorchScript on ``MODEL.DEVICE``, or ``model.onnx``, run by
    onnxruntime) called like the eager model: a list of dicts with ``image`` (C, H, W) in ``INPUT.FORMAT`` and
    optional ``height`` / ``width`` in, a list of ``{"instances": Instances}`` out, with the fields and
    coordinates of :class:`YOLACT`'s. Images are processed one at a time.

    ``cfg`` is the config the model was exported with (``MODEL.YOLACT.INPUT_SIZE``, ``PRESERVE_ASPECT_RATIO``,
    ``POSTPROCESS.MASK_THRESH``, ``MODEL.PIXEL_MEAN``, ``MODEL.DEVICE``): images are resized into the network
    input by the eager model's one resize, with its region. To time the exported model, call the instance (the
    whole pipeline) or :meth:`run` (the exported graph alone, on a :func:`preprocess_image` output).
    """

    def __init__(self, path: str, cfg):
        extension = os.path.splitext(path)[1]
        if extension not in _RUNNERS:
            raise ValueError(f"Unknown exported model {path!r}: expected one of {sorted(_RUNNERS)}")
        self.input_size = cfg.MODEL.YOLACT.INPUT_SIZE
        self.preserve_aspect_ratio = cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO
        self.pad_value = tuple(cfg.MODEL.PIXEL_MEAN)
        self.mask_threshold = cfg.MODEL.YOLACT.POSTPROCESS.MASK_THRESH
        self.device = torch.device(cfg.MODEL.DEVICE)
        self._runner = _RUNNERS[extension](path, self.device)

    def run(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The exported graph on images (1, 3, S, S): (boxes, scores, classes, masks[, mask_scores])."""
        return self._runner(images)

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        return [{"instances": self._inference_single(x)} for x in batched_inputs]

    def _inference_single(self, x: Dict) -> Instances:
        images, region = _network_input(
            x["image"].to(self.device), self.input_size, self.preserve_aspect_ratio, self.pad_value
        )
        outputs = self.run(images)
        return outputs_to_instances(outputs, output_image_size(x), self.input_size, self.mask_threshold, region)
