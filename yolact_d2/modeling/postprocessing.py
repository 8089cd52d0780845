"""
YOLACT's inference post-processing: NMS variants (POSTPROCESSOR_REGISTRY) and mask assembly / cropping.

Coordinates: boxes are XYXY in pixels of the frame they are given in (network input for NMS; prototype
pixels for cropping, where pixel (r, c) covers [c, c + 1) x [r, r + 1)).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms

from detectron2.config import configurable
from detectron2.utils.registry import Registry

__all__ = [
    "POSTPROCESSOR_REGISTRY",
    "YolactPostprocessor",
    "FastNMS",
    "CrossClassFastNMS",
    "StandardNMS",
    "build_postprocessor",
    "batched_box_iou",
    "assemble_mask_logits",
    "box_crop_masks",
    "masks_to_image",
]

POSTPROCESSOR_REGISTRY = Registry("YOLACT_POSTPROCESSOR")
POSTPROCESSOR_REGISTRY.__doc__ = """
Registry for YOLACT's detection post-processors (NMS variants), selected by
``MODEL.YOLACT.POSTPROCESS.NAME``; called as ``obj(cfg)``. A post-processor maps one image's decoded boxes
(R, 4) and foreground scores (R, C) to the kept (anchor indices, classes, scores), best first.
"""


def batched_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """
    IoU of every box in ``a`` (..., K, 4) with every box in ``b`` (..., M, 4), XYXY: returns (..., K, M).
    Degenerate boxes have IoU 0 with everything. Works coordinate by coordinate on (..., K, M) tensors.
    """
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    area_a = (ax2 - ax1).clamp(min=0) * (ay2 - ay1).clamp(min=0)
    area_b = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)
    iw = torch.minimum(ax2[..., :, None], bx2[..., None, :]) - torch.maximum(ax1[..., :, None], bx1[..., None, :])
    ih = torch.minimum(ay2[..., :, None], by2[..., None, :]) - torch.maximum(ay1[..., :, None], by1[..., None, :])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return inter / union.clamp(min=1e-12)


def _per_class_top_k(scores: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    scores (R, C) -> (indices (C, K), scores (C, K)): each class's K = min(top_k, R) best anchors, best first.
    A partial top-k selection; a full sort while tracing or exporting, where K must follow R at run time.
    """
    scores = scores.t()
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        sorted_scores, idx = scores.sort(dim=1, descending=True)
        return idx[:, :top_k], sorted_scores[:, :top_k]
    top_scores, idx = scores.topk(min(top_k, scores.shape[1]), dim=1)
    return idx, top_scores


def _suppressed(iou: torch.Tensor, nms_thresh: float, dim: int) -> torch.Tensor:
    """
    Fast NMS's rule on a score-sorted IoU matrix (..., K, K): box j is suppressed when a better box i < j overlaps
    it by more than ``nms_thresh``; returns bool (..., K). Well defined (and traceable) for K = 0 as well.
    """
    return (iou.triu(diagonal=1) > nms_thresh).any(dim=dim)


class YolactPostprocessor(nn.Module):
    """
    Base of the NMS variants: drops anchors whose best foreground score is below ``score_thresh``, runs
    :meth:`nms` on the rest, and keeps the ``max_detections`` best detections.
    """

    @configurable
    def __init__(self, *, nms_thresh: float, top_k: int, score_thresh: float, second_score_thresh: bool,
                 max_detections: int):
        super().__init__()
        self.nms_thresh = nms_thresh
        self.top_k = top_k
        self.score_thresh = score_thresh
        self.second_score_thresh = second_score_thresh
        self.max_detections = max_detections

    @classmethod
    def from_config(cls, cfg):
        p = cfg.MODEL.YOLACT.POSTPROCESS
        return {
            "nms_thresh": p.NMS_THRESH,
            "top_k": p.TOP_K,
            "score_thresh": p.SCORE_THRESH,
            "second_score_thresh": p.SECOND_SCORE_THRESH,
            "max_detections": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    def nms(self, boxes: torch.Tensor, scores: torch.Tensor):
        """boxes (R, 4), scores (R, C) -> (indices into R (D,), classes (D,), scores (D,)), any order."""
        raise NotImplementedError(f"{type(self).__name__} must implement nms()")

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor):
        """
        Args:
            boxes: (R, 4) decoded boxes, XYXY.
            scores: (R, C) foreground class probabilities.
        Returns:
            indices (D,) into R, classes (D,) int64, scores (D,), sorted by decreasing score, D <= max_detections.
        """
        candidates = (scores.max(dim=1).values >= self.score_thresh).nonzero().squeeze(1)
        idx, classes, det_scores = self.nms(boxes[candidates], scores[candidates])
        det_scores, order = det_scores.sort(descending=True)
        order = order[: self.max_detections]
        return candidates[idx[order]], classes[order], det_scores[: self.max_detections]


@POSTPROCESSOR_REGISTRY.register()
class FastNMS(YolactPostprocessor):
    """
    YOLACT's Fast NMS: for every class at once, its ``top_k`` best anchors, their pairwise IoU matrix
    (C, K, K) with the diagonal and lower triangle zeroed, and a detection is kept when its column max
    (its largest IoU with a better-scored box of the class) is <= ``nms_thresh``. Unlike standard NMS a box
    that is itself suppressed can still suppress others. No sequential loop.
    """

    def nms(self, boxes, scores):
        idx, cls_scores = _per_class_top_k(scores, self.top_k)  # (C, K)
        classes = torch.arange(idx.shape[0], device=idx.device)[:, None].expand_as(idx)
        cls_boxes = boxes[idx]  # (C, K, 4)
        keep = ~_suppressed(batched_box_iou(cls_boxes, cls_boxes), self.nms_thresh, dim=1)
        if self.second_score_thresh:
            keep &= cls_scores >= self.score_thresh
        return idx[keep], classes[keep], cls_scores[keep]


@POSTPROCESSOR_REGISTRY.register()
class CrossClassFastNMS(YolactPostprocessor):
    """
    Fast NMS across classes: each anchor takes its best class, the ``top_k`` best anchors suppress each other
    with the same upper-triangle rule whatever their classes.
    """

    def nms(self, boxes, scores):
        best_scores, classes = scores.max(dim=1)
        best_scores, order = best_scores.sort(descending=True)
        order, best_scores = order[: self.top_k], best_scores[: self.top_k]
        cand = boxes[order]
        keep = ~_suppressed(batched_box_iou(cand, cand), self.nms_thresh, dim=0)
        return order[keep], classes[order[keep]], best_scores[keep]


@POSTPROCESSOR_REGISTRY.register()
class StandardNMS(YolactPostprocessor):
    """
    Per-class sequential NMS (torchvision's ``nms``) on each class's ``top_k`` anchors scoring at least
    ``score_thresh`` in that class: the usual rule, for comparison with Fast NMS.
    """

    def nms(self, boxes, scores):
        idx, cls_scores = _per_class_top_k(scores, self.top_k)
        classes = torch.arange(idx.shape[0], device=idx.device)[:, None].expand_as(idx)
        valid = cls_scores >= self.score_thresh
        idx, classes, cls_scores = idx[valid], classes[valid], cls_scores[valid]
        keep = _per_class_nms(boxes[idx], cls_scores, classes, self.nms_thresh)
        return idx[keep], classes[keep], cls_scores[keep]


def _per_class_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, nms_thresh: float):
    """
    NMS within each class as one ``nms`` call: each class's boxes are shifted by a multiple of the extent of all
    coordinates, so boxes of different classes never overlap. Unlike torchvision's ``batched_nms`` it has no
    branch on the number of boxes, which torch.export cannot trace. Returns kept indices, by decreasing score.
    """
    coords = torch.cat([boxes.flatten(), boxes.new_zeros(1)])  # never empty
    extent = coords.max() - coords.min() + 1
    return nms(boxes + (classes.to(boxes.dtype) * extent)[:, None], scores, nms_thresh)


def build_postprocessor(cfg) -> nn.Module:
    """Build the post-processor named by ``MODEL.YOLACT.POSTPROCESS.NAME``."""
    return POSTPROCESSOR_REGISTRY.get(cfg.MODEL.YOLACT.POSTPROCESS.NAME)(cfg)


def assemble_mask_logits(prototypes: torch.Tensor, coefs: torch.Tensor) -> torch.Tensor:
    """
    YOLACT's assembly as one matrix product: prototypes (k, H, W), coefficients (D, k) -> mask logits
    (D, H, W) = P C^T; the masks are their sigmoid.
    """
    k, h, w = prototypes.shape
    return (coefs @ prototypes.reshape(k, h * w)).reshape(-1, h, w)


def box_crop_masks(boxes: torch.Tensor, size: Tuple[int, int], padding: float = 1.0) -> torch.Tensor:
    """
    The crop region of each box on an H x W grid, as YOLACT crops: pixel (r, c) is inside when
    x1 - padding <= c < x2 + padding and y1 - padding <= r < y2 + padding (limits clamped to the grid).

    Args:
        boxes: (D, 4) XYXY in grid pixels.
        size: (H, W).
    Returns:
        bool (D, H, W).
    """
    h, w = size
    x1 = (torch.minimum(boxes[:, 0], boxes[:, 2]) - padding).clamp(min=0)
    x2 = (torch.maximum(boxes[:, 0], boxes[:, 2]) + padding).clamp(max=w)
    y1 = (torch.minimum(boxes[:, 1], boxes[:, 3]) - padding).clamp(min=0)
    y2 = (torch.maximum(boxes[:, 1], boxes[:, 3]) + padding).clamp(max=h)
    cols = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
    in_cols = (cols[None] >= x1[:, None]) & (cols[None] < x2[:, None])  # (D, W)
    in_rows = (rows[None] >= y1[:, None]) & (rows[None] < y2[:, None])  # (D, H)
    return in_rows[:, :, None] & in_cols[:, None, :]


def masks_to_image(
    masks: torch.Tensor, region: Tuple[int, int], input_size: Tuple[int, int], output_size: Tuple[int, int],
    threshold: float,
) -> torch.Tensor:
    """
    Bring soft masks that cover the whole network input to the output image and binarise them.

    Args:
        masks: (D, Hp, Wp) probabilities on the network input (of size ``input_size`` = (S_h, S_w)).
        region: (h, w), the top-left part of the input the image occupies (the rest is padding).
        output_size: (H, W) of the output image, which maps onto ``region``.
    Returns:
        bool (D, H, W): bilinear resize (half-pixel centres), then ``> threshold``.
    """
    out_h, out_w = output_size
    if masks.shape[0] == 0:
        return torch.zeros((0, out_h, out_w), dtype=torch.bool, device=masks.device)
    full = (round(out_h * input_size[0] / region[0]), round(out_w * input_size[1] / region[1]))
    resized = F.interpolate(masks[None], size=full, mode="bilinear", align_corners=False)[0]
    return resized[:, :out_h, :out_w] > threshold
