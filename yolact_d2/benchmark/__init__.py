"""
One benchmark suite for YOLACT and detectron2 models side by side (``tools/benchmark.py``): end-to-end latency
and memory, YOLACT's per-stage breakdown, the NMS variants, FLOPs and parameters, training speed and accuracy,
measured in one process on the same images and device, each config at its own input size or a given one.
"""
from .report import write_reports, format_text
from .suite import TASKS, BenchmarkSettings, run_benchmark

__all__ = ["TASKS", "BenchmarkSettings", "run_benchmark", "format_text", "write_reports"]
