"""
Fast NMS vs cross-class Fast NMS vs standard NMS (:mod:`yolact_d2.modeling.postprocessing`) on the paper's
workload: one image's decoded boxes and class scores for every anchor of YOLACT-550 (19248 anchors, 80
classes), with enough candidates per class that ``top_k`` binds. Each variant is timed, and its kept
(anchor, class) pairs are compared with those of standard NMS.

Fast NMS keeps a detection when no better-scored candidate of its class overlaps it by more than the
threshold, suppressed or not; standard NMS only lets kept ones suppress. So on the same candidates (with the
per-class score threshold applied to both: ``second_score_thresh``) and without the ``max_detections`` cut,
Fast NMS keeps a subset of what standard NMS keeps.
"""
from typing import Dict, Optional, Set, Tuple

import numpy as np
import torch

from ..modeling.postprocessing import POSTPROCESSOR_REGISTRY
from .timing import measure, summarize

__all__ = ["NMS_VARIANTS", "nms_workload", "build_nms", "kept_pairs", "agreement", "compare_nms"]

NMS_VARIANTS = ("FastNMS", "CrossClassFastNMS", "StandardNMS")
REFERENCE = "StandardNMS"


def nms_workload(
    num_anchors: int = 19248, num_classes: int = 80, num_objects: int = 30, image_size: int = 550, seed: int = 0,
    device="cpu",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Random boxes clustered around ``num_objects`` objects (so that NMS has overlaps to remove) and class
    scores: the softmax over ``num_classes`` + 1 (background) of N(0, 2) logits, foreground kept. About 4% of
    the anchors score >= 0.05 in each class: ~800 candidates per class for 19248 anchors, so top_k 200 binds.

    Returns:
        boxes (R, 4) XYXY in pixels and scores (R, C).
    """
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.1, 0.9, (num_objects, 2)) * image_size
    sizes = rng.uniform(0.05, 0.5, (num_objects, 2)) * image_size
    owner = rng.integers(0, num_objects, num_anchors)
    center = centers[owner] + rng.normal(0, 0.1, (num_anchors, 2)) * sizes[owner]
    size = sizes[owner] * rng.uniform(0.7, 1.3, (num_anchors, 2))
    boxes = np.clip(np.concatenate([center - size / 2, center + size / 2], axis=1), 0, image_size)
    logits = torch.from_numpy(rng.normal(0, 2, (num_anchors, num_classes + 1)))
    scores = logits.softmax(dim=1)[:, :-1]
    return torch.from_numpy(boxes).float().to(device), scores.float().to(device)


def build_nms(name: str, *, nms_thresh=0.5, top_k=200, score_thresh=0.05, second_score_thresh=False,
              max_detections=100):
    """The post-processor ``name`` of ``POSTPROCESSOR_REGISTRY`` with these settings (the paper's by default)."""
    return POSTPROCESSOR_REGISTRY.get(name)(
        nms_thresh=nms_thresh, top_k=top_k, score_thresh=score_thresh, second_score_thresh=second_score_thresh,
        max_detections=max_detections,
    )


def kept_pairs(postprocessor, boxes: torch.Tensor, scores: torch.Tensor) -> Set[Tuple[int, int]]:
    """The (anchor, class) pairs ``postprocessor`` keeps."""
    idx, classes, _ = postprocessor(boxes, scores)
    return set(zip(idx.tolist(), classes.tolist()))


def agreement(kept: Set, reference: Set) -> Dict:
    """How far ``kept`` agrees with ``reference``: counts, the common pairs, and their share of each set."""
    common = len(kept & reference)
    return {
        "kept": len(kept),
        "reference_kept": len(reference),
        "common": common,
        "precision": common / len(kept) if kept else 1.0,  # share of the kept pairs that the reference keeps
        "recall": common / len(reference) if reference else 1.0,  # share of the reference's pairs kept
    }


def compare_nms(*, warmup: int, iters: int, device, workload: Optional[Dict] = None, **settings) -> Dict:
    """
    Time each of :data:`NMS_VARIANTS` on :func:`nms_workload` (``workload`` are its arguments) and compare its
    kept pairs with standard NMS's. ``settings`` go to :func:`build_nms`.

    Returns:
        dict: ``workload`` (anchors, classes, settings, min / median candidates per class) and ``rows``: per
        variant ``name``, ``median_ms``, ``p90_ms``, ``mean_ms`` and :func:`agreement` with standard NMS.
    """
    boxes, scores = nms_workload(device=device, **(workload or {}))
    variants = {name: build_nms(name, **settings) for name in NMS_VARIANTS}
    reference = kept_pairs(variants[REFERENCE], boxes, scores)
    rows = []
    with torch.inference_mode():
        for name, postprocessor in variants.items():
            seconds = measure(lambda p=postprocessor: p(boxes, scores), warmup=warmup, iters=iters, device=device)
            rows.append({"name": name, **summarize(seconds.seconds),
                         **agreement(kept_pairs(postprocessor, boxes, scores), reference)})
    reference_nms = variants[REFERENCE]
    candidates = (scores >= reference_nms.score_thresh).sum(dim=0).float()
    return {
        "workload": {
            "anchors": scores.shape[0],
            "classes": scores.shape[1],
            "nms_thresh": reference_nms.nms_thresh,
            "top_k": reference_nms.top_k,
            "score_thresh": reference_nms.score_thresh,
            "second_score_thresh": reference_nms.second_score_thresh,
            "max_detections": reference_nms.max_detections,
            "min_candidates_per_class": int(candidates.min()),
            "median_candidates_per_class": float(candidates.median()),
        },
        "rows": rows,
    }
