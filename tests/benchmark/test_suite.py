"""The suite: task selection, speed-ups within the run, the exported-model row and skipped accuracy."""
import sys
import types

import pytest

from detectron2.modeling import build_model

from yolact_d2.benchmark import BenchmarkSettings, run_benchmark


def _settings(configs, **kwargs):
    return BenchmarkSettings(configs=configs, input_size=96, batch_sizes=(1,), warmup=0, iters=1, fixed_detections=5,
                             **kwargs)


class _FakeExported:
    """Stands for yolact_d2.export.ExportedYolact: the eager model of the config."""

    def __init__(self, path, cfg):
        self.path = path
        self.model = build_model(cfg).eval()

    def __call__(self, inputs):
        return self.model(inputs)


def test_latency_rows_speedups_and_exported_model(small_yolact_config, mask_rcnn_config, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "yolact_d2.export", types.SimpleNamespace(ExportedYolact=_FakeExported))
    results = run_benchmark(_settings([small_yolact_config, mask_rcnn_config], tasks=["latency"],
                                      exported=str(tmp_path / "model.ts")))
    assert results["reference"] == "mask_rcnn_R_18_FPN_shapes"
    rows = {(r["config"], r["mode"]): r for r in results["latency"]}
    rcnn = "mask_rcnn_R_18_FPN_shapes"
    assert set(rows) == {("small_yolact", "default"), ("small_yolact", "fixed"), (rcnn, "default"), (rcnn, "fixed"),
                         ("exported:model.ts", "default")}
    assert rows[("small_yolact", "fixed")]["detections"] == rows[(rcnn, "fixed")]["detections"] == [5]
    assert rows[(rcnn, "fixed")]["speedup"] == 1.0
    assert rows[("exported:model.ts", "default")]["speedup"] > 0
    assert not results["notes"] and results["stages"] == results["flops"] == [] and results["nms"] is None


def test_missing_export_module_is_a_clear_error(small_yolact_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "yolact_d2.export", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="--exported needs ExportedYolact from yolact_d2.export"):
        run_benchmark(_settings([small_yolact_config], tasks=["latency"], exported="model.ts"))


def test_stages_and_flops_without_latency(small_yolact_config):
    results = run_benchmark(_settings([small_yolact_config], tasks=["stages", "flops"]))
    assert [(r["config"], r["mode"]) for r in results["flops"]] == [("small_yolact", "fixed")]
    (stages,) = results["stages"]
    assert stages["mode"] == "fixed" and stages["detections"] == [5] and stages["plain_ms"] is None
    assert results["latency"] == [] and results["reference"] is None


def test_accuracy_without_weights_is_skipped_with_a_note(small_yolact_config, tmp_path):
    results = run_benchmark(_settings([], tasks=["accuracy"], eval_weights=[(small_yolact_config, "missing.pth")],
                                      output_dir=str(tmp_path)))
    assert results["accuracy"] == []
    assert results["notes"] == ["Accuracy of small_yolact skipped: missing.pth does not exist"]


@pytest.mark.parametrize("change", [{"tasks": ["speed"]}, {"batch_sizes": (0,)}, {"iters": 0}, {"warmup": -1},
                                    {"fixed_detections": -1}, {"configs": ["a/x.yaml", "b/x.yaml"]}])
def test_invalid_settings(change):
    settings = _settings(["configs/embedded/yolact_R_18_shapes.yaml"])
    with pytest.raises(ValueError):
        run_benchmark(BenchmarkSettings(**{**settings.__dict__, **change}))
