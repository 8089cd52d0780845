#!/usr/bin/env python
"""
Benchmark YOLACT / YOLACT++ against Mask R-CNN (or any detectron2 configs) side by side: in one process, on
the same images and device, each at its config's input size unless --input-size sets one for all (random weights;
accuracy uses trained ones). By default YOLACT R-50, YOLACT++ R-50 and detectron2's Mask R-CNN R-50-FPN:

    python tools/benchmark.py --output-dir output/benchmark --input-size 550
    python tools/benchmark.py --device cuda --batch-sizes 1 8 --warmup 10 --iters 100
    python tools/benchmark.py --tasks latency,stages --input-size 400 \\
        --configs configs/yolact_R_101_FPN_550.yaml model_zoo:COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml
    python tools/benchmark.py --tasks latency,accuracy --precisions float32 bfloat16 --onnxruntime float32 int8
    python tools/benchmark.py --tasks accuracy \\
        --eval-weights configs/embedded/yolact_R_18_shapes.yaml=output/embedded/yolact_R_18_shapes/model_final.pth

Tables go to stdout; --output-dir gets benchmark.json, benchmark.md and, with accuracy results,
ap_vs_latency.png. See yolact_d2/benchmark/ for what each number means.
"""
import yolact_d2  # noqa: F401  (before detectron2: it imports detectron2 without avoidable warnings)
import argparse

import torch

from detectron2.utils.logger import setup_logger

from yolact_d2.benchmark import TASKS, BenchmarkSettings, format_text, run_benchmark, write_reports
from yolact_d2.benchmark.accuracy import parse_eval_weights
from yolact_d2.benchmark.onnx_runtime import PRECISIONS as ONNX_PRECISIONS
from yolact_d2.layers import PRECISIONS


def _tasks(value: str):
    return [t.strip() for t in value.split(",") if t.strip()]


def get_parser() -> argparse.ArgumentParser:
    d = BenchmarkSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", "--config-file", nargs="+", default=list(d.configs),
                   help="config files, or model_zoo:NAME for detectron2's model zoo (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--input-size", type=int, default=d.input_size,
                   help="square input of every model (YOLACT's INPUT_SIZE; R-CNN's MIN/MAX_SIZE_TEST); "
                        "default: each config's own (its rows show it)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=list(d.batch_sizes), help="inference batch sizes")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed runs before the timed ones")
    p.add_argument("--iters", type=int, default=d.iters, help="timed runs of every measurement")
    p.add_argument("--tasks", type=_tasks, default=list(d.tasks),
                   help=f"comma-separated subset of {','.join(TASKS)} (default: all)")
    p.add_argument("--fixed-detections", type=int, default=d.fixed_detections,
                   help="detections per image of the equal-work mode (score threshold 0); 0: no such mode")
    p.add_argument("--images", "--input", nargs="+", default=[],
                   help="image files (resized to the input size) instead of synthetic images")
    p.add_argument("--train-batch-size", type=int, default=d.train_batch_size)
    p.add_argument("--eval-weights", nargs="+", metavar="CONFIG=WEIGHTS", type=str, default=None,
                   help="trained weights to evaluate (default: the embedded dataset's checkpoints, if present)")
    p.add_argument("--exported", metavar="PATH", help="also time this exported model (yolact_d2.export.ExportedYolact)")
    p.add_argument("--exported-config", help="config of --exported (default: the first YOLACT config)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(d.precisions),
                   help="precisions of the eager models' inference in the latency, stages and accuracy tasks "
                        "(bfloat16: CPUs with AVX512-BF16 / AMX, recent GPUs; float16: CUDA)")
    p.add_argument("--onnxruntime", nargs="+", choices=ONNX_PRECISIONS, default=[], metavar="PRECISION",
                   help="also time (and, with trained weights, evaluate) each YOLACT config exported to ONNX and run "
                        "by ONNX Runtime, in these precisions: float32, int8 (static quantization of the convs)")
    p.add_argument("--num-threads", type=int, help="torch's CPU threads (default: torch's choice)")
    p.add_argument("--output-dir", "--output", default=d.output_dir, help="folder of the reports")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides applied to every config, e.g. MODEL.YOLACT.POSTPROCESS.NAME StandardNMS")
    return p


def settings_from_args(args) -> BenchmarkSettings:
    """The suite's settings from the parsed flags (``--eval-weights`` pairs checked here, the rest by the suite)."""
    return BenchmarkSettings(
        configs=args.configs,
        device=args.device,
        input_size=args.input_size,
        batch_sizes=args.batch_sizes,
        warmup=args.warmup,
        iters=args.iters,
        tasks=args.tasks,
        fixed_detections=args.fixed_detections,
        images=args.images,
        train_batch_size=args.train_batch_size,
        eval_weights=None if args.eval_weights is None else parse_eval_weights(args.eval_weights),
        exported=args.exported,
        exported_config=args.exported_config,
        onnxruntime=args.onnxruntime,
        output_dir=args.output_dir,
        opts=args.opts,
        precisions=args.precisions,
    )


def main(args) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    setup_logger(name="yolact_d2")
    settings = settings_from_args(args)
    results = run_benchmark(settings)
    print(format_text(results))
    paths = write_reports(results, args.output_dir)
    print("\nWrote " + ", ".join(paths.values()))
    return results


if __name__ == "__main__":
    main(get_parser().parse_args())
