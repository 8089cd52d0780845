"""Accuracy beside speed: COCO AP of a checkpoint on a config's test set, and the CONFIG=WEIGHTS pairs."""
import math
import os

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from yolact_d2.benchmark.accuracy import evaluate_accuracy, parse_eval_weights
from yolact_d2.data import register_coco_dataset
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


def test_evaluate_accuracy_reports_ap_and_latency(checkpoint, tmp_path):
    config, weights = checkpoint
    (row,) = evaluate_accuracy(config, weights, device="cpu", warmup=0, iters=1, output_dir=str(tmp_path / "out"))
    assert row["config"] == "small_yolact" and row["dataset"] == DATASET and row["weights"] == weights
    for key in ("box_AP", "box_AP50", "mask_AP", "mask_AP50"):
        assert math.isnan(row[key]) or 0 <= row[key] <= 100, key
    assert row["median_ms"] > 0 and row["image_size"] == [96, 96]  # YOLACT's test mapper resizes to the input
    assert os.path.isdir(tmp_path / "out" / "eval" / "small_yolact")
