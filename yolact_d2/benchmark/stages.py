"""
YOLACT's per-stage inference time, like Table 8 of the YOLACT++ paper.

The model's own forward runs unchanged while its stage methods, modules and functions (preprocess_image, the
ResNet, the FPN's ``pyramid``, protonet, head, anchor generator, decode, post-processor, assemble_masks,
rescore, detections_to_instances) are temporarily wrapped by a :class:`~.timing.StageClock`, which
synchronises the device around each call. What runs between them (box clipping, indexing, sorting after
re-scoring, building the outputs) is the "other" stage, so the stages add up to the end-to-end time of the
instrumented forward. The synchronisations inside it make it slightly slower than the plain forward on a GPU;
compare with the latency of the same model, mode and batch.
"""
import contextlib
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .timing import StageClock, measure, summarize

__all__ = ["STAGES", "OTHER_STAGE", "MODEL_MODULE", "instrument_stages", "measure_stages"]

# The module defining the model's class, as the owner of functions its methods call.
MODEL_MODULE = "<model's module>"
# Stage name -> the (owner, callable name) pairs whose calls it times; the owner is a submodule path of the
# model ("" is the model itself) or MODEL_MODULE.
STAGES = {
    "preprocess": (("", "preprocess_image"),),
    "backbone (ResNet)": (("backbone.bottom_up", "forward"),),
    "FPN": (("backbone", "pyramid"),),
    "protonet": (("protonet", "forward"),),
    "head + anchors": (("head", "forward"), ("anchor_generator", "forward")),
    "decode + NMS": (("", "decode"), ("postprocessor", "forward")),
    "mask assembly + crop (+ re-scoring)": (("", "assemble_masks"), ("", "rescore")),
    "post-processing (to Instances)": ((MODEL_MODULE, "detections_to_instances"),),
}
OTHER_STAGE = "other (between stages)"
# Convolutional stages -> (module whose FLOPs they run, submodule run by another stage, excluded).
_CONV_STAGE_MODULES = {
    "backbone (ResNet)": ("backbone.bottom_up", None),
    "FPN": ("backbone", "backbone.bottom_up"),
    "protonet": ("protonet", None),
    "head + anchors": ("head", None),
}


def _owner(model, path: str):
    return sys.modules[type(model).__module__] if path == MODEL_MODULE else model.get_submodule(path)


@contextlib.contextmanager
def instrument_stages(model, clock: StageClock):
    """Within the context, the stage callables of the YOLACT ``model`` add their time to ``clock``."""
    patched = []  # (owner, name, its own attribute or None where the class's was used)
    try:
        for stage, targets in STAGES.items():
            for path, name in targets:
                owner = _owner(model, path)
                patched.append((owner, name, vars(owner).get(name)))
                setattr(owner, name, clock.wrap(stage, getattr(owner, name)))
        yield
    finally:
        for owner, name, own in reversed(patched):
            if own is None:
                delattr(owner, name)  # back to the class's method
            else:
                setattr(owner, name, own)


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
