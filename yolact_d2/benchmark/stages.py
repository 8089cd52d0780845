"""
YOLACT's per-stage inference time, like Table 8 of the YOLACT++ paper, read from a ``torch.profiler`` trace.

YOLACT runs each step of inference inside a ``record_function("yolact/<step>")`` range (:class:`YOLACT`). The
benchmark adds a range around each run and one around the backbone's ResNet (forward hooks on
``backbone.bottom_up``), which splits the backbone into ResNet and FPN, and profiles the model's own forward. A
stage's time in a run is the duration of its ranges (on CUDA: the device time of the kernels they launched)
minus that of the stage ranges nested in them. What runs outside every stage (batching the outputs, and on CUDA
the device's idle time) is the "other" stage, so the stages add up to the end-to-end time of the profiled
forward. The profiler's bookkeeping makes that forward slightly slower than the plain one; compare with the
latency of the same model, mode and batch.
"""
import contextlib
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .timing import summarize, synchronize

__all__ = ["STAGES", "OTHER_STAGE", "RUN_RANGE", "measure_stages"]

RUN_RANGE = "benchmark/run"
RESNET_RANGE = "yolact/backbone/resnet"
# Reported stage -> the profiler range it times.
STAGES = {
    "preprocess": "yolact/preprocess",
    "backbone (ResNet)": RESNET_RANGE,
    "FPN": "yolact/backbone",  # the rest of the backbone
    "protonet": "yolact/protonet",
    "head + anchors": "yolact/head",
    "decode + NMS": "yolact/decode_nms",
    "mask assembly + crop (+ re-scoring)": "yolact/masks",
    "post-processing (to Instances)": "yolact/to_instances",
}
OTHER_STAGE = "other (between stages)"
# Convolutional stages -> (module whose FLOPs they run, submodule run by another stage, excluded).
_CONV_STAGE_MODULES = {
    "backbone (ResNet)": ("backbone.bottom_up", None),
    "FPN": ("backbone", "backbone.bottom_up"),
    "protonet": ("protonet", None),
    "head + anchors": ("head", None),
}
_STAGE_OF_RANGE = {name: stage for stage, name in STAGES.items()}


@contextlib.contextmanager
def _resnet_range(model):
    """Within the context, every forward of the model's ResNet (``backbone.bottom_up``) is a profiler range."""
    resnet = model.get_submodule("backbone.bottom_up")
    opened = []

    def enter(*_):
        opened.append(record_function(RESNET_RANGE))
        opened[-1].__enter__()

    def leave(*_):
        opened.pop().__exit__(None, None, None)

    hooks = [resnet.register_forward_pre_hook(enter), resnet.register_forward_hook(leave)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def _duration_us(event, on_device: bool) -> float:
    return event.device_time_total if on_device else event.time_range.elapsed_us()


def _stage_seconds(run_event, on_device: bool) -> Dict[str, float]:
    """Seconds of each stage inside the profiler event ``run_event``, nested stages excluded from their parent."""
    seconds = defaultdict(float)

    def visit(event, stage: Optional[str]):
        for child in event.cpu_children:
            child_stage = _STAGE_OF_RANGE.get(child.name)
            if child_stage is not None:
                duration = _duration_us(child, on_device) / 1e6
                seconds[child_stage] += duration
                if stage is not None:
                    seconds[stage] -= duration
            visit(child, child_stage or stage)

    visit(run_event, None)
    return seconds


def _stage_gmacs(gmacs_by_module: Dict[str, float], stage: str) -> Optional[float]:
    if stage not in _CONV_STAGE_MODULES:
        return None
    module, excluded = _CONV_STAGE_MODULES[stage]
    return gmacs_by_module.get(module, 0.0) - gmacs_by_module.get(excluded, 0.0)


def _profile_runs(model, inputs: Sequence[Dict], *, warmup: int, iters: int, device):
    """Profile ``iters`` runs of ``model(inputs)`` after ``warmup``: (run events, the last run's outputs)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1; got {iters}")
    on_device = torch.device(device).type == "cuda"
    last = {}

    def run():
        with record_function(RUN_RANGE):
            last["outputs"] = model(list(inputs))
            synchronize(device)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    with torch.inference_mode(), _resnet_range(model):
        for _ in range(warmup):
            run()
        with profile(activities=activities) as prof:
            for _ in range(iters):
                run()
    return [e for e in prof.events() if e.name == RUN_RANGE], last["outputs"]


def measure_stages(
    model, inputs: Sequence[Dict], *, warmup: int, iters: int, device, gmacs_by_module: Optional[Dict] = None
) -> Dict:
    """
    Per-stage times of YOLACT ``model(inputs)`` under ``torch.inference_mode()``.

    Args:
        gmacs_by_module: :func:`~.complexity.analyze_complexity`'s ``gmacs_by_module`` on the same inputs;
            with it, each convolutional stage gets its GMACs and achieved GMAC/s.
    Returns:
        dict: ``batch_size``; ``stages``: per stage (:data:`STAGES` order, then "other") ``stage``,
        ``median_ms``, ``p90_ms``, ``mean_ms`` (per batch), ``share`` (of the summed medians), ``gmacs``,
        ``gmacs_per_s``; ``sum_ms`` (sum of the stage medians), ``end_to_end_ms`` (median of the profiled
        forward) and ``detections`` per image.
    Raises:
        RuntimeError: when the model's forward lacks some of the ranges (the model no longer marks them).
    """
    on_device = torch.device(device).type == "cuda"
    runs, outputs = _profile_runs(model, inputs, warmup=warmup, iters=iters, device=device)
    per_run: List[Dict[str, float]] = [_stage_seconds(run, on_device) for run in runs]
    missing = [STAGES[s] for s in STAGES if s not in per_run[0]]
    if missing:
        raise RuntimeError(f"The profile of the model's forward has no ranges {missing}: the stages table needs "
                           f"YOLACT's record_function ranges (yolact_d2/modeling/meta_arch.py)")
    total = [run.time_range.elapsed_us() / 1e6 for run in runs]
    seconds = {stage: [r[stage] for r in per_run] for stage in STAGES}
    seconds[OTHER_STAGE] = list(np.asarray(total) - np.sum(list(seconds.values()), axis=0))
    rows = [{"stage": stage, **summarize(s)} for stage, s in seconds.items()]
    sum_ms = sum(r["median_ms"] for r in rows)
    for row in rows:
        row["share"] = row["median_ms"] / sum_ms if sum_ms > 0 else 0.0
        row["gmacs"] = _stage_gmacs(gmacs_by_module, row["stage"]) if gmacs_by_module else None
        row["gmacs_per_s"] = row["gmacs"] / (row["median_ms"] / 1000) if row["gmacs"] and row["median_ms"] else None
    return {
        "batch_size": len(inputs),
        "stages": rows,
        "sum_ms": sum_ms,
        "end_to_end_ms": summarize(total)["median_ms"],
        "detections": [len(out["instances"]) for out in outputs],
    }
