"""ONNX Runtime as a benchmark runtime: float32 and int8 ONNX rows of latency and accuracy, and their absence."""
import json
import os
import sys

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from yolact_d2.benchmark import BenchmarkSettings, run_benchmark
from yolact_d2.benchmark import onnx_runtime
from yolact_d2.benchmark.onnx_runtime import exported_runtime
from yolact_d2.data import register_coco_dataset
from yolact_d2.data.synthetic import generate_yolact_shapes
from yolact_d2.export import onnx_precision

pytestmark = pytest.mark.filterwarnings("ignore:`create_unbacked_symint` is deprecated:FutureWarning")

LATENCY_FIELDS = {"batch_size", "median_ms", "p90_ms", "images_per_s", "detections"}
ACCURACY_FIELDS = {"config", "weights", "dataset", "box_AP", "box_AP50", "mask_AP", "mask_AP50", "median_ms",
                   "p90_ms", "image_size"}


def _settings(configs, **kwargs):
    return BenchmarkSettings(configs=configs, input_size=96, batch_sizes=(1,), warmup=0, iters=1, fixed_detections=0,
                             **kwargs)


def test_latency_rows_of_float32_and_int8_onnx_models(small_yolact_config, tmp_path):
    pytest.importorskip("onnxruntime")
    results = run_benchmark(_settings([small_yolact_config], tasks=["latency"], onnxruntime=("float32", "int8"),
                                      output_dir=str(tmp_path)))
    eager, *onnx_rows = results["latency"]
    assert eager["config"] == "small_yolact"
    assert [(r["config"], r["mode"], r["precision"], r["runtime"]) for r in onnx_rows] == [
        ("small_yolact", "default", "float32", "onnxruntime"), ("small_yolact", "default", "int8", "onnxruntime")]
    for row in onnx_rows:
        assert LATENCY_FIELDS <= set(row) and row["batch_size"] == 1 and row["median_ms"] > 0
    assert onnx_rows[0]["detections"] == eager["detections"]  # the float32 graph finds eager mode's detections
    folder = tmp_path / "onnx" / "small_yolact" / "default"
    assert sorted(os.listdir(folder)) == ["model.onnx", "model_int8.onnx"]
    assert exported_runtime(str(folder / "model_int8.onnx")) == {"precision": "int8", "runtime": "onnxruntime"}
    assert exported_runtime(str(folder / "model.onnx")) == {"precision": "float32", "runtime": "onnxruntime"}
    assert exported_runtime("model.ts") == {"precision": "float32", "runtime": "torchscript"}
    assert not results["notes"]


def test_missing_onnxruntime_leaves_a_note(small_yolact_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes the import fail
    results = run_benchmark(_settings([small_yolact_config], tasks=["latency"], onnxruntime=("int8",),
                                      output_dir=str(tmp_path)))
    assert [r["config"] for r in results["latency"]] == ["small_yolact"]
    (note,) = results["notes"]
    assert "ONNX Runtime rows skipped: the package onnxruntime cannot be imported" in note
    assert not os.path.exists(tmp_path / "onnx")


def test_a_model_that_cannot_be_exported_gets_a_note_and_a_bug_raises(small_yolact_config, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    settings = _settings([small_yolact_config], tasks=["latency"], onnxruntime=("float32",), output_dir=str(tmp_path),
                         opts=["MODEL.YOLACT.PRESERVE_ASPECT_RATIO", "True",
                               "MODEL.YOLACT.MASK_RESCORING.ENABLED", "True"])
    results = run_benchmark(settings)
    assert [r["runtime"] for r in results["latency"]] == ["eager"]
    (note,) = results["notes"]
    assert note.startswith("ONNX Runtime latency of small_yolact skipped: MODEL.YOLACT.PRESERVE_ASPECT_RATIO=True "
                           "with YOLACT++'s mask re-scoring cannot be exported")

    def broken_export(*args):
        raise ValueError("a bug in the export")

    monkeypatch.setattr(onnx_runtime, "export_onnx_models", broken_export)
    with pytest.raises(ValueError, match="a bug in the export"):  # not a "skipped" note
        run_benchmark(_settings([small_yolact_config], tasks=["latency"], onnxruntime=("float32",),
                                output_dir=str(tmp_path)))


def test_unknown_precision_is_refused(small_yolact_config):
    with pytest.raises(ValueError, match=r"Unknown --onnxruntime precisions \['int4'\]; choose from float32, int8"):
        run_benchmark(_settings([small_yolact_config], tasks=["latency"], onnxruntime=("int8", "int4")))


def _coco_results(eval_dir):
    """The scores of the detections of coco_instances_results.json in ``eval_dir``, sorted, by image id."""
    with open(eval_dir / "inference" / "onnx_accuracy_val" / "coco_instances_results.json") as f:
        detections = json.load(f)
    by_image = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d["score"])
    return {image_id: sorted(scores) for image_id, scores in by_image.items()}


@pytest.fixture
def checkpoint(cfg, tmp_path):
    """A random small YOLACT checkpoint and its config: trained on 3 yolact_shapes images, tested on 2 others."""
    names = {"train": "onnx_accuracy_train", "val": "onnx_accuracy_val"}
    for split, count in (("train", 3), ("val", 2)):
        json_file = generate_yolact_shapes(str(tmp_path), split, count)
        register_coco_dataset(names[split], json_file, os.path.join(os.path.dirname(os.path.dirname(json_file)), split))
    cfg.MODEL.YOLACT.INPUT_SIZE = 96
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (names["train"],), (names["val"],)
    cfg.DATALOADER.NUM_WORKERS = 0
    config = tmp_path / "small_yolact.yaml"
    config.write_text(cfg.dump())
    weights = tmp_path / "model.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    yield str(config), str(weights)
    for name in names.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_accuracy_rows_of_onnx_models(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    config, weights = checkpoint
    out = tmp_path / "out"
    results = run_benchmark(_settings([], tasks=["accuracy"], eval_weights=[(config, weights)],
                                      onnxruntime=("float32", "int8"), output_dir=str(out)))
    eager, float32, int8 = results["accuracy"]
    assert (float32["precision"], float32["runtime"], int8["precision"], int8["runtime"]) == (
        "float32", "onnxruntime", "int8", "onnxruntime")
    for row in (float32, int8):
        assert ACCURACY_FIELDS <= set(row)
        assert (row["config"], row["weights"], row["dataset"]) == ("small_yolact", weights, "onnx_accuracy_val")
        first = DatasetCatalog.get("onnx_accuracy_val")[0]  # timed as read: the model resizes it
        assert row["image_size"] == eager["image_size"] == [first["height"], first["width"]] and row["median_ms"] > 0
    for key in ("box_AP", "box_AP50", "mask_AP", "mask_AP50"):  # the float32 graph scores as eager mode
        assert float32[key] == pytest.approx(eager[key], abs=0.01, nan_ok=True), key
    assert sorted(os.listdir(out / "onnx" / "small_yolact")) == ["model.onnx", "model_int8.onnx"]
    assert onnx_precision(str(out / "onnx" / "small_yolact" / "model_int8.onnx")) == "int8"
    # the evaluator saw the float32 graph's detections equal eager mode's, and int8 detections on every image
    results_of = {name: _coco_results(out / "eval" / "small_yolact" / name) for name in
                  ("eager_float32", "onnxruntime_float32", "onnxruntime_int8")}
    assert len(results_of["eager_float32"]) > 0 and results_of["onnxruntime_int8"].keys() == results_of["eager_float32"].keys()
    assert results_of["onnxruntime_float32"].keys() == results_of["eager_float32"].keys()
    for image_id, scores in results_of["eager_float32"].items():
        assert results_of["onnxruntime_float32"][image_id] == pytest.approx(scores, abs=1e-4)
    assert {"onnxruntime_float32", "onnxruntime_int8"} <= set(os.listdir(out / "eval" / "small_yolact"))
    assert not results["notes"]
