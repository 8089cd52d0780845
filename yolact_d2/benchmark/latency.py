"""End-to-end inference latency, throughput, peak memory and detection counts of a model on a batch."""
from typing import Callable, Dict, List, Sequence

import torch

from .timing import measure, summarize

__all__ = ["REFERENCE_PRECISION", "REFERENCE_RUNTIME", "measure_latency", "add_speedups", "add_precision_ratios"]

# The rows others are compared with: the eager model in float32.
REFERENCE_PRECISION = "float32"
REFERENCE_RUNTIME = "eager"


def measure_latency(model: Callable, inputs: Sequence[Dict], *, warmup: int, iters: int, device) -> Dict:
    """
    Time ``model(inputs)`` (one batch of ``len(inputs)`` images) under ``torch.inference_mode()``.

    Returns:
        dict: ``batch_size``; ``median_ms`` / ``p90_ms`` / ``mean_ms`` per image (batch time / batch size);
        ``images_per_s`` (from the median); ``peak_memory_mb`` and ``memory_method`` (see :mod:`.timing`);
        ``detections``: the number of instances of each image in the last run.
    """
    last = {}

    def run():
        last["outputs"] = model(list(inputs))

    with torch.inference_mode():
        m = measure(run, warmup=warmup, iters=iters, device=device)
    stats = summarize(m.seconds, 1.0 / len(inputs))
    return {
        "batch_size": len(inputs),
        **stats,
        "images_per_s": 1000.0 / stats["median_ms"],
        "peak_memory_mb": m.peak_memory_mb,
        "memory_method": m.memory_method,
        "detections": [len(out["instances"]) for out in last["outputs"]],
    }


def _float32_eager_ms(rows: List[Dict], key: Callable[[Dict], tuple]) -> Dict[tuple, float]:
    """``key(row)`` -> median latency of the float32 eager rows."""
    return {key(r): r["median_ms"] for r in rows
            if r["precision"] == REFERENCE_PRECISION and r["runtime"] == REFERENCE_RUNTIME}


def add_speedups(rows: List[Dict], reference: str) -> None:
    """
    Set ``speedup`` of every latency row (any precision and runtime): the median latency of the ``reference``
    config's float32 eager row with the same mode and batch size divided by the row's (> 1: faster than the
    reference in float32). None without such a row.
    """
    ref = _float32_eager_ms([r for r in rows if r["config"] == reference], lambda r: (r["mode"], r["batch_size"]))
    for row in rows:
        ref_ms = ref.get((row["mode"], row["batch_size"]))
        row["speedup"] = ref_ms / row["median_ms"] if ref_ms else None


def add_precision_ratios(rows: List[Dict]) -> None:
    """
    Set ``vs_float32`` of every latency row (dicts with ``config``, ``mode``, ``batch_size``, ``precision``,
    ``runtime``, ``median_ms``; any runtime, e.g. "eager" or "onnxruntime"): its median latency divided by that
    of the float32 eager row of the same config, mode and batch size (< 1: faster than float32). None without
    such a row.
    """
    key = lambda r: (r["config"], r["mode"], r["batch_size"])  # noqa: E731
    float32 = _float32_eager_ms(rows, key)
    for row in rows:
        float32_ms = float32.get(key(row))
        row["vs_float32"] = row["median_ms"] / float32_ms if float32_ms else None
