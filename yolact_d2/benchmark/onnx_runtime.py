"""
ONNX Runtime as a benchmark runtime: a YOLACT exported to ONNX with its post-processing
(:func:`yolact_d2.export.export_onnx`), in float32 and quantized to int8 (:func:`yolact_d2.export.quantize_onnx`),
timed and evaluated through :class:`yolact_d2.export.ExportedYolact` like the eager model.
"""
import os
from typing import Dict, List, Optional, Sequence

import torch

from ..export import (
    DEFAULT_CALIBRATION_COUNT,
    PRECISIONS,
    ExportedYolact,
    check_exportable,
    config_calibration_images,
    export_onnx_models,
    onnx_precision,
)
from .accuracy import accuracy_rows
from .models import benchmark_config, build_trained_model, config_label

__all__ = ["RUNTIME", "PRECISIONS", "NotApplicable", "onnxruntime_missing", "exported_runtime", "onnx_models",
           "evaluate_onnx_accuracy"]

RUNTIME = "onnxruntime"


class NotApplicable(Exception):
    """The ONNX Runtime rows of a config cannot exist: its model cannot be exported, or int8 has nothing to
    calibrate on. The benchmark notes it and goes on."""


def onnxruntime_missing() -> Optional[str]:
    """None when onnxruntime can be imported, else a note saying why the ONNX Runtime rows are missing."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"ONNX Runtime rows skipped: the package onnxruntime cannot be imported ({e})"
    return None


def exported_runtime(path: str) -> Dict[str, str]:
    """``precision`` and ``runtime`` of an exported file: TorchScript (float32), or an ONNX file's precision."""
    if not path.endswith(".onnx"):
        return {"precision": "float32", "runtime": "torchscript"}
    return {"precision": onnx_precision(path), "runtime": RUNTIME}


def onnx_models(model, cfg, calibration_images: Sequence[torch.Tensor], precisions, folder) -> Dict:
    """
    The eager YOLACT ``model`` of ``cfg`` exported to ``folder`` (int8 quantized on ``calibration_images``,
    (1, 3, S, S) float32): ExportedYolact by precision.

    Raises:
        NotApplicable: when the model cannot be exported (:func:`yolact_d2.export.check_exportable`).
    """
    try:
        check_exportable(model)
    except ValueError as e:
        raise NotApplicable(str(e)) from e
    size = cfg.MODEL.YOLACT.INPUT_SIZE
    sample = calibration_images[0] if len(calibration_images) else torch.zeros(1, 3, size, size)
    paths = export_onnx_models(model, sample, folder, calibration_images if "int8" in precisions else ())
    return {precision: ExportedYolact(paths[precision], cfg) for precision in precisions}


def evaluate_onnx_accuracy(
    config: str, weights: str, precisions: Sequence[str], *, device: str, warmup: int, iters: int,
    output_dir: str, opts: Sequence[str] = (), input_size: Optional[int] = None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
) -> List[Dict]:
    """
    :func:`yolact_d2.benchmark.accuracy.evaluate_accuracy` of ``weights`` exported to ONNX in each of
    ``precisions``: the trained YOLACT of ``config`` (its own thresholds, at ``input_size`` or its own, ``opts``
    applied) is written to ``output_dir/onnx/<label>/`` (int8 calibrated on ``calibration_count`` images of its
    ``DATASETS.TRAIN[0]``, never the evaluated ones), then each file is evaluated and timed by ONNX Runtime.

    Returns:
        per precision and dataset: :func:`evaluate_accuracy`'s row with ``precision`` and ``runtime``
        ("onnxruntime").
    Raises:
        NotApplicable: when the model cannot be exported, or int8 has no ``DATASETS.TRAIN`` to calibrate on.
    """
    cfg = benchmark_config(config, device=device, opts=opts, weights=weights, input_size=input_size)
    if "int8" in precisions and not cfg.DATASETS.TRAIN:
        raise NotApplicable("int8 is calibrated on DATASETS.TRAIN[0], and the config has no DATASETS.TRAIN")
    label = config_label(config)
    calibration = config_calibration_images(cfg, count=calibration_count) if "int8" in precisions else []
    folder = os.path.join(output_dir, "onnx", label)
    models = onnx_models(build_trained_model(cfg), cfg, calibration, precisions, folder)
    rows = []
    for precision, exported in models.items():
        eval_cfg = cfg.clone()
        eval_cfg.OUTPUT_DIR = os.path.join(output_dir, "eval", label, f"{RUNTIME}_{precision}")
        rows += accuracy_rows(eval_cfg, exported, config=config, weights=weights, device=device, warmup=warmup,
                              iters=iters, precision=precision, runtime=RUNTIME)
    return rows
