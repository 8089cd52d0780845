"""
The benchmark suite: every selected measurement of every config, in one process, on the same images and device,
gathered in one results dict (written out by :mod:`.report`).
"""
import dataclasses
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..export import ExportedYolact, preprocess_image
from ..layers import PRECISIONS, resolve_precision
from .accuracy import DEFAULT_EVAL_WEIGHTS, add_ap_changes, evaluate_accuracy
from .complexity import analyze_complexity
from .inputs import inference_inputs, read_images, synthetic_images, training_inputs
from .latency import REFERENCE_RUNTIME, add_precision_ratios, add_speedups, measure_latency
from .machine import machine_info
from .models import (
    DEFAULT_CONFIGS,
    benchmark_config,
    build_random_model,
    config_input_size,
    config_label,
    in_precision,
    is_yolact,
    resolve_config_file,
    resolve_path,
)
from .nms import compare_nms
from .onnx_runtime import (
    PRECISIONS as ONNX_PRECISIONS,
    RUNTIME as ONNX_RUNTIME,
    NotApplicable,
    evaluate_onnx_accuracy,
    exported_runtime,
    onnx_models,
    onnxruntime_missing,
)
from .stages import measure_stages
from .training import measure_training

__all__ = ["TASKS", "BenchmarkSettings", "run_benchmark"]

logger = logging.getLogger(__name__)

TASKS = ("latency", "stages", "nms", "flops", "train", "accuracy")


@dataclasses.dataclass
class BenchmarkSettings:
    """
    What to measure. Every config runs on ``device`` at ``input_size`` (None: each config's own,
    :func:`~.models.config_input_size`; every row reports its size) with random weights, at its own score
    threshold ("default" mode) and, unless ``fixed_detections`` is 0, at score threshold 0 with exactly
    ``fixed_detections`` detections per image ("fixed" mode, the equal-work comparison; also the mode of the
    stage breakdown and FLOP count). ``eval_weights`` (config, weights) pairs are evaluated by the "accuracy"
    task (None: the embedded dataset's checkpoints, skipped when absent). ``exported`` is a model file for
    ``yolact_d2.export.ExportedYolact`` with ``exported_config`` (default: the first YOLACT config).
    ``precisions``: the latency, stages and accuracy tasks run the eager models in each of them (YOLACT by
    ``MODEL.YOLACT.PRECISION``, others under autocast); a precision the device cannot run natively runs as
    :func:`yolact_d2.layers.resolve_precision` says (bfloat16 on a CPU without it: float32, with a note).
    ``onnxruntime`` precisions ("float32", "int8") add, for every YOLACT config, latency rows of its float32 model
    exported to ONNX (int8 calibrated on the benchmark images) and run by ONNX Runtime, and accuracy rows of the
    evaluated weights exported likewise (int8 calibrated on ``DATASETS.TRAIN`` images); the files go to
    ``output_dir/onnx``. They need "float32" among ``precisions``: the ONNX models are exported from it.
    """

    configs: Sequence[str] = DEFAULT_CONFIGS
    device: str = "cpu"
    input_size: Optional[int] = None
    batch_sizes: Sequence[int] = (1, 2)
    warmup: int = 1
    iters: int = 3
    tasks: Sequence[str] = TASKS
    fixed_detections: int = 100
    images: Sequence[str] = ()
    train_batch_size: int = 2
    eval_weights: Optional[Sequence[Tuple[str, str]]] = None
    exported: Optional[str] = None
    exported_config: Optional[str] = None
    onnxruntime: Sequence[str] = ()
    output_dir: str = "output/benchmark"
    opts: Sequence[str] = ()
    precisions: Sequence[str] = ("float32",)


def _check(s: BenchmarkSettings) -> None:
    unknown = sorted(set(s.tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"Unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    if min(s.batch_sizes, default=0) < 1 or s.train_batch_size < 1 or s.iters < 1:
        raise ValueError("Batch sizes and --iters must be >= 1")
    if s.warmup < 0 or s.fixed_detections < 0:
        raise ValueError("--warmup and --fixed-detections must be >= 0")
    if s.input_size is not None and s.input_size < 1:
        raise ValueError(f"--input-size must be >= 1 (or left out: each config's own size); got {s.input_size}")
    unknown = [p for p in s.precisions if p not in PRECISIONS]
    if unknown or not s.precisions:
        raise ValueError(f"--precisions {list(s.precisions)}: choose one or more of {', '.join(PRECISIONS)}")
    if "MODEL.YOLACT.PRECISION" in s.opts:
        raise ValueError("Set the precision with --precisions, not with --opts MODEL.YOLACT.PRECISION")
    unknown = sorted(set(s.onnxruntime) - set(ONNX_PRECISIONS))
    if unknown:
        raise ValueError(f"Unknown --onnxruntime precisions {unknown}; choose from {', '.join(ONNX_PRECISIONS)}")
    if s.onnxruntime and "float32" not in s.precisions:
        raise ValueError("--onnxruntime exports the float32 models: keep float32 among --precisions")
    labels = [config_label(c) for c in s.configs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Configs need distinct file names (they label the results); got {labels}")


def _images(s: BenchmarkSettings, size: int):
    """The size x size images of every run: the files (cycled) or synthetic ones, enough for the largest batch."""
    count = max(list(s.batch_sizes) + [s.train_batch_size])
    if not s.images:
        return synthetic_images(count, size)
    files = read_images(s.images, size)
    return [files[i % len(files)] for i in range(count)]


def _modes(s: BenchmarkSettings) -> List[Tuple[str, Optional[int]]]:
    return [("default", None)] + ([("fixed", s.fixed_detections)] if s.fixed_detections else [])


def _latency_rows(model, cfg, images, s, results, **fields) -> List[Dict]:
    """Time ``model`` (of ``cfg``) at every batch size; the rows, with ``fields``, go to ``results``."""
    rows = []
    for batch_size in s.batch_sizes:
        logger.info("latency: %s, batch %d", ", ".join(map(str, fields.values())), batch_size)
        row = measure_latency(model, inference_inputs(images[:batch_size], cfg),
                              warmup=s.warmup, iters=s.iters, device=s.device)
        rows.append({**fields, "input_size": images[0].shape[-1], **row})
    results["latency"].extend(rows)
    return rows


def _inference_tasks(spec, s, results) -> None:
    """Latency, stages and FLOPs of one config in each mode and precision."""
    label = config_label(spec)
    work_mode = _modes(s)[-1][0]
    for mode, num_detections in _modes(s):
        if mode != work_mode and "latency" not in s.tasks:
            continue
        complexity = None  # FLOPs do not depend on the precision: counted on the first one's model
        for precision in s.precisions:
            cfg = benchmark_config(spec, device=s.device, input_size=s.input_size,
                                   fixed_detections=num_detections, opts=s.opts, precision=precision)
            images = _images(s, config_input_size(cfg))
            model = in_precision(build_random_model(cfg, inference_inputs(images[:1], cfg)), cfg, precision)
            if "latency" in s.tasks:
                fields = {"config": label, "mode": mode, "precision": precision, "runtime": REFERENCE_RUNTIME}
                for row in _latency_rows(model, cfg, images, s, results, **fields):
                    if num_detections is not None and set(row["detections"]) != {num_detections}:
                        results["notes"].append(f"{label} ({precision}) emitted {row['detections']} detections in "
                                                f"fixed mode, not {num_detections}")
                if s.onnxruntime and is_yolact(cfg) and precision == "float32":
                    _onnxruntime_latency(label, mode, cfg, model, images, s, results)
            if mode == work_mode:
                complexity = _work_mode_tasks(label, mode, precision, cfg, model, inference_inputs(images[:1], cfg),
                                              s, results, complexity)


def _onnxruntime_latency(label, mode, cfg, model, images, s, results) -> None:
    """Latency rows of ``model`` exported to ONNX in each of ``s.onnxruntime``'s precisions (int8 calibrated on
    the benchmark's images)."""
    calibration = [preprocess_image(x["image"], cfg.MODEL.YOLACT.INPUT_SIZE) for x in inference_inputs(images, cfg)]
    try:
        models = onnx_models(model, cfg, calibration, s.onnxruntime, os.path.join(s.output_dir, "onnx", label, mode))
    except NotApplicable as e:
        results["notes"].append(f"ONNX Runtime latency of {label} skipped: {e}")
        return
    for precision, exported in models.items():
        _latency_rows(exported, cfg, images, s, results, config=label, mode=mode, precision=precision,
                      runtime=ONNX_RUNTIME)


def _work_mode_tasks(label, mode, precision, cfg, model, inputs, s, results, complexity=None) -> Optional[Dict]:
    """
    FLOPs and parameters (any model, once) and the stage breakdown (YOLACT, every precision) on one image.
    ``complexity``: :func:`analyze_complexity` of an earlier precision's model, or None to count now. Returns the
    complexity used (None when neither task was selected).
    """
    want_flops = "flops" in s.tasks and complexity is None
    want_stages = "stages" in s.tasks and is_yolact(cfg)
    if not want_flops and not want_stages:
        return complexity
    size = config_input_size(cfg)
    if complexity is None:
        logger.info("FLOPs: %s", label)
        complexity = analyze_complexity(model, inputs)
    if want_flops:
        results["flops"].append({"config": label, "mode": mode, "input_size": size,
                                 **{k: v for k, v in complexity.items() if k != "gmacs_by_module"}})
    if want_stages:
        logger.info("stages: %s, %s", label, precision)
        stages = measure_stages(model, inputs, warmup=s.warmup, iters=s.iters, device=s.device,
                                gmacs_by_module=complexity["gmacs_by_module"])
        plain = [r["median_ms"] for r in results["latency"]
                 if (r["config"], r["mode"], r["batch_size"], r["precision"], r["runtime"])
                 == (label, mode, len(inputs), precision, REFERENCE_RUNTIME)]
        results["stages"].append({"config": label, "mode": mode, "precision": precision, "input_size": size,
                                  **stages, "plain_ms": plain[0] if plain else None})
    return complexity


def _training_task(spec, s, results) -> None:
    label = config_label(spec)
    logger.info("training: %s", label)
    cfg = benchmark_config(spec, device=s.device, input_size=s.input_size, opts=s.opts)
    size = config_input_size(cfg)
    batch = training_inputs(_images(s, size)[: s.train_batch_size], cfg)
    results["train"].append({"config": label, "input_size": size,
                             **measure_training(cfg, batch, warmup=s.warmup, iters=s.iters)})


def _exported_task(yolact_specs, s, results) -> None:
    spec = s.exported_config or (yolact_specs[0] if yolact_specs else None)
    if spec is None:
        raise ValueError("--exported needs --exported-config when no YOLACT config is benchmarked")
    cfg = benchmark_config(spec, device=s.device, input_size=s.input_size, opts=s.opts)
    _latency_rows(ExportedYolact(s.exported, cfg), cfg, _images(s, config_input_size(cfg)), s, results,
                  config="exported:" + os.path.basename(s.exported), mode="default", **exported_runtime(s.exported))


def _accuracy_task(s, results) -> None:
    pairs = DEFAULT_EVAL_WEIGHTS if s.eval_weights is None else s.eval_weights
    for config, weights in pairs:
        path = resolve_path(weights)
        if not os.path.isfile(path):
            results["notes"].append(f"Accuracy of {config_label(config)} skipped: {weights} does not exist")
            continue
        for precision in s.precisions:
            logger.info("accuracy: %s with %s in %s", config_label(config), path, precision)
            results["accuracy"].extend(evaluate_accuracy(
                config, path, device=s.device, warmup=s.warmup, iters=s.iters, output_dir=s.output_dir,
                opts=s.opts, precision=precision, input_size=s.input_size))
        if s.onnxruntime and is_yolact(benchmark_config(config, device=s.device, opts=s.opts)):
            _onnxruntime_accuracy(config, path, s, results)


def _onnxruntime_accuracy(config, weights, s, results) -> None:
    """Accuracy rows of ``weights`` exported to ONNX in each of ``s.onnxruntime``'s precisions."""
    logger.info("accuracy: %s with %s, ONNX Runtime %s", config_label(config), weights, ", ".join(s.onnxruntime))
    try:
        results["accuracy"].extend(evaluate_onnx_accuracy(
            config, weights, s.onnxruntime, device=s.device, warmup=s.warmup, iters=s.iters,
            output_dir=s.output_dir, opts=s.opts, input_size=s.input_size))
    except NotApplicable as e:
        results["notes"].append(f"ONNX Runtime accuracy of {config_label(config)} skipped: {e}")


def _without_missing_onnxruntime(s: BenchmarkSettings, results) -> BenchmarkSettings:
    """``s`` without ONNX Runtime precisions, and a note, when onnxruntime cannot be imported."""
    note = onnxruntime_missing() if s.onnxruntime else None
    if note is None:
        return s
    results["notes"].append(note)
    return dataclasses.replace(s, onnxruntime=())


def _device_precisions(s: BenchmarkSettings, results) -> Tuple[str, ...]:
    """The distinct precisions ``s.precisions`` run in on ``s.device``, with a note for each that changes."""
    effective = []
    for precision in s.precisions:
        runs_in = resolve_precision(precision, s.device)
        if runs_in != precision:
            results["notes"].append(f"{precision} runs in {runs_in} on this {s.device} (no native {precision}): "
                                    f"its rows are the {runs_in} ones")
        if runs_in not in effective:
            effective.append(runs_in)
    return tuple(effective)


def run_benchmark(s: BenchmarkSettings) -> Dict:
    """
    Run the selected tasks. Returns a dict of ``machine``, ``settings``, ``models`` (label, config file,
    meta-architecture), ``reference`` (the first non-YOLACT config: latency speed-ups are relative to its float32
    eager rows), ``latency``, ``stages``, ``nms``, ``flops``, ``train`` and ``accuracy`` results and ``notes``.
    Latency and accuracy rows have a ``precision`` and a ``runtime`` ("eager" for the PyTorch model); latency rows
    a ``vs_float32`` ratio (:func:`~.latency.add_precision_ratios`), accuracy rows AP changes from float32
    (:func:`~.accuracy.add_ap_changes`), computed once every row exists. Latency, stages, FLOPs and training rows
    have their ``input_size``; accuracy rows the ``image_size`` they were timed on.
    """
    _check(s)
    results = {
        "machine": machine_info(s.device),
        "settings": dataclasses.asdict(s),
        "models": [],
        "reference": None,
        "latency": [], "stages": [], "nms": None, "flops": [], "train": [], "accuracy": [], "notes": [],
    }
    s = _without_missing_onnxruntime(s, results)
    s = dataclasses.replace(s, precisions=_device_precisions(s, results))
    for spec in s.configs:
        arch = benchmark_config(spec, device=s.device, opts=s.opts).MODEL.META_ARCHITECTURE
        results["models"].append({"config": config_label(spec), "file": resolve_config_file(spec),
                                  "meta_architecture": arch})
        if set(s.tasks) & {"latency", "stages", "flops"}:
            _inference_tasks(spec, s, results)
        if "train" in s.tasks:
            _training_task(spec, s, results)
    yolact_specs = [c for c, m in zip(s.configs, results["models"]) if m["meta_architecture"] == "YOLACT"]
    if s.exported and "latency" in s.tasks:
        _exported_task(yolact_specs, s, results)
    elif s.exported:
        results["notes"].append("--exported is timed by the latency task, which was not selected")
    if s.onnxruntime and not {"latency", "accuracy"} & set(s.tasks):
        results["notes"].append("--onnxruntime adds to the latency and accuracy tasks, neither of which was selected")
    results["reference"] = next((m["config"] for m in results["models"] if m["meta_architecture"] != "YOLACT"), None)
    if "nms" in s.tasks:
        logger.info("NMS comparison")
        results["nms"] = compare_nms(warmup=s.warmup, iters=s.iters, device=s.device)
    if "accuracy" in s.tasks:
        _accuracy_task(s, results)
    if results["reference"]:
        add_speedups(results["latency"], results["reference"])
    add_precision_ratios(results["latency"])
    add_ap_changes(results["accuracy"])
    return results
