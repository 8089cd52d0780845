"""Report writers: valid JSON, Markdown with every section, the AP-vs-latency PNG, the stdout tables."""
import json

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from yolact_d2.benchmark import report as report_module
from yolact_d2.benchmark.machine import machine_info
from yolact_d2.benchmark.report import ap_axis_limits, format_markdown, format_text, write_reports

SECTIONS = ("## Machine", "## Latency", "## YOLACT stages", "## NMS", "## FLOPs and parameters", "## Training",
            "## Accuracy")


def _results(with_data: bool):
    settings = {"input_size": None, "batch_sizes": [1], "train_batch_size": 2, "warmup": 0, "iters": 1,
                "images": [], "fixed_detections": 10}
    results = {"machine": machine_info("cpu"), "settings": settings, "models": [], "reference": None,
               "latency": [], "stages": [], "nms": None, "flops": [], "train": [], "accuracy": [], "notes": []}
    if not with_data:
        return results
    memory = {"peak_memory_mb": 12.5, "memory_method": "peak RSS growth (VmHWM)"}
    stage = {"median_ms": 4.0, "p90_ms": 5.0, "mean_ms": 4.2, "share": 0.5}
    results.update({
        "reference": "mask_rcnn",
        "latency": [
            {"config": c, "mode": "fixed", "input_size": size, "batch_size": 1, "precision": p, "runtime": rt,
             "median_ms": ms,
             "p90_ms": ms, "mean_ms": ms, "images_per_s": 1000 / ms, "detections": [10], "speedup": 20.0 / ms,
             "vs_float32": vs, **memory}
            for c, size, p, rt, ms, vs in (
                ("yolact", 256, "float32", "eager", 10.0, 1.0), ("yolact", 256, "bfloat16", "eager", 4.0, 0.4),
                ("yolact", 256, "int8", "onnxruntime", 5.0, 0.5), ("mask_rcnn", 320, "float32", "eager", 20.0, 1.0))
        ],
        "stages": [{"config": "yolact", "mode": "fixed", "precision": "bfloat16", "input_size": 256, "batch_size": 1, "detections": [10],
                    "sum_ms": 8.0, "end_to_end_ms": 8.1, "plain_ms": 7.9, "stages": [
                        {"stage": "backbone (ResNet)", "gmacs": 0.3, "gmacs_per_s": 75.0, **stage},
                        {"stage": "decode + NMS", "gmacs": None, "gmacs_per_s": None, **stage}]}],
        "nms": {"workload": {"anchors": 19248, "classes": 80, "nms_thresh": 0.5, "top_k": 200, "score_thresh": 0.05,
                             "second_score_thresh": False, "max_detections": 100, "min_candidates_per_class": 900,
                             "median_candidates_per_class": 1000.0},
                "rows": [{"name": "StandardNMS", "median_ms": 3.0, "p90_ms": 3.5, "mean_ms": 3.1, "kept": 100,
                          "reference_kept": 100, "common": 100, "precision": 1.0, "recall": 1.0}]},
        "flops": [{"config": "yolact", "mode": "fixed", "input_size": 256, "gmacs": 0.6, "params": 12_000_000,
                   "trainable_params": 11_000_000, "uncounted_ops": {"aten::triu": 1}}],
        "train": [{"config": "yolact", "input_size": 256, "batch_size": 2, "optimizer": "AdamW", "precision": "bfloat16", "median_ms": 250.0,
                   "p90_ms": 260.0, "mean_ms": 255.0, "images_per_s": 8.0, **memory}],
        "accuracy": [
            {"config": c, "weights": "w.pth", "dataset": "shapes_val", "precision": p, "runtime": rt, "box_AP": ap,
             "box_AP50": ap, "mask_AP": ap, "mask_AP50": ap, "box_AP_change": change, "mask_AP_change": change,
             "median_ms": ms, "p90_ms": ms, "image_size": [320, 320]}
            for c, p, rt, ap, change, ms in (
                ("yolact", "float32", "eager", 40.0, 0.0, 30.0), ("mask_rcnn", "float32", "eager", 45.0, 0.0, 90.0),
                ("untrained", "float32", "eager", float("nan"), None, 5.0),
                ("yolact", "bfloat16", "eager", 39.75, -0.25, 12.0),
                ("yolact", "int8", "onnxruntime", 38.5, -1.5, 15.0))
        ],
        "notes": ["a note"],
    })
    return results


def _strict_json(path):
    def reject(constant):
        raise ValueError(f"not valid JSON: {constant}")

    with open(path) as f:
        return json.load(f, parse_constant=reject)


def test_reports_have_every_section_and_a_plot(tmp_path):
    paths = write_reports(_results(True), str(tmp_path))
    assert set(paths) == {"json", "markdown", "plot"}
    data = _strict_json(paths["json"])
    assert data["accuracy"][2]["mask_AP"] is None  # NaN is written as null
    markdown = (tmp_path / "benchmark.md").read_text()
    positions = [markdown.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    for text in ("speed-up vs mask_rcnn float32", "| yolact ", "vs float32 |", "| bfloat16    | eager       |",
                 "| int8        | onnxruntime |", " 0.4 |", "| box AP change ", "| -0.2 ", "| -1.5 ", "| +0.0 ",
                 "yolact (bfloat16, fixed mode, input 256x256, batch 1, 10 detections)", "end-to-end (profiled)", "StandardNMS",
                 "aten::triu",
                 "median s/iter", "| bfloat16    |", "![Mask AP vs latency](ap_vs_latency.png)", "- a note",
                 data["machine"]["cpu"]):
        assert text in markdown, text
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_empty_results_say_what_was_not_measured_and_drop_an_old_plot(tmp_path):
    write_reports(_results(True), str(tmp_path))
    paths = write_reports(_results(False), str(tmp_path))
    assert set(paths) == {"json", "markdown"} and not (tmp_path / "ap_vs_latency.png").exists()
    markdown = (tmp_path / "benchmark.md").read_text()
    assert all(s in markdown for s in SECTIONS)
    assert markdown.count("Not measured (task not selected).") == 5
    assert _strict_json(paths["json"])["latency"] == []


@pytest.mark.parametrize("with_data", [True, False])
def test_text_and_markdown_render(with_data):
    results = _results(with_data)
    text = format_text(results)
    assert "== Latency ==" in text and "== Accuracy ==" in text
    assert ("Note: a note" in text) == with_data
    assert format_markdown(results).startswith("# YOLACT benchmark\n")


def test_the_plot_has_one_labelled_point_per_config_precision_and_runtime(tmp_path, monkeypatch):
    labels = []
    monkeypatch.setattr(Axes, "annotate", lambda ax, text, *args, **kwargs: labels.append(text))
    assert report_module.plot_ap_vs_latency(_results(True)["accuracy"], str(tmp_path / "plot.png"))
    assert labels == ["yolact", "mask_rcnn", "yolact (bfloat16)", "yolact (int8, onnxruntime)"]  # NaN AP: no point


def test_every_table_shows_each_rows_input_size():
    markdown = format_markdown(_results(True))
    assert "Input each config's own size" in markdown
    assert "| config    | mode   | input   |   batch |" in markdown  # latency
    assert "| mask_rcnn | fixed  | 320x320 |       1 |" in markdown and "| yolact    | fixed  | 256x256 |" in markdown
    assert "| config   | mode   | input   |   GMACs |" in markdown  # FLOPs
    assert "| config   | input   |   batch | optimizer   | precision   |" in markdown  # training
    assert "| yolact   | 256x256 |       2 | AdamW       | bfloat16    |" in markdown
    settings = _results(False)
    settings["settings"]["input_size"] = 550
    assert "Input 550x550 for every config" in format_markdown(settings)


@pytest.mark.parametrize("limits,expected", [
    ((-0.001, 0.001), (0.0, 2.0)),  # one point at AP 0: not below 0
    ((99.99, 100.01), (98.0, 100.0)),  # one at 100: not above 100
    ((39.9, 40.1), (39.0, 41.0)),  # tiny spread: 2 AP high about its middle
    ((-5.0, 105.0), (0.0, 100.0)),  # margins beyond AP's range are cut
    ((20.0, 45.0), (20.0, 45.0)),
])
def test_the_ap_axis_is_at_least_two_points_high_within_0_and_100(limits, expected):
    assert ap_axis_limits(*limits) == pytest.approx(expected)


def test_a_single_point_at_ap_0_plots_from_0(tmp_path, monkeypatch):
    limits = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: limits.append(fig.axes[0].get_ylim()))
    row = _results(True)["accuracy"][0]
    assert report_module.plot_ap_vs_latency([{**row, "mask_AP": 0.0}], str(tmp_path / "plot.png"))
    assert limits == [pytest.approx((0.0, 2.0))]
