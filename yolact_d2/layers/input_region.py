"""Where an image goes in YOLACT's square network input: one rule for the data pipeline and the model."""
from typing import Tuple

__all__ = ["input_region"]


def input_region(height: int, width: int, input_size: int, preserve_aspect_ratio: bool) -> Tuple[int, int]:
    """
    The (h, w) part of the ``input_size`` x ``input_size`` network input, at its top left, that a
    ``height`` x ``width`` image is resized to: the whole square by default (the paper), or with
    ``preserve_aspect_ratio`` the longer side scaled to ``input_size`` and the shorter by the same factor
    (rounded to the nearest pixel); the rest of the input is padding. (The original's ``preserve_aspect_ratio``,
    off in all its configs, is another rule: a non-square input of about ``input_size`` squared pixels, unpadded.)
    """
    if not preserve_aspect_ratio:
        return input_size, input_size
    scale = input_size / max(height, width)
    return min(input_size, round(height * scale)), min(input_size, round(width * scale))
