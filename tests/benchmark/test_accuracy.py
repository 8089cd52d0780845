"""Accuracy beside speed: COCO AP of a checkpoint on a config's test set, and the CONFIG=WEIGHTS pairs."""
import math
import os

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from yolact_d2.benchmark import BenchmarkSettings, run_benchmark
from yolact_d2.benchmark.accuracy import add_ap_changes, evaluate_accuracy, parse_eval_weights
from yolact_d2.data import register_coco_dataset
from yolact_d2.layers import precision as precision_module
from yolact_d2.data.synthetic import generate_yolact_shapes

DATASET = "benchmark_accuracy_shapes"


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
    for key in ("box_AP", "box_AP50", "mask_AP", "mask_AP50"):
        assert math.isnan(row[key]) or 0 <= row[key] <= 100, key
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


def test_the_suite_evaluates_every_precision_and_sets_the_ap_changes(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)
    config, weights = checkpoint
    results = run_benchmark(BenchmarkSettings(configs=[], tasks=["accuracy"], eval_weights=[(config, weights)],
                                              warmup=0, iters=1, output_dir=str(tmp_path),
                                              precisions=("float32", "bfloat16")))
    float32, bfloat16 = results["accuracy"]
    assert (float32["precision"], bfloat16["precision"]) == ("float32", "bfloat16")
    for row in (float32, bfloat16):
        for kind in ("box", "mask"):
            change = row[f"{kind}_AP_change"]
            expected = row[f"{kind}_AP"] - float32[f"{kind}_AP"]
            assert change == expected or (math.isnan(change) and math.isnan(expected))
