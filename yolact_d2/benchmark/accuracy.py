"""
Accuracy beside speed: COCO box and mask AP of trained weights on a config's ``DATASETS.TEST`` (detectron2's
COCOEvaluator through :meth:`YolactTrainer.test`), with the latency of that model at its own test settings.
"""
import os
from typing import Dict, List, Sequence, Tuple

from ..engine import YolactTrainer
from .latency import measure_latency
from .models import build_trained_model, config_label, load_config

__all__ = ["DEFAULT_EVAL_WEIGHTS", "parse_eval_weights", "evaluate_accuracy", "accuracy_rows"]

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
    config: str, weights: str, *, device: str, warmup: int, iters: int, output_dir: str, opts: Sequence[str] = ()
) -> List[Dict]:
    """
    Evaluate ``weights`` with ``config`` (its own input size and thresholds; ``opts`` applied) on each dataset
    of its ``DATASETS.TEST``, then time the model on that dataset's first test image as its test loader
    prepares it (batch 1).

    Returns:
        per dataset: ``config``, ``weights``, ``dataset``, ``box_AP``, ``box_AP50``, ``mask_AP``, ``mask_AP50``
        (COCO, in %), ``median_ms``, ``p90_ms`` and ``image_size`` (the timed image's (H, W)).
    """
    cfg = load_config(config, device=device, opts=opts)
    cfg.MODEL.WEIGHTS = weights
    cfg.OUTPUT_DIR = os.path.join(output_dir, "eval", config_label(config))
    model = build_trained_model(cfg)
    return accuracy_rows(cfg, model, config=config, weights=weights, device=device, warmup=warmup, iters=iters)


def accuracy_rows(
    cfg, model, *, config: str, weights: str, device: str, warmup: int, iters: int, **fields
) -> List[Dict]:
    """
    Evaluate ``model`` (the eager model, or any callable taking detectron2 inputs, e.g. an ``ExportedYolact``)
    on each dataset of ``cfg.DATASETS.TEST`` with detectron2's evaluator (:meth:`YolactTrainer.test`, writing to
    ``cfg.OUTPUT_DIR``) and time it on that dataset's first test image (batch 1). Returns the rows of
    :func:`evaluate_accuracy`, each with ``fields`` added.
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
