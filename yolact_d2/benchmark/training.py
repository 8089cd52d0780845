"""Training speed: seconds per iteration (forward, losses, backward, optimizer step) on a fixed synthetic batch."""
import itertools
from typing import Dict, Sequence

import torch

from detectron2.config import CfgNode
from detectron2.utils.events import EventStorage

from ..engine import YolactTrainer, build_step_trainer
from .models import build_random_model
from .timing import measure, summarize

__all__ = ["TRAIN_LR", "measure_training"]

# The step's cost does not depend on the learning rate; a small one keeps random weights from diverging
# (detectron2's RPN raises on non-finite proposals) during the few timed iterations.
TRAIN_LR = 1e-5


def measure_training(cfg: CfgNode, batch: Sequence[Dict], *, warmup: int, iters: int) -> Dict:
    """
    Time training iterations of the config's model (random weights, see :func:`~.models.build_random_model`,
    ``model.train()``) on ``batch`` (input dicts with ``instances``): the step of the training loop that
    ``YolactTrainer`` would run (:func:`~yolact_d2.engine.build_step_trainer`: forward with losses, backward,
    a step of the config's optimizer, :meth:`YolactTrainer.build_optimizer`, with its parameter groups and
    gradient clipping, learning rate :data:`TRAIN_LR`; in mixed precision when ``SOLVER.AMP.ENABLED`` and the
    device runs it natively).

    Returns:
        dict: ``batch_size``, ``optimizer`` (the optimizer's class name), ``precision`` ("float32", or the
        autocast dtype's name), ``median_ms`` / ``p90_ms`` / ``mean_ms`` per iteration, ``images_per_s``,
        ``peak_memory_mb`` and ``memory_method`` (see :mod:`.timing`).
    """
    cfg = cfg.clone()
    cfg.SOLVER.BASE_LR = TRAIN_LR
    model = build_random_model(cfg, batch).train()
    optimizer = YolactTrainer.build_optimizer(cfg, model)
    trainer = build_step_trainer(
        model, itertools.repeat(list(batch)), optimizer, amp=cfg.SOLVER.AMP.ENABLED, device=cfg.MODEL.DEVICE
    )
    with EventStorage():  # the step records its losses in it
        m = measure(trainer.run_step, warmup=warmup, iters=iters, device=cfg.MODEL.DEVICE)
    stats = summarize(m.seconds)
    return {
        "batch_size": len(batch),
        "optimizer": type(optimizer).__name__,
        # AMPTrainer and AutocastTrainer name their autocast dtype "precision"; SimpleTrainer has none
        "precision": str(getattr(trainer, "precision", torch.float32)).replace("torch.", ""),
        **stats,
        "images_per_s": 1000.0 * len(batch) / stats["median_ms"],
        "peak_memory_mb": m.peak_memory_mb,
        "memory_method": m.memory_method,
    }
