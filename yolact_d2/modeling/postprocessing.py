"""
YOLACT's inference post-processing: NMS variants (POSTPROCESSOR_REGISTRY) and the windowed resize of the
masks to the output image. (Mask assembly and cropping, shared with the loss, are in :mod:`.masks`.)

Coordinates: boxes are XYXY in pixels of the network input.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms

from detectron2.config import configurable
from detectron2.utils.registry import Registry

from ..layers import is_tracing

__all__ = [
    "POSTPROCESSOR_REGISTRY",
    "YolactPostprocessor",
    "FastNMS",
    "CrossClassFastNMS",
    "StandardNMS",
    "build_postprocessor",
    "masks_to_image",
]

POSTPROCESSOR_REGISTRY = Registry("YOLACT_POSTPROCESSOR")
POSTPROCESSOR_REGISTRY.__doc__ = """
Registry for YOLACT's detection post-processors (NMS variants), selected by
``MODEL.YOLACT.POSTPROCESS.NAME``; called as ``obj(cfg)``. A post-processor maps one image's decoded boxes
(R, 4) and foreground scores (R, C) to the kept (anchor indices, classes, scores), best first. A class
that traces correctly for every input sets ``exportable = True`` in its body (see :class:`YolactPostprocessor`).
"""


def _per_class_top_k(scores: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    scores (R, C) -> (indices (C, K), scores (C, K)): each class's K = min(top_k, R) best anchors, best first.
    A partial top-k selection; a full sort while tracing or exporting, where K must follow R at run time.
    """
    scores = scores.t()
    if is_tracing():
        sorted_scores, idx = scores.sort(dim=1, descending=True)
        return idx[:, :top_k], sorted_scores[:, :top_k]
    top_scores, idx = scores.topk(min(top_k, scores.shape[1]), dim=1)
    return idx, top_scores


def _suppressed(boxes: torch.Tensor, nms_thresh: float, chunk_size: Optional[int] = None) -> torch.Tensor:
    """
    Fast NMS's rule on score-sorted boxes (..., K, 4), XYXY: box j is suppressed when a better box i < j of the
    same leading index overlaps it by IoU > ``nms_thresh``; returns bool (..., K).

    IoU > t is evaluated without a division, as inter * (1 + t) > t * (area_i + area_j) (degenerate boxes never
    overlap), in place where possible, over ``chunk_size`` leading indices at a time so that the (chunk, K, K)
    intermediates stay in a CPU's cache (default: 4 on a CPU, all at once on a GPU). Well defined (and
    traceable) for K = 0 as well.
    """
    lead, k = boxes.shape[:-2], boxes.shape[-2]
    flat = boxes.reshape(math.prod(lead), k, 4)
    if chunk_size is None:
        chunk_size = 4 if boxes.device.type == "cpu" else max(1, flat.shape[0])
    parts = [_suppressed_chunk(part, nms_thresh) for part in flat.split(chunk_size)]
    suppressed = torch.cat(parts) if parts else flat.new_zeros((0, k), dtype=torch.bool)
    return suppressed.reshape(*lead, k)


def _suppressed_chunk(boxes: torch.Tensor, nms_thresh: float) -> torch.Tensor:
    """:func:`_suppressed` for boxes (N, K, 4) at once."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    # inter * (1 + t) > t * (area_i + area_j)  <=>  inter > share_i + share_j
    share = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0) * (nms_thresh / (1 + nms_thresh))
    iw = torch.minimum(x2[:, :, None], x2[:, None, :]).sub_(torch.maximum(x1[:, :, None], x1[:, None, :]))
    ih = torch.minimum(y2[:, :, None], y2[:, None, :]).sub_(torch.maximum(y1[:, :, None], y1[:, None, :]))
    inter = iw.clamp_(min=0).mul_(ih)  # negative where the boxes are apart vertically
    overlaps = inter > share[:, :, None] + share[:, None, :]
    return overlaps.triu_(diagonal=1).any(dim=1)


class YolactPostprocessor(nn.Module):
    """
    Base of the NMS variants: drops anchors whose best foreground score is below ``score_thresh``, runs
    :meth:`nms` on the rest, and keeps the ``max_detections`` best detections.

    ``exportable``: whether a trace of the class's inference is correct for every input (no Python control
    flow on tensor values while tracing, whatever the number of candidates and detections), so that
    ``yolact_d2.export`` may record it. Each class states it for itself (:meth:`is_exportable`).
    """

    exportable: bool = False

    @classmethod
    def is_exportable(cls) -> bool:
        """Whether this very class sets ``exportable = True``; subclasses do not inherit it (they may change the
        traced code)."""
        return bool(vars(cls).get("exportable", False))

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
        """
        boxes (R, 4), scores (R, C) -> (indices into R (D,), classes (D,), scores (D,)), any order: the kept
        detections, or any subset of them that holds the ``max_detections`` best.
        """
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
        if is_tracing() or len(candidates) < len(scores):
            boxes, scores = boxes[candidates], scores[candidates]  # else: no copy of the (R, C) scores
        idx, classes, det_scores = self.nms(boxes, scores)
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

    A candidate's fate depends only on the better candidates of its class, so (outside tracing) the rule is
    first applied to the best candidates only: those scoring at least the score of the ``4 * max_detections``-th
    best (C, K) entry, as the leading ranks of the classes that have any. When at least ``max_detections`` of
    them are kept, nothing below can enter the result; otherwise four times as many are taken, up to all of them.
    The result is Fast NMS's, at a fraction of its (C, K, K) work.
    """

    exportable = True

    def nms(self, boxes, scores):
        idx, cls_scores = _per_class_top_k(scores, self.top_k)  # (C, K)
        classes = torch.arange(idx.shape[0], device=idx.device)
        if is_tracing() or cls_scores.numel() == 0:
            return self._kept(boxes, idx, cls_scores, classes)
        flat = cls_scores.flatten()
        num = max(1, 4 * self.max_detections)
        while True:
            bound = flat.topk(min(num, flat.numel())).values[-1]
            lengths = (cls_scores >= bound).sum(dim=1)  # each row is sorted: a prefix of each class
            active = lengths.nonzero().squeeze(1)
            k = int(lengths.max())
            idx_a, scores_a = idx[active, :k], cls_scores[active, :k]
            kept_idx, kept_classes, kept_scores = self._kept(boxes, idx_a, scores_a, active)
            if (
                num >= flat.numel()
                or int((kept_scores >= bound).sum()) >= self.max_detections
                or (self.second_score_thresh and bound < self.score_thresh)
            ):
                return kept_idx, kept_classes, kept_scores
            num *= 4

    def _kept(self, boxes: torch.Tensor, idx: torch.Tensor, cls_scores: torch.Tensor, classes: torch.Tensor):
        """
        Fast NMS on the leading ranks of some classes: anchor indices and scores (N, K), each row a class's
        best anchors in decreasing score, ``classes`` (N,) their classes. Returns the kept (indices, classes,
        scores).
        """
        keep = ~_suppressed(boxes[idx], self.nms_thresh)
        if self.second_score_thresh:
            keep &= cls_scores >= self.score_thresh
        return idx[keep], classes[:, None].expand_as(idx)[keep], cls_scores[keep]


@POSTPROCESSOR_REGISTRY.register()
class CrossClassFastNMS(YolactPostprocessor):
    """
    Fast NMS across classes: each anchor takes its best class, the ``top_k`` best anchors suppress each other
    with the same upper-triangle rule whatever their classes.
    """

    exportable = True

    def nms(self, boxes, scores):
        best_scores, classes = scores.max(dim=1)
        best_scores, order = best_scores.sort(descending=True)
        order, best_scores = order[: self.top_k], best_scores[: self.top_k]
        cand = boxes[order]
        keep = ~_suppressed(cand, self.nms_thresh)
        return order[keep], classes[order[keep]], best_scores[keep]


@POSTPROCESSOR_REGISTRY.register()
class StandardNMS(YolactPostprocessor):
    """
    Per-class sequential NMS (torchvision's ``nms``) on each class's ``top_k`` anchors scoring at least
    ``score_thresh`` in that class: the usual rule, for comparison with Fast NMS.
    """

    exportable = True

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


def masks_to_image(
    masks: torch.Tensor, region: Tuple[int, int], input_size: Tuple[int, int], output_size: Tuple[int, int],
    threshold: float, chunk_size: int = 16,
) -> torch.Tensor:
    """
    Bring soft masks that cover the whole network input to the output image and binarise them: the result of
    a bilinear resize (half-pixel centres, as ``F.interpolate(..., align_corners=False)``) then ``> threshold``,
    computed only in each mask's window: the output pixels whose bilinear taps reach its non-zero values.
    Elsewhere the resized mask is 0, so for ``threshold >= 0`` the rest of the output is False; a mask cropped
    by its box thus costs its box's area, not the image's. Masks are taken by ``chunk_size`` in order of
    window area; each chunk is resized in windows of its largest window's size.

    Args:
        masks: (D, Hp, Wp) probabilities on the network input (of size ``input_size`` = (S_h, S_w)).
        region: (h, w), the top-left part of the input the image occupies (the rest is padding).
        output_size: (H, W) of the output image, which maps onto ``region``.
    Returns:
        bool (D, H, W).
    """
    if threshold < 0:
        raise ValueError(f"masks_to_image needs a mask threshold >= 0, got {threshold}")
    out_h, out_w = output_size
    num_masks, in_h, in_w = masks.shape
    result = torch.zeros((num_masks, out_h, out_w), dtype=torch.bool, device=masks.device)
    if num_masks == 0:
        return result
    # The resize maps the whole input onto ``full``, of which the output is the top-left (H, W) part.
    scale_h = in_h / round(out_h * input_size[0] / region[0])
    scale_w = in_w / round(out_w * input_size[1] / region[1])
    row_start, row_len = _output_window(masks.amax(dim=2) > 0, scale_h, out_h)
    col_start, col_len = _output_window(masks.amax(dim=1) > 0, scale_w, out_w)
    order = (row_len * col_len).argsort()
    for idx in order.split(chunk_size):
        win_h, win_w = int(row_len[idx].max()), int(col_len[idx].max())
        if win_h == 0 or win_w == 0:
            continue
        top = row_start[idx].clamp(max=out_h - win_h)
        left = col_start[idx].clamp(max=out_w - win_w)
        rows = top[:, None] + torch.arange(win_h, device=masks.device)
        cols = left[:, None] + torch.arange(win_w, device=masks.device)
        windows = _resize_windows(masks[idx], rows, cols, scale_h, scale_w) > threshold
        # One slice copy per mask: on a CPU, an index_put_ of all the windows at once is much slower.
        for i, y, x, window in zip(idx.tolist(), top.tolist(), left.tolist(), windows):
            result[i, y : y + win_h, x : x + win_w] = window
    return result


def _output_window(support: torch.Tensor, scale: float, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Along one axis, the output pixels whose bilinear taps can reach a non-zero input pixel.

    Args:
        support: bool (D, N_in), the input pixels where each mask is non-zero.
        scale: input pixels per output pixel.
    Returns:
        start (D,) and length (D,) int64 of each mask's output window within [0, out_size); length 0 for a
        mask with no support there.
    """
    n_in = support.shape[1]
    first = support.to(torch.uint8).argmax(dim=1).to(torch.float64)
    last = (n_in - 1 - support.flip(1).to(torch.uint8).argmax(dim=1)).to(torch.float64)
    # Output x samples input x_in = (x + 0.5) * scale - 0.5 from floor(x_in) and floor(x_in) + 1: it reaches
    # [first, last] exactly when first - 1 < x_in < last + 1. One pixel of margin on each side.
    start = ((first - 0.5) / scale - 0.5).floor().clamp(min=0)
    end = ((last + 1.5) / scale - 0.5).ceil().clamp(max=out_size - 1)
    length = (end - start + 1).clamp(min=0) * support.any(dim=1)
    return start.long(), length.long()


def _interpolation_matrix(dst: torch.Tensor, scale: float, in_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    PyTorch's bilinear interpolation (``align_corners=False``) along one axis, for output pixels ``dst``
    (N, n) int64 (increasing along n), restricted to the smallest block of consecutive input pixels that all
    rows' taps fit in.

    Returns:
        the blocks' first input pixel (N,) and the interpolation weights (N, n, block): output pixel
        ``dst[i, j]`` is ``weights[i, j] @ input[first[i] : first[i] + block]``.
    """
    src = ((dst.to(torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.long()
    w1 = src - i0
    # The block is measured on the taps themselves: a bound from ``scale`` alone can miss by one when the
    # float32 source coordinates round across an integer.
    block = min(in_size, int((i0[:, -1] - i0[:, 0]).max()) + 2)
    first = i0[:, 0].clamp(max=in_size - block)
    i0 = i0 - first[:, None]
    i1 = (i0 + 1).clamp(max=in_size - 1 - first[:, None])
    weights = src.new_zeros((*dst.shape, block))
    weights.scatter_add_(2, i0[:, :, None], (1 - w1)[:, :, None])
    weights.scatter_add_(2, i1[:, :, None], w1[:, :, None])
    return first, weights


def _resize_windows(masks: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, scale_h: float, scale_w: float):
    """
    The bilinear resize of masks (N, Hp, Wp) at output rows (N, h) and columns (N, w) of each (consecutive
    pixels): returns (N, h, w). Two small batched matrix products on the block of input each window reaches.
    """
    n, in_h, in_w = masks.shape
    row0, row_weights = _interpolation_matrix(rows, scale_h, in_h)
    col0, col_weights = _interpolation_matrix(cols, scale_w, in_w)
    block_rows = row0[:, None] + torch.arange(row_weights.shape[2], device=masks.device)
    block_cols = col0[:, None] + torch.arange(col_weights.shape[2], device=masks.device)
    blocks = masks[torch.arange(n, device=masks.device)[:, None, None], block_rows[:, :, None], block_cols[:, None, :]]
    return row_weights @ blocks @ col_weights.transpose(1, 2)
