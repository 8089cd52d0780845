"""
Box and mask operations shared by training (the loss) and inference (post-processing): pairwise box IoU,
YOLACT's mask assembly P C^T, and the box crop of masks.

Coordinates: boxes are XYXY in pixels of the frame they are given in; on a grid, pixel (r, c) covers
[c, c + 1) x [r, r + 1).
"""
from typing import Tuple

import torch

__all__ = ["batched_box_iou", "assemble_mask_logits", "box_crop_masks"]


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
