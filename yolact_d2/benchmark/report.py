"""
Reports of a benchmark's results (:func:`~.suite.run_benchmark`): tables on stdout, ``benchmark.json`` (the
results), ``benchmark.md`` (machine, settings and one section of tables per task) and ``ap_vs_latency.png``
(mask AP vs latency of the evaluated models, like Figure 1 of the YOLACT paper). Latency and accuracy rows are
per precision ("float32", "bfloat16"...) and runtime ("eager": the PyTorch model; an exported model's runtime).
"""
import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tabulate import tabulate

from .latency import REFERENCE_PRECISION, REFERENCE_RUNTIME

__all__ = ["JSON_FILE", "MARKDOWN_FILE", "PLOT_FILE", "build_sections", "format_text", "format_markdown",
           "ap_axis_limits", "plot_ap_vs_latency", "write_reports"]

JSON_FILE = "benchmark.json"
MARKDOWN_FILE = "benchmark.md"
PLOT_FILE = "ap_vs_latency.png"


@dataclass
class Table:
    title: str
    headers: List[str]
    rows: List[List]
    caption: str = ""


@dataclass
class Section:
    title: str
    tables: List[Table] = field(default_factory=list)
    empty: str = "Not measured (task not selected)."


def _num(x, digits: int = 1, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:{'+' if signed else ''},.{digits}f}"


def _counts(counts: List[int]) -> str:
    if not counts:
        return "-"
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def _size(row: Dict) -> str:
    return f"{row['input_size']}x{row['input_size']}"


def _input_setting(size: Optional[int]) -> str:
    return f"{size}x{size} for every config" if size else "each config's own size"


def _memory_method(rows: List[Dict]) -> str:
    return ", ".join(sorted({r["memory_method"] for r in rows}))


def _latency(results) -> Section:
    rows = results["latency"]
    section = Section("Latency")
    if not rows:
        return section
    reference = results["reference"]
    fixed = results["settings"]["fixed_detections"]
    section.tables.append(Table(
        "Inference latency per image",
        ["config", "mode", "input", "batch", "precision", "runtime", "median ms", "p90 ms", "images/s", "peak mem MiB",
         "detections/image", "vs float32", f"speed-up vs {reference} float32" if reference else "speed-up"],
        [[r["config"], r["mode"], _size(r), r["batch_size"], r["precision"], r["runtime"], _num(r["median_ms"]),
          _num(r["p90_ms"]), _num(r["images_per_s"], 2), _num(r["peak_memory_mb"]), _counts(r["detections"]),
          _num(r.get("vs_float32"), 2), _num(r.get("speedup"), 2)] for r in rows],
        "Batch time / batch size; median and 90th percentile of the timed runs after warm-up. Modes: default = "
        f"each model's own score threshold; fixed = score threshold 0 and exactly {fixed} detections per image "
        "(equal work). Runtime: eager = the PyTorch model. vs float32: the row's median / the median of the same "
        "config's float32 eager row, same mode and batch (< 1 is faster). Speed-up: the median of the reference's "
        "float32 eager row / the row's median, same mode and batch (> 1 is faster). Peak memory above the level "
        f"before the timed runs: {_memory_method(rows)}.",
    ))
    return section


def _stages(results) -> Section:
    section = Section("YOLACT stages")
    for r in results["stages"]:
        rows = [[s["stage"], _num(s["median_ms"]), _num(100 * s["share"]), _num(s["gmacs"], 2), _num(s["gmacs_per_s"])]
                for s in r["stages"]]
        rows += [["sum of stages", _num(r["sum_ms"]), "100.0", "", ""],
                 ["end-to-end (profiled)", _num(r["end_to_end_ms"]), "", "", ""],
                 ["end-to-end (plain forward: latency table)", _num(r["plain_ms"]), "", "", ""]]
        section.tables.append(Table(
            f"{r['config']} ({r['precision']}, {r['mode']} mode, input {_size(r)}, batch {r['batch_size']}, "
            f"{_counts(r['detections'])} detections)",
            ["stage", "median ms", "share %", "GMACs", "GMAC/s"], rows,
            "The model's forward under torch.profiler, each stage the duration of its record_function range "
            "(CUDA: its kernels' time); 'other' is the rest of the profiled forward. GMAC/s = fvcore GMACs of a "
            "convolutional stage / its median time.",
        ))
    return section


def _nms(results) -> Section:
    section = Section("NMS")
    nms = results["nms"]
    if not nms:
        return section
    w = nms["workload"]
    section.tables.append(Table(
        "Fast NMS vs cross-class Fast NMS vs standard NMS",
        ["variant", "median ms", "p90 ms", "kept", "common with StandardNMS", "precision", "recall"],
        [[r["name"], _num(r["median_ms"], 2), _num(r["p90_ms"], 2), r["kept"], r["common"], _num(r["precision"], 3),
          _num(r["recall"], 3)] for r in nms["rows"]],
        f"{w['anchors']} random boxes x {w['classes']} classes; IoU threshold {w['nms_thresh']}, top_k {w['top_k']}, "
        f"score threshold {w['score_thresh']}, at most {w['max_detections']} detections. Candidates per class "
        f"(score >= threshold): min {w['min_candidates_per_class']}, median {w['median_candidates_per_class']:.0f}, "
        f"so top_k binds when above {w['top_k']}. Common: (anchor, class) pairs also kept by StandardNMS; "
        "precision = common / kept, recall = common / kept by StandardNMS.",
    ))
    return section


def _flops(results) -> Section:
    section = Section("FLOPs and parameters")
    rows = results["flops"]
    if rows:
        section.tables.append(Table(
            "Inference FLOPs (one image) and parameters",
            ["config", "mode", "input", "GMACs", "params (M)", "trainable (M)", "ops not counted"],
            [[r["config"], r["mode"], _size(r), _num(r["gmacs"], 2), _num(r["params"] / 1e6, 2),
              _num(r["trainable_params"] / 1e6, 2), ", ".join(sorted(r["uncounted_ops"]))] for r in rows],
            "fvcore counts one fused multiply-add as one flop: GMACs. Element-wise ops and NMS are not counted; "
            "deformable convs count as the plain conv of their shape.",
        ))
    return section


def _training(results) -> Section:
    section = Section("Training")
    rows = results["train"]
    if rows:
        section.tables.append(Table(
            "Training iteration (forward + losses + backward + optimizer step)",
            ["config", "input", "batch", "optimizer", "precision", "median s/iter", "p90 s/iter", "images/s",
             "peak mem MiB"],
            [[r["config"], _size(r), r["batch_size"], r["optimizer"], r["precision"], _num(r["median_ms"] / 1000, 3),
              _num(r["p90_ms"] / 1000, 3), _num(r["images_per_s"], 2), _num(r["peak_memory_mb"])] for r in rows],
            f"Random weights, synthetic box + mask ground truth. Peak memory: {_memory_method(rows)}.",
        ))
    return section


def _accuracy(results) -> Section:
    section = Section("Accuracy", empty="No accuracy measured (task not selected, or no weights found).")
    rows = results["accuracy"]
    if rows:
        section.tables.append(Table(
            "COCO AP of trained weights, with their latency",
            ["config", "dataset", "precision", "runtime", "box AP", "box AP change", "box AP50", "mask AP",
             "mask AP change", "mask AP50", "median ms", "image"],
            [[r["config"], r["dataset"], r["precision"], r["runtime"], _num(r["box_AP"]),
              _num(r.get("box_AP_change"), signed=True), _num(r["box_AP50"]), _num(r["mask_AP"]),
              _num(r.get("mask_AP_change"), signed=True), _num(r["mask_AP50"]), _num(r["median_ms"]),
              "x".join(map(str, r["image_size"]))] for r in rows],
            "AP change: the row's AP minus that of the same config's float32 eager row on the dataset. Latency: "
            "batch 1, the dataset's first test image as the config's test loader prepares it.",
        ))
    return section


def build_sections(results: Dict) -> List[Section]:
    """The report's sections, one per task, each with its tables."""
    return [_latency(results), _stages(results), _nms(results), _flops(results), _training(results),
            _accuracy(results)]


def _settings_lines(results) -> List[str]:
    m, s = results["machine"], results["settings"]
    return [
        f"CPU: {m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads)",
        f"Device: {m['device']} ({m['device_name']})",
        f"torch {m['torch']} (CUDA {m['cuda']}), detectron2 {m['detectron2']}, Python {m['python']}, {m['platform']}",
        f"Input {_input_setting(s['input_size'])}, batch sizes {list(s['batch_sizes'])}, training batch "
        f"{s['train_batch_size']}, warm-up {s['warmup']}, timed runs {s['iters']}, "
        f"images: {', '.join(s['images']) if s['images'] else 'synthetic'}",
    ]


def format_text(results: Dict) -> str:
    """The report as plain-text tables (for stdout)."""
    parts = ["\n".join(_settings_lines(results))]
    for section in build_sections(results):
        parts.append(f"== {section.title} ==")
        if not section.tables:
            parts.append(section.empty)
        for t in section.tables:
            parts.append(f"{t.title}\n{tabulate(t.rows, t.headers, tablefmt='simple')}")
    parts += [f"Note: {n}" for n in results["notes"]]
    return "\n\n".join(parts)


def format_markdown(results: Dict, plot_file: Optional[str] = None) -> str:
    """The report in Markdown; ``plot_file`` (relative to the Markdown file) is shown in the accuracy section."""
    lines = ["# YOLACT benchmark", "", "## Machine", ""] + [f"- {line}" for line in _settings_lines(results)]
    for section in build_sections(results):
        lines += ["", f"## {section.title}", ""]
        if not section.tables:
            lines.append(f"_{section.empty}_")
        for t in section.tables:
            lines += [f"### {t.title}", "", tabulate(t.rows, t.headers, tablefmt="github"), ""]
            lines += [t.caption, ""] if t.caption else []
        if section.title == "Accuracy" and plot_file:
            lines += [f"![Mask AP vs latency]({plot_file})", ""]
    if results["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def _point_label(row: Dict) -> str:
    """A plotted accuracy row: its config, with its precision and runtime unless float32 and eager."""
    variant = [v for v, plain in ((row["precision"], REFERENCE_PRECISION), (row["runtime"], REFERENCE_RUNTIME))
               if v != plain]
    return row["config"] + (f" ({', '.join(variant)})" if variant else "")


_MIN_AP_SPAN = 2.0  # AP points: the least height of the plot's y axis


def _label_offsets(points: List[Dict]) -> List[int]:
    """
    Vertical label offsets (typographic points): a label goes below those of the earlier points of about the same
    AP, whatever their latency (labels are wider than the gaps between points).
    """
    offsets = []
    for i, r in enumerate(points):
        near = [offsets[j] for j, q in enumerate(points[:i]) if abs(q["mask_AP"] - r["mask_AP"]) <= 0.1 * _MIN_AP_SPAN]
        offsets.append(min(near) - 12 if near else 5)
    return offsets


def ap_axis_limits(low: float, high: float) -> Tuple[float, float]:
    """
    The AP axis of the plot from matplotlib's (``low``, ``high``): at least :data:`_MIN_AP_SPAN` high about its
    middle (a few hundredths of AP apart must not look like a gap), within AP's range [0, 100].
    """
    if high - low < _MIN_AP_SPAN:
        middle = (low + high) / 2
        low, high = middle - _MIN_AP_SPAN / 2, middle + _MIN_AP_SPAN / 2
    shift = max(0.0, -low) - max(0.0, high - 100.0)
    return max(0.0, low + shift), min(100.0, high + shift)


def plot_ap_vs_latency(rows: List[Dict], path: str, device: str = "") -> bool:
    """
    Mask AP vs median latency of the accuracy rows with a finite AP, one point per row (config, dataset,
    precision, runtime); False (no file) when there are none.
    """
    points = [r for r in rows if r["mask_AP"] is not None and math.isfinite(r["mask_AP"])]
    if not points:
        return False
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r, offset in zip(points, _label_offsets(points)):
        ax.scatter(r["median_ms"], r["mask_AP"])
        ax.annotate(_point_label(r), (r["median_ms"], r["mask_AP"]), textcoords="offset points", xytext=(5, offset))
    ax.set_xlabel("latency per image, ms (median, batch 1)")
    ax.set_ylabel("mask AP")
    ax.set_title(f"Mask AP vs latency{' on ' + device if device else ''}")
    ax.margins(0.2)  # room for the labels
    ax.set_ylim(*ap_axis_limits(*ax.get_ylim()))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the labels of the rightmost points stay in
    return True


def _jsonable(obj):
    """``obj`` with tuples as lists and non-finite floats as None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_reports(results: Dict, output_dir: str) -> Dict[str, str]:
    """
    Write the JSON, the Markdown and, with accuracy results, the PNG file (an earlier run's PNG is removed
    otherwise); returns kind ("json", "markdown", "plot") -> path of the files written.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, JSON_FILE), "markdown": os.path.join(output_dir, MARKDOWN_FILE)}
    with open(paths["json"], "w") as f:
        json.dump(_jsonable(results), f, indent=2)
    plot_path = os.path.join(output_dir, PLOT_FILE)
    plotted = plot_ap_vs_latency(results["accuracy"], plot_path, results["machine"]["device_name"])
    if plotted:
        paths["plot"] = plot_path
    elif os.path.exists(plot_path):  # an earlier run's
        os.remove(plot_path)
    with open(paths["markdown"], "w") as f:
        f.write(format_markdown(results, PLOT_FILE if plotted else None))
    return paths
