"""yolact_d2.utils.instances_to_coco_dicts / mask_to_polygons, checked by rasterising with pycocotools."""
import contextlib
import io
import json
import logging

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances

from yolact_d2.utils import coco_category_ids, coco_image_ids, instances_to_coco_dicts, mask_to_polygons

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
    assert [r["category_id"] for r in results] == [3, 1]  # classes 2, 0: COCO's ids start at 1
    assert all("file_name" not in r for r in results)
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
    results = instances_to_coco_dicts(_instances(masks), 3, class_ids=[5, 6, 7], file_name="a/b.png")
    assert [r["category_id"] for r in results] == [7, 5]
    assert [r["file_name"] for r in results] == ["a/b.png"] * 2


def test_empty_detections_and_bad_format():
    assert instances_to_coco_dicts(_instances([]), 1) == []
    assert instances_to_coco_dicts(_instances([]), 1, mask_format="polygon") == []
    with pytest.raises(ValueError, match="mask_format"):
        instances_to_coco_dicts(_instances([_ring()]), 1, mask_format="bitmap")


def _evaluate_segm(gt_dict, results, tmp_path):
    """pycocotools' segm evaluation of ``results`` written to a file, as a user runs it: (AP, AP50)."""
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "results.json"
    gt_file.write_text(json.dumps(gt_dict))
    res_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluation = COCOeval(gt, gt.loadRes(str(res_file)), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[:2]


@pytest.mark.parametrize("mask_format", ["rle", "polygon"])
def test_empty_and_single_pixel_masks_give_result_files_that_pycocotools_evaluates(mask_format, tmp_path):
    ring, empty, pixel = _ring(), np.zeros((H, W), bool), np.zeros((H, W), bool)
    pixel[3, 4] = True  # one pixel: no outline of three points
    instances = Instances(
        (H, W),
        pred_boxes=Boxes(torch.tensor([[20.0, 15.0, 110.0, 105.0], [0.0, 0.0, 9.0, 9.0], [4.0, 3.0, 5.0, 4.0]])),
        scores=torch.tensor([0.9, 0.95, 0.5]),
        pred_classes=torch.tensor([0, 0, 0]),
        pred_masks=torch.from_numpy(np.stack([ring, empty, pixel])),
    )
    results = instances_to_coco_dicts(instances, 1, mask_format, class_ids=[1])
    if mask_format == "polygon":
        assert all(r["segmentation"] and all(len(p) >= 6 for p in r["segmentation"]) for r in results)
        assert not _rasterise(results[1]["segmentation"]).any()  # the empty mask stays empty
    rle = mask_util.encode(np.asfortranarray(ring.astype(np.uint8)))
    gt = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "ring"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [20, 15, 91, 91],
                         "area": float(ring.sum()), "segmentation": {**rle, "counts": rle["counts"].decode()}}],
    }
    # The empty mask (score 0.95) is a false positive ranked above the ring (0.9), which matches: precision
    # 1/2 at recall 1 and AP50 0.5; the one-pixel mask (0.5) ranks below and changes nothing.
    ap, ap50 = _evaluate_segm(gt, results, tmp_path)
    assert ap50 == pytest.approx(0.5, abs=1e-6)
    if mask_format == "rle":  # exact masks: the ring matches at every IoU threshold
        assert ap == pytest.approx(0.5, abs=1e-6)


def test_category_ids_are_the_datasets_or_else_one_based():
    metadata = Metadata(name="x", thing_dataset_id_to_contiguous_id={3: 0, 7: 1, 42: 2})
    assert coco_category_ids(metadata, 3) == {0: 3, 1: 7, 2: 42}
    assert coco_category_ids(Metadata(name="y"), 3) == {0: 1, 1: 2, 2: 3}


def test_image_ids_are_the_datasets_when_every_file_is_its_else_positions(tmp_path, caplog):
    gt = {"images": [{"id": 30, "file_name": "sub/a.png"}, {"id": 10, "file_name": "b.png"}], "annotations": [],
          "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    metadata = Metadata(name="ids", json_file=str(tmp_path / "gt.json"), image_root=str(tmp_path))
    a, b, c = str(tmp_path / "sub" / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "c.png")
    assert coco_image_ids([b, a], metadata) == [10, 30]
    with caplog.at_level(logging.WARNING, logger="yolact_d2"):
        assert coco_image_ids([b, c, a], metadata) == [1, 2, 3]  # c.png is not in the json: no mixed numbering
    assert "1 of 3 inputs are not images of dataset 'ids'" in caplog.text
    assert coco_image_ids([b, a], Metadata(name="no json")) == [1, 2]
