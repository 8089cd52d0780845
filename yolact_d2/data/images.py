"""Reading photographs as the model takes them: 3 channels, 8 bits, upright."""
import numpy as np
from PIL import Image, ImageOps

from detectron2.utils.file_io import PathManager

__all__ = ["read_image", "to_three_channels", "UnusableImageError"]

# PIL modes of 16- and 32-bit integer gray images (16-bit PNG, TIFF).
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# PIL modes passed to :func:`to_three_channels` as they are ("F", float, is refused there); other modes (palette,
# CMYK, 1-bit...) are converted to RGB(A) by PIL.
_ARRAY_MODES = ("L", "LA", "RGB", "RGBA", "F") + _WIDE_GRAY_MODES
FORMATS = ("BGR", "RGB")


class UnusableImageError(ValueError):
    """An image file that can be read but holds pixels the model cannot take (e.g. a float TIFF)."""


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """
    An image array as the model takes it: (H, W, 3) uint8, channels in their order.

    * (H, W) and (H, W, 1) gray are replicated to 3 channels, (H, W, 2) gray + alpha likewise;
    * (H, W, 4) loses its alpha (the 4th channel);
    * 16-bit values (uint16, or signed integers from 0 to 65535) are scaled to 8 bits (the top 8 bits), as OpenCV reads
      16-bit files; uint8 is kept.

    Raises:
        ValueError: for an empty image, another channel count, a float or another integer type, naming them.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or 0 in image.shape[:2]:
        raise ValueError(
            f"An image must be (H, W) or (H, W, C) with H, W > 0 and 1 (gray), 2 (gray, alpha), 3 or 4 (color, "
            f"alpha) channels; got shape {image.shape}"
        )
    image = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    sixteen_bits = image.dtype.kind == "u" and image.dtype.itemsize == 2
    if sixteen_bits or (image.dtype.kind == "i" and image.min() >= 0 and image.max() <= 65535):
        return (image >> 8).astype(np.uint8)
    raise ValueError(f"An image must be 8- or 16-bit integers (uint8 or uint16); got {image.dtype}")


def read_image(file_name: str, format: str = "BGR") -> np.ndarray:  # pylint: disable=redefined-builtin
    """
    Read an image file as (H, W, 3) uint8 in ``format`` ("BGR" or "RGB", ``INPUT.FORMAT``): turned upright by its
    EXIF orientation (as detectron2's ``read_image``), then by :func:`to_three_channels` (gray replicated, alpha
    dropped, 16 bits scaled to 8; detectron2's ``read_image`` saturates 16-bit gray to 255). Palette, CMYK and
    other modes are converted to RGB by PIL.

    Raises:
        OSError: naming the file, when it is missing or not an image PIL can read.
        UnusableImageError: (a ValueError) for an image :func:`to_three_channels` refuses (e.g. float TIFF),
            naming the file.
    """
    if format not in FORMATS:
        raise ValueError(f"Images are read in one of {FORMATS} (INPUT.FORMAT); got {format!r}")
    try:
        with PathManager.open(file_name, "rb") as f:
            image = ImageOps.exif_transpose(Image.open(f))
            image.load()
    except OSError as e:
        raise OSError(f"Cannot read image {file_name}: {e}") from e
    if image.mode not in _ARRAY_MODES:
        image = image.convert("RGBA" if "transparency" in image.info or "A" in image.mode else "RGB")
    try:
        rgb = to_three_channels(np.asarray(image))
    except ValueError as e:
        raise UnusableImageError(f"Cannot use image {file_name} (PIL mode {image.mode}): {e}") from e
    return rgb[:, :, ::-1].copy() if format == "BGR" else rgb
