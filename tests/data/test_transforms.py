"""Tests of YOLACT's augmentations and transforms, called directly."""
import cv2
import numpy as np
import pytest

from detectron2.data import transforms as T

from yolact_d2.data.transforms import (
    BilinearResizeTransform,
    ColorPadTransform,
    PhotometricDistort,
    PhotometricTransform,
    RandomExpand,
    RandomSampleCrop,
    ResizeToSquare,
    TransposeTransform,
    box_centres_inside,
)


def random_image(h=24, w=32, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(h, w, 3), dtype=np.uint8)


def iou(boxes, rect):
    """IoU of (N, 4) XYXY boxes with one XYXY rectangle."""
    x0 = np.maximum(boxes[:, 0], rect[0])
    y0 = np.maximum(boxes[:, 1], rect[1])
    x1 = np.minimum(boxes[:, 2], rect[2])
    y1 = np.minimum(boxes[:, 3], rect[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (areas + (rect[2] - rect[0]) * (rect[3] - rect[1]) - inter)


def test_box_centres_inside_is_strict():
    boxes = np.array([[0, 0, 10, 10], [10, 10, 30, 30], [2, 2, 4, 4]], dtype=np.float32)
    assert box_centres_inside(boxes, (5, 0, 20, 20)).tolist() == [False, False, False]
    assert box_centres_inside(boxes, (4, 4, 21, 21)).tolist() == [True, True, False]
    assert box_centres_inside(np.zeros((0, 4)), (0, 0, 1, 1)).shape == (0,)


def test_color_pad_transform():
    image = random_image(4, 5)
    pad = ColorPadTransform(2, 1, 3, 4, pad_value=(7, 8, 9))
    out = pad.apply_image(image)
    assert out.shape == (9, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1:5, 2:7], image)
    background = np.ones((9, 10), dtype=bool)
    background[1:5, 2:7] = False
    assert (out[background] == (7, 8, 9)).all()
    segmentation = pad.apply_segmentation(np.ones((4, 5), dtype=np.uint8))
    assert segmentation.sum() == 20 and segmentation[1:5, 2:7].all()
    np.testing.assert_array_equal(pad.apply_coords(np.array([[0.0, 0.0], [5.0, 4.0]])), [[2, 1], [7, 5]])


def test_photometric_transform_identity_and_geometry():
    image = random_image()
    np.testing.assert_array_equal(PhotometricTransform("BGR").apply_image(image), image)
    tfm = PhotometricTransform("BGR", brightness=20, contrast=1.3, saturation=0.7, hue=10)
    coords = np.array([[1.5, 2.5]])
    np.testing.assert_array_equal(tfm.apply_coords(coords.copy()), coords)
    segmentation = np.eye(5, dtype=np.uint8)
    np.testing.assert_array_equal(tfm.apply_segmentation(segmentation), segmentation)


def test_photometric_transform_values():
    image = np.array([[[10, 100, 250]]], dtype=np.uint8)
    # Brightness is added and clipped; contrast multiplies and clips.
    assert PhotometricTransform("BGR", brightness=10).apply_image(image).tolist() == [[[20, 110, 255]]]
    assert PhotometricTransform("BGR", contrast=0.5).apply_image(image).tolist() == [[[5, 50, 125]]]
    # Order of contrast and brightness: (x + b) * c either way, as brightness always comes first.
    assert PhotometricTransform("BGR", brightness=-10, contrast=2.0).apply_image(image).tolist() == [[[0, 180, 255]]]
    # Zero saturation gives grey at the value (the max channel).
    grey = PhotometricTransform("BGR", saturation=0.0).apply_image(image)
    assert grey.tolist() == [[[250, 250, 250]]]
    # A hue shift of 120 degrees rotates the channels, the same way in BGR and (reversed) in RGB.
    bgr = PhotometricTransform("BGR", hue=120.0).apply_image(image)
    rgb = PhotometricTransform("RGB", hue=120.0).apply_image(image[..., ::-1])
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    assert sorted(bgr.ravel().tolist()) == [10, 100, 250] and bgr.tolist() != image.tolist()
    with pytest.raises(ValueError):
        PhotometricTransform("L")


def test_photometric_distort_draws_parameters_in_range():
    np.random.seed(0)
    aug = PhotometricDistort("RGB")
    image = random_image()
    tfms = [aug.get_transform(image) for _ in range(200)]
    for name, identity, low, high in [
        ("brightness", 0.0, -32, 32),
        ("contrast", 1.0, 0.5, 1.5),
        ("saturation", 1.0, 0.5, 1.5),
        ("hue", 0.0, -18, 18),
    ]:
        values = np.array([getattr(t, name) for t in tfms])
        changed = values != identity
        assert 0.3 < changed.mean() < 0.7, name
        assert ((values[changed] >= low) & (values[changed] < high)).all(), name
    assert 0.3 < np.mean([t.contrast_first for t in tfms]) < 0.7
    changed_images = [not np.array_equal(t.apply_image(image), image) for t in tfms[:10]]
    assert any(changed_images)


def test_random_expand():
    image = random_image()
    assert isinstance(RandomExpand(4.0, (1, 2, 3), prob=0.0).get_transform(image), T.NoOpTransform)
    np.random.seed(0)
    aug = RandomExpand(3.0, (1, 2, 3), prob=1.0)
    for _ in range(20):
        tfm = aug.get_transform(image)
        out = tfm.apply_image(image)
        h, w = out.shape[:2]
        assert 24 <= h <= 3 * 24 and 32 <= w <= 3 * 32
        # The same ratio on both sides, up to the integer truncations.
        assert abs(h / 24 - w / 32) < 1 / 24 + 1 / 32
        np.testing.assert_array_equal(out[tfm.y0 : tfm.y0 + 24, tfm.x0 : tfm.x0 + 32], image)
        assert (out[: tfm.y0] == (1, 2, 3)).all() and (out[:, tfm.x0 + 32 :] == (1, 2, 3)).all()


@pytest.mark.parametrize(
    "min_iou, boxes",
    [
        (0.0, [[10, 10, 40, 30], [50, 20, 110, 70], [5, 50, 30, 75]]),
        (0.3, [[30, 20, 90, 60], [40, 30, 70, 50]]),
        (0.7, [[30, 20, 90, 60]]),
    ],
)
def test_random_sample_crop_satisfies_its_constraints(min_iou, boxes):
    image = random_image(80, 120)
    boxes = np.array(boxes, dtype=np.float32)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    aug = RandomSampleCrop(min_ious=(min_iou,))
    np.random.seed(0)
    for _ in range(20):
        crop = aug.get_transform(image, boxes)
        assert isinstance(crop, T.CropTransform)
        rect = np.array([crop.x0, crop.y0, crop.x0 + crop.w, crop.y0 + crop.h])
        assert rect.dtype.kind == "i"
        assert 0 <= rect[0] < rect[2] <= 120 and 0 <= rect[1] < rect[3] <= 80
        assert crop.w >= 0.3 * 120 - 1 and crop.h >= 0.3 * 80 - 1
        assert 0.5 - 0.05 <= crop.h / crop.w <= 2 + 0.05
        assert iou(boxes, rect).max() >= min_iou  # some box meets the constraint (SSD)
        assert ((centres > rect[:2]) & (centres < rect[2:])).all(axis=1).any()
        assert crop.apply_image(image).shape == (crop.h, crop.w, 3)


def test_random_sample_crop_no_crop_cases():
    image = random_image(80, 120)
    boxes = np.array([[10, 10, 40, 30]], dtype=np.float32)
    assert isinstance(RandomSampleCrop(min_ious=(None,)).get_transform(image, boxes), T.NoOpTransform)
    assert isinstance(RandomSampleCrop().get_transform(image, np.zeros((0, 4), np.float32)), T.NoOpTransform)
    # The default modes include "no crop": over many draws both outcomes occur.
    np.random.seed(0)
    outcomes = {type(RandomSampleCrop().get_transform(image, boxes)) for _ in range(50)}
    assert outcomes == {T.NoOpTransform, T.CropTransform}


def test_resize_to_square():
    image = random_image(30, 60)
    tfm = ResizeToSquare(90).get_transform(image)
    assert tfm.apply_image(image).shape == (90, 90, 3)
    np.testing.assert_allclose(tfm.apply_coords(np.array([[60.0, 30.0]])), [[90, 90]])

    tfm = ResizeToSquare(90, preserve_aspect_ratio=True, pad_value=(5, 6, 7)).get_transform(image)
    out = tfm.apply_image(image)
    assert out.shape == (90, 90, 3)
    assert (out[45:] == (5, 6, 7)).all()
    np.testing.assert_allclose(tfm.apply_coords(np.array([[60.0, 30.0], [10.0, 4.0]])), [[90, 45], [15, 6]])
    segmentation = tfm.apply_segmentation(np.ones((30, 60), dtype=np.uint8))
    assert segmentation.shape == (90, 90) and segmentation.sum() == 90 * 45


def hand_bilinear(array, out_h, out_w):
    """
    Bilinear resize by hand, float64: output pixel i samples the input at (i + 0.5) * in / out - 0.5, clamped to
    the edge pixels' centres (half-pixel centres, no antialiasing: every output reads 2 x 2 input pixels).
    """
    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    r0, r1, fr = taps(array.shape[0], out_h)
    c0, c1, fc = taps(array.shape[1], out_w)
    a = array.astype(np.float64)
    fr, fc = fr[:, None], fc[None, :]
    if a.ndim == 3:
        fr, fc = fr[..., None], fc[..., None]
    top = a[r0][:, c0] * (1 - fc) + a[r0][:, c1] * fc
    bottom = a[r1][:, c0] * (1 - fc) + a[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


@pytest.mark.parametrize("out_hw", [(7, 11), (40, 90), (24, 32)], ids=["shrink", "enlarge", "same"])
def test_training_resize_is_the_originals_unrounded_bilinear(out_hw):
    image = random_image(24, 32)
    assert isinstance(ResizeToSquare(out_hw[0]).get_transform(image), BilinearResizeTransform)
    tfm = BilinearResizeTransform(24, 32, *out_hw)
    out = tfm.apply_image(image)
    # No antialiasing (PIL's resize, detectron2's ResizeTransform, averages a wider window when shrinking) and
    # no rounding to uint8: the interpolated float values, as the original's cv2.resize of its float image.
    assert out.dtype == np.float32 and out.shape == (*out_hw, 3)
    np.testing.assert_allclose(out, hand_bilinear(image, *out_hw), atol=2e-3)
    coords = np.array([[32.0, 24.0], [8.0, 6.0]])
    np.testing.assert_allclose(tfm.apply_coords(coords), coords * [out_hw[1] / 32, out_hw[0] / 24])

    # Masks: uint8 0/1 interpolated bilinearly and rounded (OpenCV's fixed point), 1 where about >= 0.5.
    mask = np.zeros((24, 32), np.uint8)
    mask[3:17, 5:13] = 1
    mask[20:, 25:] = 1
    resized = tfm.apply_segmentation(mask)
    assert resized.dtype == np.uint8 and resized.shape == out_hw and set(np.unique(resized)) <= {0, 1}
    np.testing.assert_array_equal(resized, cv2.resize(mask, out_hw[::-1], interpolation=cv2.INTER_LINEAR))
    value = hand_bilinear(mask, *out_hw)
    clear = np.abs(value - 0.5) > 0.2  # away from OpenCV's rounding of values near 0.5
    np.testing.assert_array_equal(resized[clear], value[clear] > 0.5)
    assert clear.mean() > 0.8


def test_transpose_transform_swaps_rows_and_columns():
    image = random_image(3, 5)
    tfm = TransposeTransform()
    out = tfm.apply_image(image)
    assert out.shape == (5, 3, 3)
    for y in range(3):
        for x in range(5):
            np.testing.assert_array_equal(out[x, y], image[y, x])
    np.testing.assert_array_equal(tfm.apply_segmentation(image[..., 0]), out[..., 0])
    np.testing.assert_allclose(tfm.apply_coords(np.array([[4.0, 1.0], [0.5, 2.5]])), [[1, 4], [2.5, 0.5]])
    np.testing.assert_allclose(tfm.apply_box(np.array([[1.0, 0.0, 5.0, 2.0]])), [[0, 1, 2, 5]])
    np.testing.assert_array_equal(tfm.inverse().apply_image(out), image)
