"""The suite: task selection, speed-ups within the run, the exported-model row and skipped accuracy."""
import pytest

from detectron2.modeling import build_model

from yolact_d2.benchmark import BenchmarkSettings, run_benchmark, suite
from yolact_d2.layers import precision as precision_module


def _settings(configs, **kwargs):
    return BenchmarkSettings(**{"configs": configs, "input_size": 96, "batch_sizes": (1,), "warmup": 0, "iters": 1,
                                "fixed_detections": 5, **kwargs})


class _FakeExported:
    """Stands for yolact_d2.export.ExportedYolact: the eager model of the config."""

    def __init__(self, path, cfg):
        self.path = path
        self.model = build_model(cfg).eval()

    def __call__(self, inputs):
        return self.model(inputs)


def test_latency_rows_speedups_and_exported_model(small_yolact_config, mask_rcnn_config, monkeypatch, tmp_path):
    monkeypatch.setattr(suite, "ExportedYolact", _FakeExported)
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
    assert {(r["precision"], r["runtime"]) for c, r in rows.items() if c[0] != "exported:model.ts"} == {
        ("float32", "eager")}
    assert (rows[("exported:model.ts", "default")]["precision"], rows[("exported:model.ts", "default")]["runtime"]) \
        == ("float32", "torchscript")
    assert [r["vs_float32"] for r in results["latency"]] == [1.0, 1.0, 1.0, 1.0, None]
    assert not results["notes"] and results["stages"] == results["flops"] == [] and results["nms"] is None


def test_every_precision_gets_its_rows_and_its_ratio_to_float32(small_yolact_config, mask_rcnn_config,
                                                              monkeypatch, tmp_path):
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: True)
    results = run_benchmark(_settings([small_yolact_config, mask_rcnn_config], tasks=["latency", "stages", "flops"],
                                      precisions=("float32", "bfloat16")))
    rows = {(r["config"], r["mode"], r["precision"]): r for r in results["latency"]}
    rcnn = "mask_rcnn_R_18_FPN_shapes"
    assert list(rows) == [(c, m, p) for c in ("small_yolact", rcnn) for m in ("default", "fixed")
                          for p in ("float32", "bfloat16")]
    assert {r["runtime"] for r in rows.values()} == {"eager"}
    for (config, mode, precision), row in rows.items():
        float32 = rows[(config, mode, "float32")]["median_ms"]
        assert row["vs_float32"] == pytest.approx(row["median_ms"] / float32)
        assert row["speedup"] == pytest.approx(rows[(rcnn, mode, "float32")]["median_ms"] / row["median_ms"])
        assert row["detections"] == [5] or mode == "default"
    assert [(r["config"], r["precision"]) for r in results["stages"]] == [
        ("small_yolact", "float32"), ("small_yolact", "bfloat16")]
    for stages in results["stages"]:
        assert stages["plain_ms"] == rows[("small_yolact", "fixed", stages["precision"])]["median_ms"]
    assert [r["config"] for r in results["flops"]] == ["small_yolact", rcnn]  # once: FLOPs have no precision
    assert not results["notes"]


def test_bfloat16_on_a_cpu_without_it_gives_the_float32_rows_with_a_note(small_yolact_config, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: False)
    results = run_benchmark(_settings([small_yolact_config], tasks=["latency"], precisions=("float32", "bfloat16"),
                                      fixed_detections=0))
    assert [(r["precision"], r["vs_float32"]) for r in results["latency"]] == [("float32", 1.0)]
    assert results["notes"] == [
        "bfloat16 runs in float32 on this cpu (no native bfloat16): its rows are the float32 ones"]
    assert results["settings"]["precisions"] == ("float32", "bfloat16")


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


@pytest.mark.parametrize("change,message", [
    ({"tasks": ["speed"]}, "Unknown tasks"), ({"batch_sizes": (0,)}, "Batch sizes"), ({"iters": 0}, "--iters"),
    ({"warmup": -1}, "--warmup"), ({"fixed_detections": -1}, "--fixed-detections"),
    ({"configs": ["a/x.yaml", "b/x.yaml"]}, "distinct file names"),
    ({"precisions": ("float32", "int8")}, r"--precisions \['float32', 'int8'\]: choose one or more of float32, "),
    ({"precisions": ()}, r"--precisions \[\]"), ({"precisions": ("float16",)}, "'float16' is for CUDA devices"),
    ({"opts": ["MODEL.YOLACT.PRECISION", "bfloat16"]}, "with --precisions, not with --opts"),
])
def test_invalid_settings(change, message):
    settings = _settings(["configs/embedded/yolact_R_18_shapes.yaml"])
    with pytest.raises(ValueError, match=message):
        run_benchmark(BenchmarkSettings(**{**settings.__dict__, **change}))


def test_each_config_runs_at_its_own_size_unless_input_size_says(small_yolact_config, mask_rcnn_config,
                                                                 monkeypatch):
    timed = []

    def measure_latency(model, inputs, **kwargs):
        timed.append(tuple(inputs[0]["image"].shape))
        return {"batch_size": len(inputs), "median_ms": 1.0, "detections": []}

    monkeypatch.setattr(suite, "measure_latency", measure_latency)
    own = run_benchmark(_settings([small_yolact_config, mask_rcnn_config], input_size=None, tasks=["latency"],
                                  fixed_detections=0))
    # YOLACT's INPUT_SIZE and the R-CNN's MIN_SIZE_TEST (its MAX_SIZE_TEST is larger)
    assert [(r["config"], r["input_size"]) for r in own["latency"]] == [
        ("small_yolact", 96), ("mask_rcnn_R_18_FPN_shapes", 256)]
    assert timed == [(3, 96, 96), (3, 256, 256)]
    given = run_benchmark(_settings([small_yolact_config], input_size=64, tasks=["latency"], fixed_detections=0))
    assert [r["input_size"] for r in given["latency"]] == [64] and timed[-1] == (3, 64, 64)
