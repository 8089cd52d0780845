"""yolact_d2.utils.instances_to_coco_dicts / mask_to_polygons, checked by rasterising with pycocotools."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.structures import Boxes, Instances

from yolact_d2.utils import instances_to_coco_dicts, mask_to_polygons

H, W = 120, 130


def _ring():
    yy, xx = np.mgrid[:H, :W]
    radius = np.hypot(yy - 60, xx - 65)
    return (radius <= 45) & (radius >= 22)


def _l_shape():
    mask = np.zeros((H, W), bool)
    mask[10:100, 10:40] = True
    mask[70:100, 10:120] = True
    return mask


def _instances(masks):
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0], [0.5, 1.5, 3.0, 4.0]])[: len(masks)]
    return Instances(
        (H, W),
        pred_boxes=Boxes(boxes),
        scores=torch.tensor([0.9, 0.25])[: len(masks)],
        pred_classes=torch.tensor([2, 0])[: len(masks)],
        pred_masks=torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, H, W, dtype=torch.bool),
    )


def _rasterise(polygons):
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, H, W))).astype(bool)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("shape", [_ring, _l_shape])
def test_polygons_rasterise_back_to_the_mask(shape):
    mask = shape()
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1 and all(len(p) % 2 == 0 and len(p) >= 6 for p in polygons)
    back = _rasterise(polygons)
    assert _iou(back, mask) >= 0.95
    if shape is _ring:
        assert not back[45:76, 50:81].any()  # the hole (radius < 22 around (60, 65)) stays empty


def test_separate_parts_give_one_polygon_each_and_isolated_pixels_are_dropped():
    mask = np.zeros((H, W), bool)
    mask[5:45, 5:45] = True
    mask[60:110, 50:120] = True
    mask[2, 100] = True  # one isolated pixel: no polygon of three points
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    assert _iou(_rasterise(polygons), mask) >= 0.95
    assert mask_to_polygons(np.zeros((H, W), bool)) == []


def test_rle_round_trips_exactly_with_boxes_scores_and_classes():
    masks = [_ring(), _l_shape()]
    results = instances_to_coco_dicts(_instances(masks), image_id=7)
    assert [r["image_id"] for r in results] == [7, 7]
    assert [r["category_id"] for r in results] == [2, 0]
    assert results[0]["bbox"] == pytest.approx([10.0, 20.0, 40.0, 60.0])  # XYXY (10, 20, 50, 80) as XYWH
    assert results[1]["bbox"] == pytest.approx([0.5, 1.5, 2.5, 2.5])
    assert [r["score"] for r in results] == pytest.approx([0.9, 0.25])
    for result, mask in zip(results, masks):
        assert isinstance(result["segmentation"]["counts"], str)
        assert np.array_equal(mask_util.decode(result["segmentation"]).astype(bool), mask)


def test_polygon_format_and_class_ids():
    masks = [_ring(), _l_shape()]
    results = instances_to_coco_dicts(_instances(masks), 3, mask_format="polygon", class_ids={0: 11, 2: 42})
    assert [r["category_id"] for r in results] == [42, 11]
    assert results[0]["bbox"] == pytest.approx([10.0, 20.0, 40.0, 60.0])
    for result, mask in zip(results, masks):
        assert _iou(_rasterise(result["segmentation"]), mask) >= 0.95
    results = instances_to_coco_dicts(_instances(masks), 3, class_ids=[5, 6, 7])
    assert [r["category_id"] for r in results] == [7, 5]


def test_empty_detections_and_bad_format():
    assert instances_to_coco_dicts(_instances([]), 1) == []
    assert instances_to_coco_dicts(_instances([]), 1, mask_format="polygon") == []
    with pytest.raises(ValueError, match="mask_format"):
        instances_to_coco_dicts(_instances([_ring()]), 1, mask_format="bitmap")
