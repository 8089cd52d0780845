#!/usr/bin/env python
"""
Export YOLACT / YOLACT++, post-processing included, to TorchScript or ONNX (the flags of detectron2's
``tools/deploy/export_model.py``):

    python tools/export_model.py --config-file configs/yolact_R_50_FPN_550.yaml --format onnx \\
        --output exported/ --opts MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu

* ``--format torchscript`` writes ``model.ts``, ``--format onnx`` writes ``model.onnx`` (opset 19, weights
  inside); both are written with ``--export-method tracing`` (the default and only method: scripting is
  refused). The config is saved next to it as ``config.yaml``.
* The graph takes one image resized to the network input, (1, 3, S, S) float 0-255 in ``INPUT.FORMAT``, and
  returns ``boxes`` (D, 4) XYXY in input pixels, ``scores`` (D,), ``classes`` (D,) int64 and ``masks``
  (D, Hp, Wp) soft masks at prototype resolution, D varying with the image (:mod:`yolact_d2.export`); YOLACT++
  also returns ``mask_scores`` (D,), the re-scored scores of the masks.
* Config overrides: ``--opts KEY VALUE ...`` last, or the pairs alone at the end (after ``--``).
* ``--sample-image`` (or ``--input``) is the image the graph is recorded on (else a synthetic one): any image
  of the network size gives the same graph. The exported file is then run on it and must find the eager
  model's detections.
* ``--precision int8`` (ONNX only) also writes ``model_int8.onnx``: ``model.onnx`` with its convs quantized to
  int8 by ONNX Runtime's static post-training quantization (:mod:`yolact_d2.export.quantize`; the
  post-processing stays float32), calibrated on ``--calibration-images FILE ...`` or on ``--calibration-count N``
  images (default 16) of the config's ``DATASETS.TRAIN[0]``. The int8 file must run on the sample image; how
  many of the float32 model's detections it reproduces (same class, box IoU >= 0.5) is reported, not checked.
* Configs that cannot be exported (a post-processor other than FastNMS, CrossClassFastNMS, StandardNMS;
  ``PRESERVE_ASPECT_RATIO`` with YOLACT++'s re-scoring; ``MODEL.YOLACT.PRECISION`` other than float32: the graph
  is recorded in float32) stop the tool with a message. The TorchScript file runs on ``MODEL.DEVICE``.

Exit status: 0 when the files were written and checked, 1 when the model cannot be exported or quantized
(e.g. an unreadable calibration image) or the check failed, 2 for invalid arguments (``--precision int8``
without ``--format onnx``, calibration flags without it, a missing calibration file).
"""
import yolact_d2  # noqa: F401  (before detectron2: it imports detectron2 without avoidable warnings)
import argparse
import logging
import os
import sys

import numpy as np
import torch

from detectron2.modeling import build_model
from detectron2.structures import pairwise_iou
from detectron2.utils.logger import setup_logger

from yolact_d2.config import add_config_arguments, config_overrides, load_yolact_config
from yolact_d2.data import read_image
from yolact_d2.engine import YolactCheckpointer
from yolact_d2.export import (
    DEFAULT_CALIBRATION_COUNT,
    ONNX_FILE_NAMES,
    PRECISIONS,
    ExportedYolact,
    config_calibration_images,
    export_onnx,
    export_torchscript,
    output_names,
    preprocess_image,
    quantize_onnx,
)

# --format -> (file name, exporter)
FORMATS = {"torchscript": ("model.ts", export_torchscript), "onnx": ("model.onnx", export_onnx)}

logger = logging.getLogger("detectron2.export_model")


def get_parser():
    parser = argparse.ArgumentParser(description="Export YOLACT with its post-processing to TorchScript or ONNX")
    add_config_arguments(parser)
    parser.add_argument("--format", choices=sorted(FORMATS), default="torchscript", help="output format")
    parser.add_argument(
        "--export-method", choices=["tracing", "scripting"], default="tracing", help="method to export models"
    )
    parser.add_argument(
        "--sample-image", "--input", metavar="FILE", help="image to record the graph on (default: synthetic)"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory for the exported model")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="float32",
        help="int8: also write model_int8.onnx, its convs quantized (needs --format onnx and onnxruntime)",
    )
    calibration = parser.add_mutually_exclusive_group()
    calibration.add_argument("--calibration-images", nargs="+", metavar="FILE", help="int8 calibration images")
    calibration.add_argument(
        "--calibration-count", type=int, metavar="N",
        help=f"int8 calibration on N images of DATASETS.TRAIN[0] (default: {DEFAULT_CALIBRATION_COUNT})",
    )
    return parser


def parse_args(argv=None):
    """The arguments; exits with status 2 for invalid ones, scripting included."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.export_method == "scripting":
        parser.error(
            "--export-method scripting is not supported: YOLACT is exported by tracing, which records its "
            "post-processing correctly for any number of detections. Use --export-method tracing."
        )
    _check_precision_args(parser, args)
    return args


def _check_precision_args(parser, args) -> None:
    calibration_flags = args.calibration_images is not None or args.calibration_count is not None
    if args.precision == "int8" and args.format != "onnx":
        parser.error(f"--precision int8 needs --format onnx (ONNX Runtime quantizes it); got --format {args.format}")
    if args.precision != "int8" and calibration_flags:
        parser.error("--calibration-images / --calibration-count only apply to --precision int8")
    if args.calibration_count is not None and args.calibration_count < 1:
        parser.error(f"--calibration-count must be >= 1; got {args.calibration_count}")
    missing = [f for f in args.calibration_images or () if not os.path.isfile(f)]
    if missing:
        parser.error(f"--calibration-images: no such file {missing[0]}")


def setup_cfg(args):
    cfg = load_yolact_config(args.config_file, config_overrides(args))
    cfg.freeze()
    return cfg


def sample_image(cfg, path) -> torch.Tensor:
    """The sample image (3, H, W) uint8 in ``INPUT.FORMAT``: read from ``path``, else random pixels (S x S)."""
    if path is None:
        size = cfg.MODEL.YOLACT.INPUT_SIZE
        return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, size, size), dtype=np.uint8))
    image = read_image(path, format=cfg.INPUT.FORMAT)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def check_exported(model, exported: ExportedYolact, image: torch.Tensor) -> None:
    """Exit with a message unless the exported model finds the eager model's detections on ``image``."""
    with torch.no_grad():
        expected = model([{"image": image}])[0]["instances"]
    got = exported([{"image": image}])[0]["instances"]
    if len(got) != len(expected):
        sys.exit(f"On the sample image the exported model finds {len(got)} detections, the eager one {len(expected)}")
    for field in ("scores", "mask_scores"):
        if expected.has(field) and not torch.allclose(got.get(field), expected.get(field), rtol=1e-3, atol=1e-4):
            sys.exit(f"On the sample image the exported model's {field} differ from the eager model's")
    logger.info(f"The exported model finds the eager model's {len(got)} detections on the sample image")


def reproduced_detections(expected, got, iou_threshold: float = 0.5) -> int:
    """How many of the ``expected`` Instances have one in ``got`` of the same class with box IoU >= the threshold."""
    if len(expected) == 0 or len(got) == 0:
        return 0
    iou = pairwise_iou(expected.pred_boxes, got.pred_boxes)
    same_class = expected.pred_classes[:, None] == got.pred_classes[None]
    return int(((iou >= iou_threshold) & same_class).any(dim=1).sum())


def write_int8(cfg, args, model_path: str, float32: ExportedYolact, image: torch.Tensor) -> str:
    """
    Quantize ``model_path`` to ``model_int8.onnx`` beside it, check that it runs on ``image`` and print how many of
    the ``float32`` model's detections it reproduces; returns its path. Exits with a message when it cannot.
    """
    path = os.path.join(args.output, ONNX_FILE_NAMES["int8"])
    try:
        images = config_calibration_images(cfg, args.calibration_images,
                                           args.calibration_count or DEFAULT_CALIBRATION_COUNT)
        quantize_onnx(model_path, path, images)
    except (ImportError, OSError, ValueError) as e:
        sys.exit(f"int8 quantization failed: {e}")
    try:
        got = ExportedYolact(path, cfg)([{"image": image}])[0]["instances"]
    except Exception as e:  # onnxruntime's errors derive from Exception only
        sys.exit(f"The int8 model {path} does not run on the sample image: {e}")
    expected = float32([{"image": image}])[0]["instances"]
    print(
        f"The int8 model reproduces {reproduced_detections(expected, got)} of the float32 model's {len(expected)} "
        f"detections on the sample image (same class, box IoU >= 0.5; it finds {len(got)})"
    )
    return path


def print_usage(path: str, cfg_path: str, input_size: int, outputs: str) -> None:
    if path.endswith(".ts"):
        run = [
            "import torchvision  # registers the torchvision ops (nms, deform_conv2d) the file may use",
            f'{outputs} = torch.jit.load("{path}")(images)',
        ]
    else:
        session = f'onnxruntime.InferenceSession("{path}")'
        run = [f'{outputs} = {session}.run(None, {{"images": images}})']
    to_instances = [
        f'cfg = get_cfg(); add_yolact_config(cfg); cfg.merge_from_file("{cfg_path}")',
        f'outputs = ExportedYolact("{path}", cfg)([{{"image": image, "height": h, "width": w}}])',
    ]
    print(f"Wrote {path} and {cfg_path}.")
    print(f"Run it on images (1, 3, {input_size}, {input_size}) float32, 0-255, in INPUT.FORMAT:")
    print("".join(f"    {line}\n" for line in run), end="")
    print("or get detectron2 Instances from detectron2 inputs (yolact_d2.export.ExportedYolact):")
    print("".join(f"    {line}\n" for line in to_instances), end="")


def main(args) -> int:
    """Export the model; returns the exit status (see the module's docstring)."""
    setup_logger(name="fvcore")
    setup_logger()
    logger.info(f"Arguments: {args}")
    cfg = setup_cfg(args)
    model = build_model(cfg)
    YolactCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    image = sample_image(cfg, args.sample_image)
    os.makedirs(args.output, exist_ok=True)
    file_name, export = FORMATS[args.format]
    path = os.path.join(args.output, file_name)
    try:
        export(model, preprocess_image(image, cfg.MODEL.YOLACT.INPUT_SIZE).to(model.device), path)
    except ValueError as e:
        sys.exit(str(e))
    cfg_path = os.path.join(args.output, "config.yaml")
    with open(cfg_path, "w") as f:
        f.write(cfg.dump())
    exported = ExportedYolact(path, cfg)
    check_exported(model, exported, image.to(model.device))
    if args.precision == "int8":
        print(f"Wrote {path} (float32), then its int8 quantization:")
        path = write_int8(cfg, args, path, exported, image)
    print_usage(path, cfg_path, cfg.MODEL.YOLACT.INPUT_SIZE, ", ".join(output_names(model)))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
