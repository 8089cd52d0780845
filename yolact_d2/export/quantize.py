"""
int8 static post-training quantization of an exported YOLACT ONNX file with ONNX Runtime
(``onnxruntime.quantization.quantize_static``).

* Only the network's ``Conv`` nodes are quantized, in QDQ format: QuantizeLinear / DequantizeLinear pairs on
  their inputs and outputs (activations per tensor, uint8, ranges from MinMax calibration; weights per output
  channel, int8; biases int32), which ONNX Runtime runs as int8 convolutions. uint8 activations with int8
  weights (U8S8) are what ONNX Runtime's x86 int8 kernels (VNNI, AMX) compute fastest; on CPUs with AVX2 but no
  VNNI their 16-bit intermediate sums can saturate, which costs some accuracy. Every other node, and so all of the
  post-processing (box decoding, Fast NMS's IoU matmuls, mask assembly P·Cᵀ, crop, re-scoring's pooling) and
  YOLACT++'s ``DeformConv``, computes in float32, on the dequantized values where its input is a conv's output.
* Calibration images are fed exactly as :class:`~yolact_d2.export.ExportedYolact` feeds images:
  :func:`~yolact_d2.export.preprocess_image` outputs, (1, 3, S, S) float32, 0-255, in ``INPUT.FORMAT``. A few
  training images (:data:`DEFAULT_CALIBRATION_COUNT`) suffice for MinMax ranges; validation images are kept out
  of calibration so that evaluating the int8 model stays fair.
"""
import os
import tempfile
from typing import Dict, List, Optional, Sequence

import torch

from detectron2.data import DatasetCatalog

from ..data import read_image
from .exporters import export_onnx
from .runtime import preprocess_image

__all__ = [
    "PRECISIONS",
    "ONNX_FILE_NAMES",
    "DEFAULT_CALIBRATION_COUNT",
    "quantize_onnx",
    "export_onnx_models",
    "calibration_files",
    "read_calibration_images",
    "config_calibration_images",
    "onnx_precision",
]

# The precisions an ONNX export is written in, and the file name of each in the output folder.
PRECISIONS = ("float32", "int8")
ONNX_FILE_NAMES = {"float32": "model.onnx", "int8": "model_int8.onnx"}
# Calibration images taken from a dataset when none are given.
DEFAULT_CALIBRATION_COUNT = 16
# The only quantized operator type: the network's convolutions (not DeformConv, not the post-processing).
QUANTIZED_OP_TYPES = ("Conv",)


def _onnxruntime_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as e:
        raise ImportError(
            f"int8 quantization needs the package onnxruntime (pip install onnxruntime), which cannot be imported: {e}"
        ) from e
    return quantization


class _CalibrationImages:
    """ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next``) over the images, one ``images`` feed each."""

    def __init__(self, images: Sequence[torch.Tensor]):
        self._feeds = iter([{"images": image.numpy()} for image in images])

    def get_next(self) -> Optional[Dict]:
        return next(self._feeds, None)


def _check_calibration_images(images: Sequence[torch.Tensor]) -> None:
    if len(images) == 0:
        raise ValueError("int8 quantization needs at least one calibration image; got none")
    for i, image in enumerate(images):
        s = image.shape[-1]
        if image.dtype != torch.float32 or tuple(image.shape) != (1, 3, s, s):
            raise ValueError(
                f"Calibration images are (1, 3, S, S) float32 (preprocess_image's output); image {i} is "
                f"{tuple(image.shape)} {image.dtype}"
            )
    sizes = sorted({image.shape[-1] for image in images})
    if len(sizes) > 1:
        raise ValueError(f"Calibration images must share the model's input size; got sizes {sizes}")


def quantize_onnx(model_path: str, output_path: str, calibration_images: Sequence[torch.Tensor]) -> None:
    """
    Write the int8 quantization of the exported YOLACT ``model_path`` (:func:`~yolact_d2.export.export_onnx`) to
    ``output_path``: the Conv nodes quantized in QDQ format as the module's docstring says, their activation
    ranges calibrated (MinMax) on ``calibration_images``. ONNX Runtime's quantization pre-processing (graph
    optimization and ONNX shape inference) runs first; its symbolic shape inference is skipped, as it cannot
    follow the data-dependent sizes of the NMS.

    Args:
        calibration_images: (1, 3, S, S) float32, 0-255, in ``INPUT.FORMAT`` (:func:`read_calibration_images`),
            S the model's input size.

    Raises:
        ImportError: naming onnxruntime, when it is not installed.
        ValueError: for no calibration images, or images of another shape or dtype.
    """
    _check_calibration_images(calibration_images)
    quantization = _onnxruntime_quantization()
    with tempfile.TemporaryDirectory() as folder:
        prepared = os.path.join(folder, "prepared.onnx")
        quantization.quant_pre_process(model_path, prepared, skip_symbolic_shape=True)
        quantization.quantize_static(
            prepared,
            output_path,
            _CalibrationImages(calibration_images),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )


def export_onnx_models(
    model, images: torch.Tensor, folder: str, calibration_images: Sequence[torch.Tensor] = ()
) -> Dict[str, str]:
    """
    Export ``model`` (a :class:`YOLACT` in eval mode) to ``folder/model.onnx`` (:func:`export_onnx` on the sample
    ``images`` (1, 3, S, S) float32) and, given ``calibration_images``, quantize it to ``folder/model_int8.onnx``
    (:func:`quantize_onnx`). Returns the path of each precision written, by :data:`PRECISIONS` name.
    """
    os.makedirs(folder, exist_ok=True)
    paths = {"float32": os.path.join(folder, ONNX_FILE_NAMES["float32"])}
    export_onnx(model, images, paths["float32"])
    if len(calibration_images):
        paths["int8"] = os.path.join(folder, ONNX_FILE_NAMES["int8"])
        quantize_onnx(paths["float32"], paths["int8"], calibration_images)
    return paths


def calibration_files(dataset: str, count: int = DEFAULT_CALIBRATION_COUNT) -> List[str]:
    """
    The image files of ``count`` records of the registered detectron2 dataset ``dataset`` (e.g. the config's
    ``DATASETS.TRAIN[0]``), spread evenly over it (all of them when it has fewer).
    """
    if count < 1:
        raise ValueError(f"The calibration image count must be >= 1; got {count}")
    if dataset not in DatasetCatalog.list():
        raise ValueError(f"Calibration dataset {dataset!r} is not registered in detectron2's DatasetCatalog")
    records = DatasetCatalog.get(dataset)
    if not records:
        raise ValueError(f"Calibration dataset {dataset!r} has no images")
    count = min(count, len(records))
    return [records[i * len(records) // count]["file_name"] for i in range(count)]


def read_calibration_images(files: Sequence[str], input_size: int, image_format: str) -> List[torch.Tensor]:
    """
    The image files read in ``image_format`` (``INPUT.FORMAT``, :func:`yolact_d2.data.read_image`: upright by EXIF)
    and resized as the exported model takes them (:func:`preprocess_image`): (1, 3, S, S) float32 each.

    Raises:
        ValueError: for no files.
        OSError: naming the file, when one is missing or unreadable.
    """
    if not files:
        raise ValueError("int8 quantization needs at least one calibration image; got no files")
    images = []
    for path in files:
        image = torch.from_numpy(read_image(path, format=image_format).transpose(2, 0, 1).copy())
        images.append(preprocess_image(image, input_size))
    return images


def config_calibration_images(
    cfg, files: Optional[Sequence[str]] = None, count: int = DEFAULT_CALIBRATION_COUNT
) -> List[torch.Tensor]:
    """
    The int8 calibration images of a config's model, (1, 3, S, S) float32 each (:func:`read_calibration_images`
    at ``MODEL.YOLACT.INPUT_SIZE`` in ``INPUT.FORMAT``): ``files`` when given, else ``count`` images of its
    ``DATASETS.TRAIN[0]`` (:func:`calibration_files`; training images, so that an evaluation stays fair).

    Raises:
        ValueError: without ``files`` and with an empty ``DATASETS.TRAIN``.
    """
    if files is None:
        if not cfg.DATASETS.TRAIN:
            raise ValueError("int8 calibration needs calibration images or a dataset in DATASETS.TRAIN; it is empty")
        files = calibration_files(cfg.DATASETS.TRAIN[0], count)
    return read_calibration_images(files, cfg.MODEL.YOLACT.INPUT_SIZE, cfg.INPUT.FORMAT)


def onnx_precision(path: str) -> str:
    """"int8" for an ONNX file with quantized nodes (QuantizeLinear / DequantizeLinear), else "float32"."""
    import onnx

    op_types = {node.op_type for node in onnx.load(path, load_external_data=False).graph.node}
    return "int8" if op_types & {"QuantizeLinear", "DequantizeLinear"} else "float32"
