"""
YOLACT's per-stage inference time, like Table 8 of the YOLACT++ paper.

The model's own forward runs unchanged under its stage timer (:meth:`YOLACT.stage_timer`), which opens a
:class:`~.timing.StageClock` stage around each step of inference (preprocessing, backbone, protonet, head and
anchors, decode and NMS, mask assembly, crop and re-scoring, the mapping to ``Instances``); forward hooks on
the backbone's ResNet (``backbone.bottom_up``) split the backbone into ResNet and FPN. The clock synchronises
the device at every stage boundary. What runs outside every stage (batching the outputs) is the "other"
stage, so the stages add up to the end-to-end time of the instrumented forward. The synchronisations make it
slightly slower than the plain forward on a GPU; compare with the latency of the same model, mode and batch.
"""
import contextlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..modeling.meta_arch import INFERENCE_STAGES
from .timing import StageClock, measure, summarize

__all__ = ["STAGES", "OTHER_STAGE", "RESNET_STAGE", "instrument_stages", "measure_stages"]

# Reported stage -> the model's inference stage (INFERENCE_STAGES) it times.
STAGES = {
    "preprocess": "preprocess",
    "backbone (ResNet)": None,  # the ResNet's forward inside the backbone, by forward hooks
    "FPN": "backbone",  # the rest of the backbone
    "protonet": "protonet",
    "head + anchors": "head",
    "decode + NMS": "decode_nms",
    "mask assembly + crop (+ re-scoring)": "masks",
    "post-processing (to Instances)": "to_instances",
}
RESNET_STAGE = "backbone (ResNet)"
OTHER_STAGE = "other (between stages)"
# Convolutional stages -> (module whose FLOPs they run, submodule run by another stage, excluded).
_CONV_STAGE_MODULES = {
    "backbone (ResNet)": ("backbone.bottom_up", None),
    "FPN": ("backbone", "backbone.bottom_up"),
    "protonet": ("protonet", None),
    "head + anchors": ("head", None),
}
_REPORTED = {model_stage: stage for stage, model_stage in STAGES.items() if model_stage is not None}


@contextlib.contextmanager
def instrument_stages(model, clock: StageClock):
    """Within the context, the inference stages of the YOLACT ``model`` add their time to ``clock``."""
    unknown = sorted(set(_REPORTED) - set(INFERENCE_STAGES))
    if unknown:
        raise ValueError(f"The benchmark times stages {unknown} that YOLACT's INFERENCE_STAGES {INFERENCE_STAGES} lack")
    resnet = model.get_submodule("backbone.bottom_up")
    hooks = [
        resnet.register_forward_pre_hook(lambda *_: clock.start(RESNET_STAGE)),
        resnet.register_forward_hook(lambda *_: clock.stop()),
    ]
    try:
        with model.stage_timer(lambda stage: clock.stage(_REPORTED.get(stage, stage))):
            yield
    finally:
        for hook in hooks:
            hook.remove()


def _stage_gmacs(gmacs_by_module: Dict[str, float], stage: str) -> Optional[float]:
    if stage not in _CONV_STAGE_MODULES:
        return None
    module, excluded = _CONV_STAGE_MODULES[stage]
    return gmacs_by_module.get(module, 0.0) - gmacs_by_module.get(excluded, 0.0)


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
        ``gmacs_per_s``; ``sum_ms`` (sum of the stage medians), ``end_to_end_ms`` (median of the instrumented
        forward) and ``detections`` per image.
    """
    clock = StageClock(device)
    per_run: List[Dict[str, float]] = []
    last = {}

    def run():
        clock.reset()
        last["outputs"] = model(list(inputs))
        per_run.append(dict(clock.seconds))

    with torch.inference_mode(), instrument_stages(model, clock):
        total = measure(run, warmup=warmup, iters=iters, device=device).seconds
    per_run = per_run[warmup:]
    seconds = {stage: [r.get(stage, 0.0) for r in per_run] for stage in STAGES}
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
        "detections": [len(out["instances"]) for out in last["outputs"]],
    }
