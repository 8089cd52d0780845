"""YOLACT's anchors (priors) and their SSD box coding."""
import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling.box_regression import Box2BoxTransform

__all__ = ["YolactAnchorGenerator", "build_box2box_transform"]


class YolactAnchorGenerator(nn.Module):
    """
    Anchors of every pyramid level, as YOLACT lays them out. For a level of Hl x Wl cells on an input of
    H x W pixels, cell (row i, column j) has its centre at ((j + 0.5) / Wl * W, (i + 0.5) / Hl * H), and
    for each size s of the level, then each aspect ratio ar (= w / h), an anchor of width s * sqrt(ar) and
    height s / sqrt(ar) pixels (height = width with ``square``, the v1 behaviour).

    Anchors are ordered by level, row, column, size, aspect ratio, the order of the head's outputs, and
    cached per (feature sizes, image size, device, dtype), except while torch.export or torch.compile trace.

    :meth:`forward` gives them in pixels, for box coding; :meth:`relative` gives the same anchors in the
    original's frame and rounding, for matching.
    """

    @configurable
    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float], square: bool = False):
        """
        Args:
            sizes: per level, the anchor sizes in input pixels (the same count on every level).
            aspect_ratios: w / h, shared by every level.
            square: height = width whatever the ratio (the original v1 code's behaviour).
        """
        super().__init__()
        self.sizes = [list(map(float, s)) for s in sizes]
        self.aspect_ratios = list(map(float, aspect_ratios))
        self.square = square
        if len({len(s) for s in self.sizes}) != 1:
            raise ValueError(f"Every level needs the same number of anchor sizes; got {self.sizes}")
        self._cache: Dict[tuple, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg):
        acfg = cfg.MODEL.YOLACT.ANCHOR
        ratios = acfg.ASPECT_RATIOS
        if len(ratios) != 1:
            raise ValueError(f"MODEL.YOLACT.ANCHOR.ASPECT_RATIOS must hold one list for all levels; got {ratios}")
        if len(acfg.SIZES) != len(cfg.MODEL.YOLACT.IN_FEATURES):
            raise ValueError(
                f"MODEL.YOLACT.ANCHOR.SIZES has {len(acfg.SIZES)} levels but MODEL.YOLACT.IN_FEATURES has "
                f"{len(cfg.MODEL.YOLACT.IN_FEATURES)}"
            )
        return {"sizes": acfg.SIZES, "aspect_ratios": ratios[0], "square": acfg.SQUARE}

    @property
    def num_anchors(self) -> int:
        """Anchors per location."""
        return len(self.sizes[0]) * len(self.aspect_ratios)

    def _cell_shapes(self, level: int) -> List[Tuple[float, float]]:
        """(width, height) in pixels of the anchors of one cell, in size-then-ratio order."""
        shapes = []
        for size in self.sizes[level]:
            for ar in self.aspect_ratios:
                w = size * math.sqrt(ar)
                shapes.append((w, w if self.square else size / math.sqrt(ar)))
        return shapes

    def _level_anchors(self, level, grid, image_size, device, dtype) -> torch.Tensor:
        (hl, wl), (h, w) = grid, image_size
        cy = (torch.arange(hl, device=device, dtype=dtype) + 0.5) * (h / hl)
        cx = (torch.arange(wl, device=device, dtype=dtype) + 0.5) * (w / wl)
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)  # (Hl * Wl, 1, 2)
        half = torch.tensor(self._cell_shapes(level), device=device, dtype=dtype)[None] / 2  # (1, A, 2)
        return torch.cat([centres - half, centres + half], -1).reshape(-1, 4)

    def _relative_level_anchors(self, level, grid, image_size, device) -> torch.Tensor:
        """
        One level's anchors as the original's ``make_priors`` and ``point_form`` build them: centre and size
        as fractions of the input in double precision, rounded to float32, then centre -/+ size / 2 in float32
        (on the CPU: not every device has float64).
        """
        (hl, wl), (h, w) = grid, image_size
        cy = (torch.arange(hl, dtype=torch.float64) + 0.5) / hl
        cx = (torch.arange(wl, dtype=torch.float64) + 0.5) / wl
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2).float()  # (Hl * Wl, 1, 2)
        sizes = torch.tensor([(aw / w, ah / h) for aw, ah in self._cell_shapes(level)], dtype=torch.float64)
        half = sizes.float()[None] / 2  # (1, A, 2)
        return torch.cat([centres - half, centres + half], -1).reshape(-1, 4).to(device)

    def _cached(self, key: tuple, build) -> torch.Tensor:
        """``build()``, cached under ``key`` except while torch.export / torch.compile trace (fake tensors)."""
        if key in self._cache:
            return self._cache[key]
        anchors = build()
        if not torch.compiler.is_compiling():
            self._cache[key] = anchors
        return anchors

    def _check_levels(self, grid_sizes) -> None:
        if len(grid_sizes) != len(self.sizes):
            raise ValueError(f"Got {len(grid_sizes)} feature maps for {len(self.sizes)} anchor levels")

    def forward(self, grid_sizes: List[Tuple[int, int]], image_size: Tuple[int, int], device=None,
                dtype=torch.float32) -> torch.Tensor:
        """
        Args:
            grid_sizes: (Hl, Wl) of each level's feature map.
            image_size: (H, W) of the network input in pixels.
        Returns:
            anchors (R, 4), XYXY in input pixels, R = sum_l Hl * Wl * A.
        """
        self._check_levels(grid_sizes)
        key = (tuple(map(tuple, grid_sizes)), tuple(image_size), str(device), dtype)
        return self._cached(key, lambda: torch.cat(
            [self._level_anchors(i, g, image_size, device, dtype) for i, g in enumerate(grid_sizes)]
        ))

    def relative(self, grid_sizes: List[Tuple[int, int]], image_size: Tuple[int, int], device=None) -> torch.Tensor:
        """
        The anchors of :meth:`forward`, in the same order, as the original computes them for matching: XYXY
        as fractions of the input's width and height, float32, built from centre and size (the original's
        ``make_priors`` with pixel scales, then ``point_form``). Dividing the pixel anchors by the input size
        instead rounds differently, which breaks the anchors' exact IoU ties otherwise than the original.

        Args:
            grid_sizes: (Hl, Wl) of each level's feature map.
            image_size: (H, W) of the network input in pixels.
        Returns:
            anchors (R, 4) float32, XYXY relative to the input (pixels / (W, H, W, H)), R = sum_l Hl * Wl * A.
        """
        self._check_levels(grid_sizes)
        key = ("relative", tuple(map(tuple, grid_sizes)), tuple(image_size), str(device))
        return self._cached(key, lambda: torch.cat(
            [self._relative_level_anchors(i, g, image_size, device) for i, g in enumerate(grid_sizes)]
        ))


def build_box2box_transform(cfg) -> Box2BoxTransform:
    """
    SSD box coding (variances 0.1 for centres, 0.2 for sizes), which is detectron2's Box2BoxTransform with
    weights (10, 10, 5, 5): dx = (gx - ax) / (0.1 aw), dw = log(gw / aw) / 0.2.
    """
    return Box2BoxTransform(weights=tuple(cfg.MODEL.YOLACT.BBOX_REG_WEIGHTS))
