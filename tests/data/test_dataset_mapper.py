"""Tests of YolactDatasetMapper on small synthetic images with hand-computed expectations."""
import logging

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from yolact_d2.config import add_yolact_config
from yolact_d2.data.dataset_mapper import YolactDatasetMapper, build_yolact_augmentation
from yolact_d2.data.transforms import (
    PhotometricDistort,
    RandomExpand,
    RandomFlip,
    RandomSampleCrop,
    ResizeToSquare,
    TransposeTransform,
)

BACKGROUND = (10, 20, 30)


def make_cfg(
    size, photometric=False, expand=False, sample_crop=False, flip="none", preserve_aspect_ratio=False, dihedral=False
):
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.MODEL.YOLACT.INPUT_SIZE = size
    cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO = preserve_aspect_ratio
    cfg.MODEL.YOLACT.AUGMENTATION.PHOTOMETRIC = photometric
    cfg.MODEL.YOLACT.AUGMENTATION.EXPAND = expand
    cfg.MODEL.YOLACT.AUGMENTATION.SAMPLE_CROP = sample_crop
    cfg.MODEL.YOLACT.AUGMENTATION.DIHEDRAL = dihedral
    cfg.INPUT.RANDOM_FLIP = flip
    return cfg


def rect_mask(height, width, x0, y0, x1, y1):
    """(height, width) uint8 mask of the pixels with x0 <= column < x1 and y0 <= row < y1."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def rect_annotation(height, width, rect, category_id, iscrowd=0):
    """An annotation of the rectangle ``rect`` = (x0, y0, x1, y1) (pixels, end exclusive), its mask as an RLE."""
    x0, y0, x1, y1 = rect
    rle = mask_util.encode(np.asfortranarray(rect_mask(height, width, *rect)))
    return {
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": category_id,
        "segmentation": rle,
        "iscrowd": iscrowd,
    }


def make_dataset_dict(tmp_path, height, width, rects, annotations=None):
    """
    Draw the rectangles (x0, y0, x1, y1) in distinct colours on a background and write the image as PNG.
    Returns the dataset dict, with one RLE annotation per rectangle of class = its index unless given.
    """
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[...] = BACKGROUND
    for i, (x0, y0, x1, y1) in enumerate(rects):
        image[y0:y1, x0:x1] = (60 + 30 * i, 200 - 25 * i, 100 + 20 * i)
    file_name = str(tmp_path / "image.png")
    cv2.imwrite(file_name, image)
    if annotations is None:
        annotations = [rect_annotation(height, width, rect, i) for i, rect in enumerate(rects)]
    return {"file_name": file_name, "image_id": 7, "height": height, "width": width, "annotations": annotations}


def uncompressed_counts(mask):
    """COCO's uncompressed RLE counts of a mask: alternating run lengths of 0s and 1s in column-major order."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    return ([0] if flat[0] else []) + runs.tolist()


def read_bgr(dataset_dict):
    return cv2.imread(dataset_dict["file_name"])


def original_mask_resize(mask, out_h, out_w):
    """The original YOLACT's resize of a uint8 0/1 mask (``utils/augmentations.py``, ``Resize``): cv2 bilinear."""
    return cv2.resize(mask, (out_w, out_h), interpolation=cv2.INTER_LINEAR)


def tight_box(mask):
    """XYXY box of a non-empty (H, W) mask, end exclusive."""
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def check_boxes_are_tight(instances):
    for box, mask in zip(instances.gt_boxes.tensor.numpy(), instances.gt_masks.tensor.numpy()):
        assert box.tolist() == tight_box(mask)


def run_mapper(cfg, dataset_dict, seed=0, is_train=True):
    np.random.seed(seed)
    return YolactDatasetMapper(cfg, is_train=is_train)(dataset_dict)


RECTS = [(4, 2, 20, 14), (30, 16, 60, 30)]  # on a 32 x 64 (h x w) image


def test_no_augmentation_gives_exact_resize(tmp_path):
    # 32 x 64 -> 128 x 128: x scaled by 2, y by 4.
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    out = run_mapper(make_cfg(128), dataset_dict)

    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 128, 128)
    assert (out["height"], out["width"], out["file_name"], out["image_id"]) == (32, 64, dataset_dict["file_name"], 7)
    assert "annotations" not in out
    instances = out["instances"]
    assert instances.image_size == (128, 128)
    expected_boxes = [[2 * x0, 4 * y0, 2 * x1, 4 * y1] for x0, y0, x1, y1 in RECTS]
    assert instances.gt_boxes.tensor.tolist() == expected_boxes
    assert instances.gt_classes.dtype == torch.int64 and instances.gt_classes.tolist() == [0, 1]
    assert instances.gt_masks.tensor.dtype == torch.bool
    for mask, rect in zip(instances.gt_masks.tensor.numpy(), RECTS):
        expected = original_mask_resize(rect_mask(32, 64, *rect), 128, 128).astype(bool)
        np.testing.assert_array_equal(mask, expected)
    # The interior of a uniform rectangle keeps its colour through the bilinear resize (BGR, CHW).
    image = out["image"].numpy()
    np.testing.assert_array_equal(image[:, 4 * 8, 2 * 12], read_bgr(dataset_dict)[8, 12])
    assert len(out["crowd_boxes"]) == 0


def test_polygon_segmentation(tmp_path):
    x0, y0, x1, y1 = RECTS[0]
    annotation = dict(rect_annotation(32, 64, RECTS[0], 3), segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]])
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS[:1], annotations=[annotation])
    instances = run_mapper(make_cfg(128), dataset_dict)["instances"]
    assert instances.gt_boxes.tensor.tolist() == [[2 * x0, 4 * y0, 2 * x1, 4 * y1]]
    assert instances.gt_classes.tolist() == [3]
    expected = original_mask_resize(rect_mask(32, 64, *RECTS[0]), 128, 128)
    np.testing.assert_array_equal(instances.gt_masks.tensor[0].numpy(), expected.astype(bool))


def test_flip_mirrors_image_boxes_and_masks(tmp_path):
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    reference = run_mapper(make_cfg(128), dataset_dict)
    flipped_seeds = 0
    for seed in range(8):
        out = run_mapper(make_cfg(128, flip="horizontal"), dataset_dict, seed)
        boxes, ref_boxes = out["instances"].gt_boxes.tensor, reference["instances"].gt_boxes.tensor
        if torch.equal(out["image"], reference["image"]):
            assert torch.equal(boxes, ref_boxes)
            continue
        flipped_seeds += 1
        assert torch.equal(out["image"], reference["image"].flip(-1))
        x1, y1, x2, y2 = ref_boxes.unbind(1)
        assert torch.equal(boxes, torch.stack([128 - x2, y1, 128 - x1, y2], 1))
        assert torch.equal(out["instances"].gt_masks.tensor, reference["instances"].gt_masks.tensor.flip(-1))
    assert 0 < flipped_seeds < 8


def dihedral_images(image):
    """The 8 images of an (..., S, S) tensor under rotations by multiples of 90 degrees and reflections."""
    rotations = [torch.rot90(image, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [r.flip(-1) for r in rotations]


def test_dihedral_gives_the_eight_symmetries_of_image_masks_and_boxes(tmp_path):
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    reference = run_mapper(make_cfg(128), dataset_dict)
    ref_images = dihedral_images(reference["image"])
    ref_masks = dihedral_images(reference["instances"].gt_masks.tensor)
    seen = set()
    for seed in range(48):
        out = run_mapper(make_cfg(128, flip="horizontal", dihedral=True), dataset_dict, seed)
        # The transpose comes before the resize, whose rounding differs by 1 between the two axes.
        matches = [k for k, image in enumerate(ref_images) if (out["image"].int() - image.int()).abs().max() <= 1]
        assert len(matches) == 1
        k = matches[0]
        seen.add(k)
        # OpenCV's fixed-point bilinear rounds a few edge pixels of a mask differently along its two axes
        masks = out["instances"].gt_masks.tensor
        assert (masks != ref_masks[k]).float().mean() < 0.01
        assert out["instances"].gt_classes.tolist() == [0, 1]
        check_boxes_are_tight(out["instances"])
    assert seen == set(range(8))


def test_expand_scales_masks_and_fills_with_mean(tmp_path):
    size = 96
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    cfg = make_cfg(size, expand=True)
    mean = np.round(cfg.MODEL.PIXEL_MEAN).astype(np.uint8)
    image = read_bgr(dataset_dict)
    expanded_seeds = canvas_checked = 0
    for seed in range(10):
        # Expand is the only random augmentation: the same seed gives the mapper the same canvas.
        np.random.seed(seed)
        pad = RandomExpand(cfg.MODEL.YOLACT.AUGMENTATION.MAX_EXPAND, tuple(mean)).get_transform(image)
        out = run_mapper(cfg, dataset_dict, seed)
        if isinstance(pad, T.NoOpTransform):
            continue
        expanded_seeds += 1
        canvas_w, canvas_h = pad.x0 + 64 + pad.x1, pad.y0 + 32 + pad.y1
        sx, sy = size / canvas_w, size / canvas_h
        for rect, mask, box in zip(RECTS, out["instances"].gt_masks.tensor, out["instances"].gt_boxes.tensor):
            x0, y0, x1, y1 = rect
            area = (x1 - x0) * (y1 - y0)
            assert abs(mask.sum().item() - area * sx * sy) <= (x1 - x0) * sx + (y1 - y0) * sy + 1
            expected = np.array([(x0 + pad.x0) * sx, (y0 + pad.y0) * sy, (x1 + pad.x0) * sx, (y1 + pad.y0) * sy])
            np.testing.assert_allclose(box.numpy(), expected, atol=1)
        # Output pixels more than one input pixel (or one output pixel) away from the pasted image, i.e. out of
        # the bilinear filter's support, show the canvas: the mean colour.
        out_image = out["image"].numpy().transpose(1, 2, 0)
        margin = int(np.ceil(max(sx, sy, 1.0))) + 1
        inside = np.zeros((size, size), dtype=bool)
        inside[
            max(int(pad.y0 * sy) - margin, 0) : int(np.ceil((pad.y0 + 32) * sy)) + margin,
            max(int(pad.x0 * sx) - margin, 0) : int(np.ceil((pad.x0 + 64) * sx)) + margin,
        ] = True
        assert (out_image[~inside] == mean).all()
        canvas_checked += (~inside).sum()
    assert expanded_seeds > 0 and canvas_checked > 0


# On an 80 x 120 (h x w) image.
SCATTERED_RECTS = [
    (2, 2, 14, 12),
    (40, 4, 60, 16),
    (90, 2, 110, 20),
    (8, 40, 30, 60),
    (60, 50, 78, 74),
    (96, 56, 118, 78),
]


def test_sample_crop_keeps_instances_with_centre_inside(tmp_path):
    size = 64
    dataset_dict = make_dataset_dict(tmp_path, 80, 120, SCATTERED_RECTS)
    image = read_bgr(dataset_dict)
    boxes = np.array(SCATTERED_RECTS, dtype=np.float32)
    cropped_seeds = dropped_seeds = 0
    for seed in range(20):
        # The crop is the only random augmentation: the same seed gives the mapper the same crop.
        np.random.seed(seed)
        crop = RandomSampleCrop().get_transform(image, boxes)
        instances = run_mapper(make_cfg(size, sample_crop=True), dataset_dict, seed)["instances"]
        if isinstance(crop, T.NoOpTransform):
            assert len(instances) == len(SCATTERED_RECTS)
            continue
        cropped_seeds += 1
        x0, y0, x1, y1 = crop.x0, crop.y0, crop.x0 + crop.w, crop.y0 + crop.h
        centres = boxes.reshape(-1, 2, 2).mean(axis=1)
        kept = [i for i, (cx, cy) in enumerate(centres) if x0 < cx < x1 and y0 < cy < y1]  # strictly inside
        dropped_seeds += len(kept) < len(SCATTERED_RECTS)
        assert instances.gt_classes.tolist() == kept
        for i, mask in zip(kept, instances.gt_masks.tensor.numpy()):
            cropped = rect_mask(80, 120, *SCATTERED_RECTS[i])[y0:y1, x0:x1]
            np.testing.assert_array_equal(mask, original_mask_resize(cropped, size, size).astype(bool))
        check_boxes_are_tight(instances)
    assert cropped_seeds > 0 and dropped_seeds > 0


def test_degenerate_instances_are_dropped(tmp_path):
    rects = [(4, 4, 20, 20), (30, 4, 31, 30), (40, 10, 60, 11)]  # a square, a 1-px column, a 1-px row
    annotations = [rect_annotation(32, 64, rect, i) for i, rect in enumerate(rects)]
    annotations.append(rect_annotation(32, 64, (0, 0, 0, 0), 3))  # empty mask
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, rects, annotations=annotations)
    # 32 x 64 -> 64 x 64 keeps the width: the column stays 1 pixel wide, the row becomes 2 pixels high.
    instances = run_mapper(make_cfg(64), dataset_dict)["instances"]
    assert instances.gt_classes.tolist() == [0, 2]
    assert instances.gt_boxes.tensor.tolist() == [[4, 8, 20, 40], [40, 20, 60, 22]]
    assert instances.gt_masks.tensor.shape == (2, 64, 64)


def test_crowd_annotations_go_to_crowd_boxes(tmp_path):
    crowd = rect_annotation(32, 64, RECTS[1], 1, iscrowd=1)
    # Crowd regions usually come as uncompressed RLE.
    crowd_mask = np.asfortranarray(rect_mask(32, 64, *RECTS[1]))
    crowd["segmentation"] = {"size": [32, 64], "counts": uncompressed_counts(crowd_mask)}
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS, annotations=[rect_annotation(32, 64, RECTS[0], 0), crowd])
    out = run_mapper(make_cfg(128), dataset_dict)
    assert out["instances"].gt_classes.tolist() == [0]
    assert out["crowd_boxes"].tensor.tolist() == [[60, 64, 120, 120]]


def test_photometric_changes_pixels_not_geometry(tmp_path):
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    reference = run_mapper(make_cfg(128), dataset_dict)
    changed = 0
    for seed in range(6):
        out = run_mapper(make_cfg(128, photometric=True), dataset_dict, seed)
        assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 128, 128)
        changed += not torch.equal(out["image"], reference["image"])
        assert torch.equal(out["instances"].gt_boxes.tensor, reference["instances"].gt_boxes.tensor)
        assert torch.equal(out["instances"].gt_masks.tensor, reference["instances"].gt_masks.tensor)
    assert changed > 0


@pytest.mark.parametrize("image_format", ["BGR", "RGB"])
def test_random_augmentation_invariants(tmp_path, image_format):
    size = 64
    annotations = [rect_annotation(80, 120, rect, i) for i, rect in enumerate(SCATTERED_RECTS)]
    annotations.append(rect_annotation(80, 120, (0, 60, 50, 80), 9, iscrowd=1))
    dataset_dict = make_dataset_dict(tmp_path, 80, 120, SCATTERED_RECTS, annotations=annotations)
    cfg = make_cfg(size, photometric=True, expand=True, sample_crop=True, flip="horizontal")
    cfg.INPUT.FORMAT = image_format
    num_instances, num_crowds = set(), set()
    for seed in range(40):
        out = run_mapper(cfg, dataset_dict, seed)
        instances = out["instances"]
        assert out["image"].shape == (3, size, size) and out["image"].dtype == torch.float32
        assert instances.image_size == (size, size)
        assert len(instances.gt_boxes) == len(instances.gt_masks) == len(instances.gt_classes)
        assert instances.gt_masks.tensor.shape == (len(instances), size, size)
        for boxes in (instances.gt_boxes.tensor, out["crowd_boxes"].tensor):
            assert boxes.shape[1] == 4
            assert ((boxes >= 0) & (boxes <= size)).all()
            assert (boxes[:, 2:] - boxes[:, :2] > 1).all()
        assert set(instances.gt_classes.tolist()) <= set(range(len(SCATTERED_RECTS)))
        check_boxes_are_tight(instances)
        num_instances.add(len(instances))
        num_crowds.add(len(out["crowd_boxes"]))
    # The augmentations did drop instances sometimes, and the crowd region went in and out.
    assert len(num_instances) > 1 and num_crowds == {0, 1}


def test_missing_or_corrupt_image_names_the_file(tmp_path):
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    mapper = YolactDatasetMapper(make_cfg(64), is_train=True)
    missing = dict(dataset_dict, file_name=str(tmp_path / "missing.png"))
    with pytest.raises(OSError, match="missing.png"):
        mapper(missing)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(OSError, match="corrupt.jpg"):
        mapper(dict(dataset_dict, file_name=str(corrupt)))


def test_preserve_aspect_ratio_pads_with_mean(tmp_path):
    # 32 x 64 -> 48 x 96 (a single factor 1.5), padded to 96 x 96 at the bottom.
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    cfg = make_cfg(96, preserve_aspect_ratio=True)
    out = run_mapper(cfg, dataset_dict)
    image = out["image"].numpy()
    assert image.shape == (3, 96, 96)
    mean = np.round(cfg.MODEL.PIXEL_MEAN)
    assert (image[:, 48:, :] == mean[:, None, None]).all()
    assert (image[:, 47, :] != mean[:, None]).any()
    expected = np.array(RECTS) * 1.5
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), expected, atol=1)
    check_boxes_are_tight(out["instances"])


@pytest.mark.parametrize("preserve_aspect_ratio", [False, True])
def test_inference_keeps_the_image_as_read_and_drops_annotations(tmp_path, preserve_aspect_ratio):
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    cfg = make_cfg(128, photometric=True, expand=True, sample_crop=True, flip="horizontal",
                   preserve_aspect_ratio=preserve_aspect_ratio)
    as_read = torch.from_numpy(read_bgr(dataset_dict).transpose(2, 0, 1).copy())
    for seed in range(3):
        out = run_mapper(cfg, dataset_dict, seed, is_train=False)
        assert not {"instances", "crowd_boxes", "annotations"} & out.keys()
        assert (out["height"], out["width"]) == (32, 64)
        assert out["image"].dtype == torch.uint8 and torch.equal(out["image"], as_read)


@pytest.mark.parametrize("height,width", [(1, 1), (7, 1), (1, 9)])
def test_images_a_pixel_wide_or_high_go_through_every_flip(tmp_path, height, width):
    # detectron2's horizontal flip of a 1-pixel-wide image is a view that NumPy calls contiguous, and the
    # vertical flip after it (DIHEDRAL) refused its negative stride.
    annotations = [rect_annotation(height, width, (0, 0, width, height), 0)]
    dataset_dict = make_dataset_dict(tmp_path, height, width, [], annotations=annotations)
    cfg = make_cfg(16, expand=True, flip="horizontal", dihedral=True)
    colours = set()
    for seed in range(16):
        out = run_mapper(cfg, dataset_dict, seed)
        assert out["image"].shape == (3, 16, 16)
        colours.add(tuple(out["image"][:, 0, 0].tolist()))
    # the whole image is the background colour; with the expand, the canvas (pixel mean) too
    assert tuple(float(v) for v in BACKGROUND) in colours


def test_build_augmentation_follows_config():
    cfg = make_cfg(128, photometric=True, expand=True, sample_crop=True, flip="horizontal")
    augs = build_yolact_augmentation(cfg, is_train=True)
    assert [type(a) for a in augs[:3]] == [PhotometricDistort, RandomExpand, RandomSampleCrop]
    assert augs[3].horizontal and isinstance(augs[4], ResizeToSquare)
    assert augs[1].pad_value == (104, 116, 124)  # detectron2's default BGR mean, rounded
    assert build_yolact_augmentation(cfg, is_train=False) == []  # the model resizes
    assert [type(a) for a in build_yolact_augmentation(make_cfg(128), is_train=True)] == [ResizeToSquare]
    dihedral = build_yolact_augmentation(make_cfg(128, dihedral=True), is_train=True)
    assert [type(a) for a in dihedral] == [RandomFlip, T.RandomApply, ResizeToSquare]
    assert dihedral[0].vertical and not dihedral[0].horizontal
    assert dihedral[1].prob == 0.5
    assert isinstance(dihedral[1].aug.get_transform(np.zeros((2, 3, 3), np.uint8)), TransposeTransform)



def test_unreadable_image_is_skipped_in_training_with_skip_corrupt_images_only(tmp_path, caplog):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not an image")
    dataset_dict = dict(make_dataset_dict(tmp_path, 32, 64, RECTS), file_name=str(corrupt))
    cfg = make_cfg(64)
    cfg.DATALOADER.SKIP_CORRUPT_IMAGES = True
    with caplog.at_level(logging.WARNING, logger="yolact_d2"):
        assert YolactDatasetMapper(cfg, is_train=True)(dataset_dict) is None
    assert f"Skipping an image that cannot be read (DATALOADER.SKIP_CORRUPT_IMAGES): Cannot read image {corrupt}" in (
        caplog.text
    )
    with pytest.raises(OSError, match="corrupt.png"):  # evaluation must see every image
        YolactDatasetMapper(cfg, is_train=False)(dataset_dict)


def test_gray_16_bit_training_images_are_scaled_to_8_bits(tmp_path):
    # a 16-bit gray PNG of one value: 8-bit value round(v / 257) in all three channels (not saturated to 255)
    dataset_dict = make_dataset_dict(tmp_path, 32, 64, RECTS)
    gray = tmp_path / "gray16.png"
    cv2.imwrite(str(gray), np.full((32, 64), 30000, dtype=np.uint16))
    out = run_mapper(make_cfg(64), dict(dataset_dict, file_name=str(gray)))
    assert out["image"].shape == (3, 64, 64)
    assert (out["image"] == round(30000 / 257)).all()
