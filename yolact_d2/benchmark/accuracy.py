"""
Accuracy beside speed: COCO box and mask AP of trained weights on a config's ``DATASETS.TEST`` (detectron2's
COCOEvaluator through :meth:`YolactTrainer.test`), with the latency of that model at its own test settings, in a
precision (see :func:`~.models.in_precision`), and the AP change from float32.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..engine import YolactTrainer
from .latency import REFERENCE_PRECISION, REFERENCE_RUNTIME, measure_latency
from .models import benchmark_config, build_trained_model, config_label, in_precision

__all__ = ["DEFAULT_EVAL_WEIGHTS", "parse_eval_weights", "evaluate_accuracy", "accuracy_rows", "add_ap_changes"]

# The embedded dataset's checkpoints, as tools/train_net.py writes them (dev/run_main.sh).
DEFAULT_EVAL_WEIGHTS = (
    ("configs/embedded/yolact_R_18_shapes.yaml", "output/embedded/yolact_R_18_shapes/model_final.pth"),
    ("configs/embedded/yolact_plus_R_18_shapes.yaml", "output/embedded/yolact_plus_R_18_shapes/model_final.pth"),
    ("configs/embedded/mask_rcnn_R_18_FPN_shapes.yaml", "output/embedded/mask_rcnn_R_18_FPN_shapes/model_final.pth"),
)


def parse_eval_weights(pairs: Sequence[str]) -> List[Tuple[str, str]]:
    """``CONFIG=WEIGHTS`` strings -> (config, weights) pairs."""
    parsed = []
    for pair in pairs:
        config, sep, weights = pair.partition("=")
        if not sep or not config or not weights:
            raise ValueError(f"--eval-weights takes CONFIG=WEIGHTS pairs; got '{pair}'")
        parsed.append((config, weights))
    return parsed


def evaluate_accuracy(
    config: str, weights: str, *, device: str, warmup: int, iters: int, output_dir: str, opts: Sequence[str] = (),
    precision: str = "float32", input_size: Optional[int] = None,
) -> List[Dict]:
    """
    Evaluate ``weights`` with ``config`` (its own thresholds, at ``input_size`` or its own, see
    :func:`~.models.benchmark_config`; ``opts`` applied) in ``precision``
    (as :func:`yolact_d2.layers.resolve_precision` returns it for ``device``) on each dataset of its
    ``DATASETS.TEST``, then time the model on that dataset's first test image as its test loader prepares it
    (batch 1).

    Returns:
        per dataset: ``config``, ``weights``, ``dataset``, ``precision``, ``runtime`` ("eager"), ``box_AP``,
        ``box_AP50``, ``mask_AP``, ``mask_AP50`` (COCO, in %), ``median_ms``, ``p90_ms`` and ``image_size`` (the
        timed image's (H, W)).
    """
    cfg = benchmark_config(config, device=device, opts=opts, weights=weights, input_size=input_size,
                           precision=precision)
    cfg.OUTPUT_DIR = os.path.join(output_dir, "eval", config_label(config), f"{REFERENCE_RUNTIME}_{precision}")
    model = in_precision(build_trained_model(cfg), cfg, precision)
    return accuracy_rows(cfg, model, config=config, weights=weights, device=device, warmup=warmup, iters=iters,
                         precision=precision, runtime=REFERENCE_RUNTIME)


def accuracy_rows(
    cfg, model, *, config: str, weights: str, device: str, warmup: int, iters: int, **fields
) -> List[Dict]:
    """
    Evaluate ``model`` (the eager model, or any callable taking detectron2 inputs, e.g. an ``ExportedYolact``)
    on each dataset of ``cfg.DATASETS.TEST`` with detectron2's evaluator (:meth:`YolactTrainer.test`, writing to
    ``cfg.OUTPUT_DIR``) and time it on that dataset's first test image (batch 1). Returns the rows of
    :func:`evaluate_accuracy`, each with ``fields`` added (e.g. ``precision`` and ``runtime``).
    """
    results = YolactTrainer.test(cfg, model)
    if len(cfg.DATASETS.TEST) == 1:  # detectron2 returns a single dataset's results unwrapped
        results = {cfg.DATASETS.TEST[0]: results}
    rows = []
    for dataset, res in results.items():
        inputs = next(iter(YolactTrainer.build_test_loader(cfg, dataset)))
        speed = measure_latency(model, inputs, warmup=warmup, iters=iters, device=device)
        rows.append({
            "config": config_label(config),
            "weights": weights,
            "dataset": dataset,
            "box_AP": res["bbox"]["AP"],
            "box_AP50": res["bbox"]["AP50"],
            "mask_AP": res["segm"]["AP"],
            "mask_AP50": res["segm"]["AP50"],
            "median_ms": speed["median_ms"],
            "p90_ms": speed["p90_ms"],
            "image_size": list(inputs[0]["image"].shape[-2:]),
            **fields,
        })
    return rows


def _ap_change(row: Dict, reference: Optional[Dict], key: str) -> Optional[float]:
    if reference is None or row[key] is None or reference[key] is None:
        return None
    return row[key] - reference[key]


def add_ap_changes(rows: List[Dict]) -> None:
    """
    Set ``box_AP_change`` and ``mask_AP_change`` of every accuracy row (dicts with ``config``, ``dataset``,
    ``precision``, ``runtime``, ``box_AP``, ``mask_AP``; any runtime): its AP minus that of the float32 eager
    row of the same config and dataset (negative: lost accuracy). None without such a row or AP.
    """
    reference = {(r["config"], r["dataset"]): r for r in rows
                 if r["precision"] == REFERENCE_PRECISION and r["runtime"] == REFERENCE_RUNTIME}
    for row in rows:
        ref = reference.get((row["config"], row["dataset"]))
        row["box_AP_change"] = _ap_change(row, ref, "box_AP")
        row["mask_AP_change"] = _ap_change(row, ref, "mask_AP")
