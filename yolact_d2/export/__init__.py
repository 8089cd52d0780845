"""
Export of YOLACT / YOLACT++ with its whole post-processing, to TorchScript (tracing) or ONNX, and inference with
the exported files (``tools/export_model.py`` is the command line).

* :class:`YolactExportable`: the traceable module, (1, 3, S, S) image in, (boxes, scores, classes, masks) out
  (and mask_scores for YOLACT++);
* :func:`export_torchscript`, :func:`export_onnx`: write ``model.ts`` / ``model.onnx`` (the trace checked on
  :func:`trace_check_images`, only :data:`CHECKED_TRACER_WARNINGS` silenced);
* :class:`ExportedYolact`: run a written file on detectron2 inputs and get ``Instances`` back, with
  :func:`preprocess_image` (resize to the network input) and :func:`outputs_to_instances` (back to the image);
* :func:`paste_masks` is :func:`yolact_d2.modeling.postprocessing.masks_to_image`: it resizes the exported
  model's soft masks (D, Hp, Wp), which cover the whole S x S input, to the output image and binarises them;
* :func:`quantize_onnx`: int8 static post-training quantization of ``model.onnx`` (ONNX Runtime, QDQ, convs only)
  to ``model_int8.onnx``, calibrated on :func:`read_calibration_images` (e.g. of :func:`calibration_files` of
  ``DATASETS.TRAIN``); :func:`export_onnx_models` writes both files.
"""
from ..modeling.postprocessing import masks_to_image as paste_masks
from .exportable import OUTPUT_NAMES, YolactExportable, check_exportable, output_names
from .exporters import CHECKED_TRACER_WARNINGS, ONNX_OPSET, export_onnx, export_torchscript, trace_check_images
from .runtime import ExportedYolact, outputs_to_instances, preprocess_image
from .quantize import (
    DEFAULT_CALIBRATION_COUNT,
    ONNX_FILE_NAMES,
    PRECISIONS,
    calibration_files,
    config_calibration_images,
    export_onnx_models,
    onnx_precision,
    quantize_onnx,
    read_calibration_images,
)
