"""End-to-end inference latency, throughput, peak memory and detection counts of a model on a batch."""
from typing import Callable, Dict, List, Sequence

import torch

from .timing import measure, summarize

__all__ = ["measure_latency", "add_speedups"]


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


def add_speedups(rows: List[Dict], reference: str) -> None:
    """
    Set ``speedup`` of every row: the median latency of the ``reference`` config's row with the same mode and
    batch size divided by the row's (> 1: faster than the reference). None without such a row.
    """
    ref = {(r["mode"], r["batch_size"]): r["median_ms"] for r in rows if r["config"] == reference}
    for row in rows:
        ref_ms = ref.get((row["mode"], row["batch_size"]))
        row["speedup"] = ref_ms / row["median_ms"] if ref_ms else None
