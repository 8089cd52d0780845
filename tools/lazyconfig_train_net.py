#!/usr/bin/env python
"""
Train and evaluate YOLACT from a LazyConfig (a Python config file, detectron2's newer config system):

    python tools/lazyconfig_train_net.py --config-file configs/lazy/embedded/yolact_R_18_shapes.py
    python tools/lazyconfig_train_net.py --config-file configs/lazy/yolact_R_50_FPN_550.py --num-gpus 8 \
        dataloader.train.total_batch_size=64 train.output_dir=output/r50
    python tools/lazyconfig_train_net.py --config-file ... --eval-only train.init_checkpoint=output/r50/model_final.pth

The config file defines ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer`` (its
``params.model`` is set here), ``lr_multiplier`` and ``train`` (output_dir, init_checkpoint, max_iter,
amp.enabled, ddp, checkpointer, eval_period, log_period, device), as detectron2's ``configs/common/train.py``.
Overrides are ``key=value`` pairs after the flags; a key the config does not have is refused, with the closest
ones it has. Unlike detectron2's own script it trains multi-process on
CPUs and in mixed precision on a CPU with native bfloat16, as tools/train_net.py does.
"""
import logging
from typing import Iterator, List

from omegaconf import OmegaConf

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import default_argument_parser, default_setup, default_writers, hooks, launch
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from yolact_d2.config import close_keys_hint
from yolact_d2.engine import YolactCheckpointer, build_step_trainer, wrap_ddp
from yolact_d2.engine.trainer import (
    FiniteParameters, check_finite_losses, check_finite_parameters, check_total_batch_size,
)

logger = logging.getLogger("detectron2")


def _dotted_keys(node, prefix: str = "") -> Iterator[str]:
    """Every key of a plain container of a config, dotted: the nodes and the leaves (lists are leaves)."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield prefix + name
            yield from _dotted_keys(value, f"{prefix}{name}.")


def apply_overrides(cfg, overrides: List[str]):
    """
    detectron2's ``LazyConfig.apply_overrides`` of ``key=value`` strings, after checking that each key is one of
    ``cfg`` (which detectron2 would add silently, so that a misspelt ``train.max_itr=30`` ran the whole schedule):
    a KeyError names an unknown key and the closest existing ones.
    """
    keys = set(_dotted_keys(OmegaConf.to_container(cfg, resolve=False)))
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        if key not in keys:
            hint = close_keys_hint(key, keys, "the config")
            raise KeyError(f"Non-existent config key: {key} (in the overrides): {hint}")
    return LazyConfig.apply_overrides(cfg, overrides)


def do_test(cfg, model):
    """
    COCO evaluation of ``model`` on ``dataloader.test`` with ``dataloader.evaluator``; {} without an evaluator.
    A model with non-finite weights is refused (FloatingPointError).
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    check_finite_parameters(model, "before evaluation")
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def do_train(args, cfg):
    """Build everything from ``cfg``, train ``train.max_iter`` iterations (resuming with ``--resume``), evaluate."""
    check_total_batch_size(cfg.dataloader.train.total_batch_size, "dataloader.train.total_batch_size")
    model = instantiate(cfg.model).to(cfg.train.device)
    logger.info(f"Model:\n{model}")
    model.register_forward_hook(check_finite_losses)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = wrap_ddp(model, **cfg.train.ddp)
    trainer = build_step_trainer(model, train_loader, optimizer, amp=cfg.train.amp.enabled, device=cfg.train.device)
    checkpointer = YolactCheckpointer(model, cfg.train.output_dir, reinit_class_layers=True, trainer=trainer)
    main_process = comm.is_main_process()
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        FiniteParameters((cfg.train.checkpointer.period, cfg.train.eval_period)),  # before those hooks
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main_process else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if main_process else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # a checkpoint holds the iteration it finished: go on from the next one
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    cfg = apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, comm.get_rank(), name="yolact_d2")  # as default_setup does for detectron2's
    if args.eval_only:
        model = instantiate(cfg.model).to(cfg.train.device)
        YolactCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, wrap_ddp(model, **cfg.train.ddp))
    return do_train(args, cfg)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    # --num-gpus processes, each running main (on CPUs too, with train.device=cpu)
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, args=(args,))
