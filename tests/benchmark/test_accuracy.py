"""Accuracy beside speed: COCO AP of a checkpoint on a config's test set, and the CONFIG=WEIGHTS pairs."""
import math
import os

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.modeling import build_model
from detectron2.structures import Instances

from yolact_d2.benchmark import BenchmarkSettings, run_benchmark, suite
from yolact_d2.benchmark.accuracy import accuracy_rows, add_ap_changes, evaluate_accuracy, parse_eval_weights
from yolact_d2.benchmark.models import benchmark_config
from yolact_d2.data import register_coco_dataset
from yolact_d2.layers import precision as precision_module
from yolact_d2.data.synthetic import THING_CLASSES, generate_yolact_shapes

DATASET = "benchmark_accuracy_shapes"
NUM_CLASSES = len(THING_CLASSES)


@pytest.fixture
def checkpoint(cfg, tmp_path):
    """A random small YOLACT saved as a checkpoint, its config (testing on 2 yolact_shapes images) and name."""
    json_file = generate_yolact_shapes(str(tmp_path), "val", 2)
    register_coco_dataset(DATASET, json_file, os.path.join(os.path.dirname(os.path.dirname(json_file)), "val"))
    cfg.MODEL.YOLACT.INPUT_SIZE = 96
    cfg.DATASETS.TEST = (DATASET,)
    cfg.DATALOADER.NUM_WORKERS = 0
    config = tmp_path / "small_yolact.yaml"
    config.write_text(cfg.dump())
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    yield str(config), str(weights)
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)


def test_parse_eval_weights():
    assert parse_eval_weights(["a.yaml=b.pth", "c.yaml=d=e.pth"]) == [("a.yaml", "b.pth"), ("c.yaml", "d=e.pth")]
    for bad in ("a.yaml", "=b.pth", "a.yaml="):
        with pytest.raises(ValueError, match="CONFIG=WEIGHTS"):
            parse_eval_weights([bad])


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_evaluate_accuracy_reports_ap_and_latency(checkpoint, tmp_path, precision, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)
    config, weights = checkpoint
    (row,) = evaluate_accuracy(config, weights, device="cpu", warmup=0, iters=1, output_dir=str(tmp_path / "out"),
                               precision=precision)
    assert row["config"] == "small_yolact" and row["dataset"] == DATASET and row["weights"] == weights
    assert row["precision"] == precision and row["runtime"] == "eager"
    assert {"box_AP", "box_AP50", "mask_AP", "mask_AP50"} <= set(row)  # their values: the oracle tests below
    first = DatasetCatalog.get(DATASET)[0]
    assert row["median_ms"] > 0 and row["image_size"] == [first["height"], first["width"]]  # as read: YOLACT resizes
    assert os.path.isdir(tmp_path / "out" / "eval" / "small_yolact" / f"eager_{precision}" / "inference")


def _accuracy_row(config, box_ap, mask_ap, precision="float32", runtime="eager", dataset="val"):
    return {"config": config, "dataset": dataset, "precision": precision, "runtime": runtime, "box_AP": box_ap,
            "mask_AP": mask_ap}


def test_ap_changes_are_from_the_float32_eager_row_of_the_same_config_and_dataset():
    rows = [
        _accuracy_row("a", 40.0, 35.0), _accuracy_row("a", 39.5, 35.25, "bfloat16"),
        _accuracy_row("a", 38.0, 34.0, "int8", "onnxruntime"), _accuracy_row("a", 41.0, 36.0, dataset="test"),
        _accuracy_row("b", 30.0, 20.0, "bfloat16"), _accuracy_row("c", float("nan"), 10.0),
    ]
    add_ap_changes(rows)
    assert [(r["box_AP_change"], r["mask_AP_change"]) for r in rows[:5]] == [
        (0.0, 0.0), (-0.5, 0.25), (-2.0, -1.0), (0.0, 0.0), (None, None)]
    assert math.isnan(rows[5]["box_AP_change"]) and rows[5]["mask_AP_change"] == 0.0


def test_the_suite_evaluates_every_precision_and_sets_the_ap_changes(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)
    box_ap = {"float32": 40.0, "bfloat16": 39.5}
    calls = []

    def evaluate(config, weights, *, precision, **kwargs):
        calls.append((config, weights, precision, kwargs["input_size"]))
        return [_accuracy_row("a", box_ap[precision], 30.0 if precision == "float32" else 30.25, precision)]

    monkeypatch.setattr(suite, "evaluate_accuracy", evaluate)
    results = run_benchmark(BenchmarkSettings(configs=[], tasks=["accuracy"], eval_weights=[("a.yaml", __file__)],
                                              precisions=("float32", "bfloat16")))
    assert calls == [("a.yaml", __file__, "float32", None), ("a.yaml", __file__, "bfloat16", None)]
    assert [(r["box_AP_change"], r["mask_AP_change"]) for r in results["accuracy"]] == [(0.0, 0.0), (-0.5, 0.25)]


class _Oracle:
    """A model that predicts the ground truth of each test image (score 1), with ``class_shift`` added."""

    def __init__(self, dataset, class_shift=0):
        self.records = {r["image_id"]: r for r in DatasetCatalog.get(dataset)}
        self.class_shift = class_shift

    def __call__(self, inputs):
        outputs = []
        for x in inputs:
            record = self.records[x["image_id"]]
            size = (record["height"], record["width"])
            gt = annotations_to_instances(record["annotations"], size, mask_format="bitmask")
            pred = Instances(size, pred_boxes=gt.gt_boxes, scores=torch.ones(len(gt)),
                             pred_classes=(gt.gt_classes + self.class_shift) % NUM_CLASSES,
                             pred_masks=gt.gt_masks.tensor)
            outputs.append({"instances": pred})
        return outputs


@pytest.mark.parametrize("class_shift,expected_ap", [(0, 100.0), (1, 0.0)])
def test_accuracy_rows_score_constructed_predictions(checkpoint, tmp_path, class_shift, expected_ap):
    """The ground truth itself scores 100 AP (box and mask, AP50 too); the same boxes in the wrong class 0."""
    config, weights = checkpoint
    cfg = benchmark_config(config, device="cpu", weights=weights)
    cfg.OUTPUT_DIR = str(tmp_path / "eval")
    (row,) = accuracy_rows(cfg, _Oracle(DATASET, class_shift), config=config, weights=weights, device="cpu",
                           warmup=0, iters=1, precision="float32", runtime="oracle")
    assert {k: row[k] for k in ("box_AP", "box_AP50", "mask_AP", "mask_AP50")} == pytest.approx(
        dict.fromkeys(("box_AP", "box_AP50", "mask_AP", "mask_AP50"), expected_ap))
    assert (row["config"], row["dataset"], row["precision"], row["runtime"]) == (
        "small_yolact", DATASET, "float32", "oracle")
