"""
The training augmentations of YOLACT (the SSD augmentation of the original ``utils/augmentations.py``) as
detectron2 :class:`Augmentation` s and :class:`Transform` s, plus the resize to the square network input.

Conventions: images are (H, W, 3) uint8 arrays in the dataset's format ("BGR" or "RGB"); boxes are (N, 4)
float arrays, XYXY in absolute pixels; segmentations are (H, W) uint8 arrays, padded with 0.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from detectron2.data import transforms as T
from detectron2.structures import Boxes, pairwise_iou

from ..layers import input_region

__all__ = [
    "ColorPadTransform",
    "PhotometricTransform",
    "PhotometricDistort",
    "BilinearResizeTransform",
    "HFlipCopyTransform",
    "RandomExpand",
    "RandomFlip",
    "RandomSampleCrop",
    "ResizeToSquare",
    "TransposeTransform",
    "box_centres_inside",
]

# OpenCV colour conversions to and from HSV, per image format.
_HSV_CONVERSIONS = {
    "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
    "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
}


def box_centres_inside(boxes: np.ndarray, rect: Sequence[float]) -> np.ndarray:
    """
    The SSD crop rule: whether each box centre lies strictly inside a rectangle.

    Args:
        boxes: (N, 4) XYXY boxes.
        rect: (x0, y0, x1, y1).

    Returns:
        (N,) bool array.
    """
    rect = np.asarray(rect)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return np.all((centres > rect[:2]) & (centres < rect[2:]), axis=1)


class ColorPadTransform(T.PadTransform):
    """
    :class:`PadTransform` filling the image with a colour (one value per channel, e.g. the pixel mean) rather
    than a scalar. Segmentations are padded with ``seg_pad_value``.
    """

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        canvas = np.empty((self.y0 + h + self.y1, self.x0 + w + self.x1) + img.shape[2:], dtype=img.dtype)
        canvas[...] = self.pad_value
        canvas[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = img
        return canvas


class PhotometricTransform(T.Transform):
    """
    Colour distortion that leaves the geometry (coordinates, segmentations) unchanged. The image is computed in
    float: ``brightness`` is added, then it is multiplied by ``contrast`` before (``contrast_first``) or after
    the HSV changes, which multiply the saturation by ``saturation`` and add ``hue`` degrees to the hue
    (modulo 360). The result is rounded and clipped to uint8.
    """

    def __init__(
        self,
        image_format: str,
        brightness: float = 0.0,
        contrast: float = 1.0,
        contrast_first: bool = True,
        saturation: float = 1.0,
        hue: float = 0.0,
    ):
        """
        Args:
            image_format: "BGR" or "RGB", the channel order of the images.
        """
        super().__init__()
        if image_format not in _HSV_CONVERSIONS:
            raise ValueError(f"Photometric distortion needs a BGR or RGB image; got format {image_format}")
        self.image_format, self.brightness, self.contrast = image_format, brightness, contrast
        self.contrast_first, self.saturation, self.hue = contrast_first, saturation, hue

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        img = img.astype(np.float32) + self.brightness
        if self.contrast_first:
            img *= self.contrast
        if self.saturation != 1.0 or self.hue != 0.0:
            to_hsv, from_hsv = _HSV_CONVERSIONS[self.image_format]
            # OpenCV's float conversion gives H in [0, 360) and S in [0, 1] for non-negative inputs.
            hsv = cv2.cvtColor(np.clip(img, 0, 255), to_hsv)
            hsv[..., 1] *= self.saturation
            hsv[..., 0] = (hsv[..., 0] + self.hue) % 360
            img = cv2.cvtColor(hsv, from_hsv)
        if not self.contrast_first:
            img *= self.contrast
        return np.clip(img.round(), 0, 255).astype(np.uint8)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class PhotometricDistort(T.Augmentation):
    """
    YOLACT's ``PhotometricDistort``: random brightness, contrast, saturation and hue changes, each applied with
    probability 0.5 and drawn uniformly from its range; the contrast change comes before or after the HSV ones
    with equal probability. (The original's random channel swap is disabled there, and here.)
    """

    def __init__(
        self,
        image_format: str,
        brightness_delta: float = 32.0,
        contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
    ):
        """
        Args:
            image_format: "BGR" or "RGB".
            brightness_delta: brightness offsets are drawn from [-delta, delta] (pixel values).
            contrast_range, saturation_range: ranges of the multipliers.
            hue_delta: hue offsets are drawn from [-delta, delta] (degrees).
        """
        super().__init__()
        self.image_format, self.brightness_delta, self.hue_delta = image_format, brightness_delta, hue_delta
        self.contrast_range, self.saturation_range = contrast_range, saturation_range

    def get_transform(self, image: np.ndarray) -> PhotometricTransform:
        return PhotometricTransform(
            self.image_format,
            brightness=self._maybe_uniform(-self.brightness_delta, self.brightness_delta, 0.0),
            contrast=self._maybe_uniform(*self.contrast_range, 1.0),
            contrast_first=bool(np.random.uniform() < 0.5),
            saturation=self._maybe_uniform(*self.saturation_range, 1.0),
            hue=self._maybe_uniform(-self.hue_delta, self.hue_delta, 0.0),
        )

    def _maybe_uniform(self, low: float, high: float, identity: float) -> float:
        """A value drawn uniformly from [low, high) with probability 0.5, else ``identity`` (no change)."""
        return float(np.random.uniform(low, high)) if np.random.uniform() < 0.5 else identity


class RandomExpand(T.Augmentation):
    """
    YOLACT's ``Expand`` (zoom out): with probability ``prob``, place the image at a uniformly random position on
    a canvas ``r`` times as large per side, r ~ U[1, max_ratio], filled with ``pad_value``.
    """

    def __init__(self, max_ratio: float, pad_value: Sequence[float], prob: float = 0.5):
        """
        Args:
            max_ratio: largest ratio of the canvas size to the image size, per side.
            pad_value: colour of the canvas, one value per channel (the pixel mean).
            prob: probability of expanding.
        """
        super().__init__()
        self.max_ratio, self.pad_value, self.prob = max_ratio, pad_value, prob

    def get_transform(self, image: np.ndarray) -> T.Transform:
        if np.random.uniform() >= self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        ratio = np.random.uniform(1.0, self.max_ratio)
        left = int(np.random.uniform(0, w * ratio - w))
        top = int(np.random.uniform(0, h * ratio - h))
        return ColorPadTransform(
            left, top, int(w * ratio) - w - left, int(h * ratio) - h - top, orig_w=w, orig_h=h, pad_value=self.pad_value
        )


class RandomSampleCrop(T.Augmentation):
    """
    SSD's random crop with a minimum IoU constraint (YOLACT's ``RandomSampleCrop``).

    A mode is drawn uniformly from ``min_ious``: ``None`` keeps the whole image; a number m asks for a crop
    whose IoU with every box is at least m (0: no constraint). Up to ``max_trials`` crops are then drawn, each
    side uniform in [min_scale, 1] times the image's, with integer corners; crops whose aspect ratio h / w is out
    of ``aspect_ratio_range`` are rejected. The first crop that satisfies the constraint and contains the centre
    of at least one box is returned; if none does, another mode is drawn.

    The caller drops the instances whose box centre falls outside the crop (see :func:`box_centres_inside`).
    The original checks the IoU constraint with a bug that makes it accept every crop; this applies it.
    """

    def __init__(
        self,
        min_ious: Sequence[Optional[float]] = (None, 0.1, 0.3, 0.7, 0.9, 0.0),
        max_trials: int = 50,
        min_scale: float = 0.3,
        aspect_ratio_range: Tuple[float, float] = (0.5, 2.0),
    ):
        """
        Args:
            min_ious: the modes; include ``None`` so that the search always ends.
            max_trials: crops drawn per mode.
            min_scale: smallest crop side, relative to the image side.
            aspect_ratio_range: allowed range of the crop's height / width.
        """
        super().__init__()
        self.min_ious, self.max_trials, self.min_scale = min_ious, max_trials, min_scale
        self.aspect_ratio_range = aspect_ratio_range

    def get_transform(self, image: np.ndarray, boxes: np.ndarray) -> T.Transform:
        """
        Args:
            image: (H, W, C) array.
            boxes: (N, 4) XYXY boxes of the instances the crop must respect (crowd regions excluded).

        Returns:
            a :class:`CropTransform`, or a :class:`NoOpTransform` when the mode is ``None`` or there is no box.
        """
        if len(boxes) == 0:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        while True:
            min_iou = self.min_ious[np.random.randint(len(self.min_ious))]
            if min_iou is None:
                return T.NoOpTransform()
            for _ in range(self.max_trials):
                crop = self._sample_crop(h, w)
                if crop is not None and self._accepts(crop, boxes, min_iou):
                    x0, y0, x1, y1 = crop
                    return T.CropTransform(x0, y0, x1 - x0, y1 - y0, orig_w=w, orig_h=h)

    def _sample_crop(self, h: int, w: int) -> Optional[Tuple[int, int, int, int]]:
        """A random (x0, y0, x1, y1) integer crop of an h x w image, or None if its aspect ratio is out of range."""
        crop_w = np.random.uniform(self.min_scale * w, w)
        crop_h = np.random.uniform(self.min_scale * h, h)
        low, high = self.aspect_ratio_range
        if not low <= crop_h / crop_w <= high:
            return None
        left = np.random.uniform(0, w - crop_w)
        top = np.random.uniform(0, h - crop_h)
        return int(left), int(top), int(left + crop_w), int(top + crop_h)

    @staticmethod
    def _accepts(crop: Tuple[int, int, int, int], boxes: np.ndarray, min_iou: float) -> bool:
        """
        Whether some box has IoU >= min_iou with the crop (the constraint of Caffe SSD's batch sampler; the
        original YOLACT's check never rejects) and at least one box centre is inside it.
        """
        iou = pairwise_iou(
            Boxes(torch.as_tensor(boxes, dtype=torch.float32)), Boxes(torch.tensor([crop], dtype=torch.float32))
        )
        return bool(iou.max() >= min_iou) and bool(box_centres_inside(boxes, crop).any())


class TransposeTransform(T.Transform):
    """
    Reflection in the main diagonal: pixel (x, y) moves to (y, x), so an (H, W, ...) image becomes (W, H, ...).
    With the horizontal and vertical flips it makes all eight rotations by multiples of 90 degrees and
    reflections. It is its own inverse.
    """

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.swapaxes(img, 0, 1).copy()

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(coords[:, ::-1])

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def inverse(self) -> T.Transform:
        return self


class HFlipCopyTransform(T.HFlipTransform):
    """
    detectron2's horizontal flip, its images and segmentations copied into arrays of their own. detectron2's
    returns a view with a negative stride, which NumPy counts as contiguous along an axis of length 1: for an
    image 1 pixel wide, ``np.ascontiguousarray`` keeps the view, and ``torch.from_numpy`` (in a vertical flip
    after it) refuses it.
    """

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return super().apply_image(img).copy()


class RandomFlip(T.RandomFlip):
    """detectron2's :class:`RandomFlip` with :class:`HFlipCopyTransform` for its horizontal flips."""

    def get_transform(self, image: np.ndarray) -> T.Transform:
        flip = super().get_transform(image)
        return HFlipCopyTransform(flip.width) if isinstance(flip, T.HFlipTransform) else flip


class BilinearResizeTransform(T.Transform):
    """
    The original YOLACT's training resize (``utils/augmentations.py``, ``Resize``): ``cv2.resize``, bilinear
    with half-pixel centres and no antialiasing, of the image computed in float32 and kept unrounded (the
    original's images are float from its first step on), and of each uint8 0/1 segmentation as it is, which
    OpenCV's fixed-point bilinear rounds back to 0/1 (about: 1 where the interpolated value is >= 0.5).
    Coordinates are scaled by new / old size. detectron2's :class:`ResizeTransform` resizes uint8 images with
    PIL, which antialiases when it shrinks, and segmentations with nearest neighbours.
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        """
        Args:
            h, w: size of the input; new_h, new_w: size of the output, in pixels.
        """
        super().__init__()
        self.h, self.w, self.new_h, self.new_w = h, w, new_h, new_w

    def _resize(self, array: np.ndarray) -> np.ndarray:
        if array.shape[:2] != (self.h, self.w):
            raise ValueError(f"BilinearResizeTransform of {self.h} x {self.w} got an array of shape {array.shape}")
        return cv2.resize(array, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (new_h, new_w, C) float32."""
        return self._resize(img.astype(np.float32)).reshape(self.new_h, self.new_w, *img.shape[2:])

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """(H, W) uint8 0/1 -> (new_h, new_w) uint8 0/1."""
        return self._resize(np.ascontiguousarray(segmentation))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords * np.array([self.new_w / self.w, self.new_h / self.h], dtype=coords.dtype)


class ResizeToSquare(T.Augmentation):
    """
    Resize to the square network input of ``size`` x ``size`` pixels as the original does in training
    (:class:`BilinearResizeTransform`). By default the aspect ratio is not kept, as in the paper; with
    ``preserve_aspect_ratio`` the longer side is resized to ``size`` and the image padded at the bottom and right
    with ``pad_value``.
    """

    def __init__(self, size: int, preserve_aspect_ratio: bool = False, pad_value: Sequence[float] = (0, 0, 0)):
        """
        Args:
            size: side of the output, in pixels.
            preserve_aspect_ratio: whether to keep the aspect ratio and pad.
            pad_value: colour of the padding, one value per channel (the pixel mean).
        """
        super().__init__()
        self.size, self.preserve_aspect_ratio, self.pad_value = size, preserve_aspect_ratio, pad_value

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        new_h, new_w = input_region(h, w, self.size, self.preserve_aspect_ratio)
        resize = BilinearResizeTransform(h, w, new_h, new_w)
        if (new_h, new_w) == (self.size, self.size):
            return resize
        pad = ColorPadTransform(
            0, 0, self.size - new_w, self.size - new_h, orig_w=new_w, orig_h=new_h, pad_value=self.pad_value
        )
        return T.TransformList([resize, pad])
