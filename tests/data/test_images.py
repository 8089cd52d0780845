"""read_image and to_three_channels on the photographs users have: gray, alpha, 16-bit, EXIF-rotated, palette."""
import cv2
import numpy as np
import pytest
from PIL import Image

from yolact_d2.data import read_image, to_three_channels

# An RGB test card (H, W) = (30, 40): the top-left quarter orange, the rest dark blue; no symmetry, so any
# rotation or flip of it is told apart.
ORANGE, BLUE = (200, 100, 50), (10, 20, 90)


def _card():
    rgb = np.empty((30, 40, 3), np.uint8)
    rgb[:] = BLUE
    rgb[:15, :20] = ORANGE
    return rgb


def _gray(rgb):
    return rgb[:, :, 0]  # the red channel as the gray level: 200 and 10


def _save_exif_rotated(path, rgb, orientation):
    """A JPEG of ``rgb`` stored sideways, with the EXIF orientation that turns it back (as cameras write)."""
    stored = {6: np.rot90(rgb, 1), 8: np.rot90(rgb, -1), 3: np.rot90(rgb, 2)}[orientation]
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=100, subsampling=0)


def test_an_exif_rotated_jpeg_is_read_upright(tmp_path):
    for orientation in (3, 6, 8):
        path = str(tmp_path / f"exif{orientation}.jpg")
        _save_exif_rotated(path, _card(), orientation)
        image = read_image(path, "RGB")
        assert image.shape == (30, 40, 3), orientation  # the upright frame, whatever the stored one
        np.testing.assert_allclose(image[5, 5], ORANGE, atol=3)
        np.testing.assert_allclose(image[25, 35], BLUE, atol=3)
        np.testing.assert_array_equal(read_image(path, "BGR"), image[:, :, ::-1])


def test_gray_alpha_palette_and_16_bit_files_become_8_bit_three_channels(tmp_path):
    rgb = _card()
    files = {
        "gray.png": (Image.fromarray(_gray(rgb)), np.repeat(_gray(rgb)[:, :, None], 3, axis=2)),
        "gray_alpha.png": (Image.fromarray(np.dstack([_gray(rgb), np.full((30, 40), 9, np.uint8)]), "LA"),
                           np.repeat(_gray(rgb)[:, :, None], 3, axis=2)),
        "rgba.png": (Image.fromarray(np.dstack([rgb, np.full((30, 40), 9, np.uint8)])), rgb),
        "palette.png": (Image.fromarray(rgb).quantize(4), rgb),
    }
    for name, (image, _) in files.items():
        image.save(tmp_path / name)
    # 16 bits: the 8-bit value v stored as v * 257 (so 255 -> 65535), read back as v
    cv2.imwrite(str(tmp_path / "gray16.png"), _gray(rgb).astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)
    files["gray16.png"] = (None, np.repeat(_gray(rgb)[:, :, None], 3, axis=2))
    files["rgb16.png"] = (None, rgb)
    for name, (_, expected) in files.items():
        image = read_image(str(tmp_path / name), "RGB")
        assert image.dtype == np.uint8 and image.shape == (30, 40, 3), name
        np.testing.assert_array_equal(image, expected, err_msg=name)


def test_unreadable_files_are_named(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(OSError, match=f"Cannot read image {broken}"):
        read_image(str(broken))
    with pytest.raises(OSError, match="Cannot read image .*missing.png"):
        read_image(str(tmp_path / "missing.png"))
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"Cannot use image .*float\.tif \(PIL mode F\).*float32"):
        read_image(str(tmp_path / "float.tif"))
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        read_image(str(broken), "YUV-BT.601")


def test_to_three_channels_values():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for array in (gray, gray[:, :, None], np.dstack([gray, 255 - gray])):
        out = to_three_channels(array)
        assert out.shape == (3, 4, 3) and out.dtype == np.uint8
        assert all((out[:, :, c] == gray).all() for c in range(3))
    bgra = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_three_channels(bgra), bgra[:, :, :3])
    wide = np.array([[0, 255, 256, 65535]], np.uint16)
    np.testing.assert_array_equal(to_three_channels(wide)[0, :, 0], [0, 0, 1, 255])
    np.testing.assert_array_equal(to_three_channels(wide.astype(np.int32))[0, :, 0], [0, 0, 1, 255])


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 5, 3), np.uint8), r"H, W > 0.*\(0, 5, 3\)"),
        (np.zeros((4, 5, 5), np.uint8), r"channels; got shape \(4, 5, 5\)"),
        (np.zeros((2, 4, 5, 3), np.uint8), r"got shape \(2, 4, 5, 3\)"),
        (np.zeros((4, 5, 3), np.float32), "8- or 16-bit integers.*float32"),
        (np.full((4, 5), 70000, np.int32), "8- or 16-bit integers.*int32"),
    ],
)
def test_to_three_channels_refuses_what_is_not_an_image(array, message):
    with pytest.raises(ValueError, match=message):
        to_three_channels(array)
