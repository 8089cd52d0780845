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
* Configs that cannot be exported (a post-processor other than FastNMS, CrossClassFastNMS, StandardNMS;
  ``PRESERVE_ASPECT_RATIO``; ``MODEL.YOLACT.PRECISION`` other than float32: the graph is recorded in float32)
  stop the tool with a message. The TorchScript file runs on ``MODEL.DEVICE``.

Exit status: 0 when the file was written and checked, 1 when the model cannot be exported or the check
failed, 2 for invalid arguments.
"""
import yolact_d2  # noqa: F401  (before detectron2: it imports detectron2 without avoidable warnings)
import argparse
import logging
import os
import sys

import numpy as np
import torch

from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from yolact_d2.config import add_config_arguments, config_overrides, load_yolact_config
from yolact_d2.data import read_image
from yolact_d2.engine import YolactCheckpointer
from yolact_d2.export import ExportedYolact, export_onnx, export_torchscript, output_names, preprocess_image

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
    return args


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
    check_exported(model, ExportedYolact(path, cfg), image.to(model.device))
    print_usage(path, cfg_path, cfg.MODEL.YOLACT.INPUT_SIZE, ", ".join(output_names(model)))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
