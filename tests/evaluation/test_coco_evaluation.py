"""YolactCOCOEvaluator: box AP with the instances' scores, mask AP with their mask scores."""
import json
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances

from yolact_d2.data.synthetic import generate_yolact_shapes
from yolact_d2.evaluation import YolactCOCOEvaluator, instances_to_yolact_coco_json

DATASET = "tiny_shapes_two_scores"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 synthetic images registered as a COCO dataset; returns its dicts."""
    root = str(tmp_path_factory.mktemp("datasets"))
    json_file = generate_yolact_shapes(root, "val", 3)
    if DATASET in DatasetCatalog.list():
        DatasetCatalog.remove(DATASET)
        MetadataCatalog.remove(DATASET)
    register_coco_instances(DATASET, {}, json_file, os.path.join(os.path.dirname(os.path.dirname(json_file)), "val"))
    return DatasetCatalog.get(DATASET)


def _split_outputs(d):
    """
    Per GT object two detections of its class: one with the GT box and an empty mask (right for bbox only), one
    with a 1-pixel box in the corner and the GT mask (right for segm only). The first has box score 0.9 and
    mask score 0.1, the second the reverse: each task is perfect when ranked by its own score.
    """
    annos = d["annotations"]
    h, w = d["height"], d["width"]
    gt_masks = torch.from_numpy(mask_util.decode([a["segmentation"] for a in annos])).permute(2, 0, 1).bool()
    gt_boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in annos)])
    n = len(annos)
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.cat([gt_boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, 4)]))
    inst.pred_classes = torch.tensor([a["category_id"] for a in annos] * 2)
    inst.pred_masks = torch.cat([torch.zeros_like(gt_masks), gt_masks])
    inst.scores = torch.tensor([0.9] * n + [0.1] * n)
    inst.mask_scores = torch.tensor([0.1] * n + [0.9] * n)
    return inst


def _evaluate(evaluator, dataset, outputs):
    evaluator.reset()
    for d, inst in zip(dataset, outputs):
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()


def test_boxes_and_masks_are_evaluated_with_their_own_scores(dataset, tmp_path):
    outputs = [_split_outputs(d) for d in dataset]
    assert sum(len(d["annotations"]) for d in dataset) >= 6
    results = _evaluate(YolactCOCOEvaluator(DATASET, tasks=("bbox", "segm"), output_dir=str(tmp_path)), dataset,
                        outputs)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)
    # with one score for both tasks, the task whose right detections score 0.1 is far from perfect
    plain = _evaluate(COCOEvaluator(DATASET, tasks=("bbox", "segm")), dataset, outputs)
    assert plain["bbox"]["AP"] == pytest.approx(100.0) and plain["segm"]["AP"] < 60
    for inst in outputs:
        inst.scores, inst.mask_scores = inst.mask_scores, inst.scores
    swapped = _evaluate(YolactCOCOEvaluator(DATASET, tasks=("bbox", "segm")), dataset, outputs)
    assert swapped["bbox"]["AP"] < 60 and swapped["segm"]["AP"] < 60
    # bbox pass: the boxes with their scores; segm pass, in segm/: boxes and masks with the mask scores
    with open(tmp_path / "coco_instances_results.json") as f:
        boxes = json.load(f)
    with open(tmp_path / "segm" / "coco_instances_results.json") as f:
        masks = json.load(f)
    assert len(boxes) == len(masks) == 2 * sum(len(d["annotations"]) for d in dataset)
    assert not any("segmentation" in r for r in boxes) and all("segmentation" in r for r in masks)
    assert all(np.isclose(r["score"], 0.9) == (r["bbox"][2] > 1) for r in boxes)
    assert all(np.isclose(r["score"], 0.1) == (r["bbox"][2] > 1) for r in masks)

def test_instances_without_mask_scores_are_evaluated_as_by_coco_evaluator(dataset):
    outputs = [_split_outputs(d) for d in dataset]
    for inst in outputs:
        inst.remove("mask_scores")
    ours = _evaluate(YolactCOCOEvaluator(DATASET, tasks=("bbox", "segm")), dataset, outputs)
    theirs = _evaluate(COCOEvaluator(DATASET, tasks=("bbox", "segm")), dataset, outputs)
    np.testing.assert_equal(dict(ours), dict(theirs))  # NaN (no large objects) equals NaN
    assert ours["segm"]["AP"] < 60



def test_only_bbox_and_segm_are_tasks():
    with pytest.raises(ValueError, match=r"tasks 'bbox' and 'segm'; got \('bbox', 'keypoints'\)"):
        YolactCOCOEvaluator(DATASET, tasks=("bbox", "keypoints"))


def test_coco_json_carries_the_mask_score_only_where_there_is_one():
    inst = Instances((4, 5))
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 2.0, 3.0]]))
    inst.scores = torch.tensor([0.75])
    inst.pred_classes = torch.tensor([1])
    inst.pred_masks = torch.ones(1, 4, 5, dtype=torch.bool)
    assert "mask_score" not in instances_to_yolact_coco_json(inst, 7)[0]
    inst.mask_scores = torch.tensor([0.25])
    (result,) = instances_to_yolact_coco_json(inst, 7)
    assert result["score"] == 0.75 and result["mask_score"] == 0.25 and result["image_id"] == 7
