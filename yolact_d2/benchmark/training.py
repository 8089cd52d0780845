"""Training speed: seconds per iteration (forward, losses, backward, SGD step) on a fixed synthetic batch."""
from typing import Dict, Sequence

from detectron2.config import CfgNode
from detectron2.utils.events import EventStorage

from ..engine import YolactTrainer
from .models import build_random_model
from .timing import measure, summarize

__all__ = ["TRAIN_LR", "measure_training"]

# The step's cost does not depend on the learning rate; a small one keeps random weights from diverging
# (detectron2's RPN raises on non-finite proposals) during the few timed iterations.
TRAIN_LR = 1e-5


def measure_training(cfg: CfgNode, batch: Sequence[Dict], *, warmup: int, iters: int) -> Dict:
    """
    Time training iterations of the config's model (random weights, see :func:`~.models.build_random_model`,
    ``model.train()``) on ``batch`` (input
    dicts with ``instances``): forward with losses, backward and a step of detectron2's SGD (the config's
    momentum, weight decay, parameter groups and gradient clipping, learning rate :data:`TRAIN_LR`).

    Returns:
        dict: ``batch_size``, ``median_ms`` / ``p90_ms`` / ``mean_ms`` per iteration, ``images_per_s``,
        ``peak_memory_mb`` and ``memory_method`` (see :mod:`.timing`).
    """
    cfg = cfg.clone()
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BASE_LR = TRAIN_LR
    model = build_random_model(cfg, batch).train()
    optimizer = YolactTrainer.build_optimizer(cfg, model)

    def step():
        loss = sum(model(list(batch)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with EventStorage():  # detectron2's models record training statistics in it
        m = measure(step, warmup=warmup, iters=iters, device=cfg.MODEL.DEVICE)
    stats = summarize(m.seconds)
    return {
        "batch_size": len(batch),
        **stats,
        "images_per_s": 1000.0 * len(batch) / stats["median_ms"],
        "peak_memory_mb": m.peak_memory_mb,
        "memory_method": m.memory_method,
    }
