"""detectron2's DefaultTrainer, adapted to YOLACT's data, to distributed training and to mixed precision on CPUs."""
import json
import logging
import math
import os
import weakref
from typing import Mapping, Optional

import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.env import TORCH_VERSION
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import setup_logger

from ..data.build import build_yolact_test_loader, build_yolact_train_loader, check_num_classes
from ..evaluation import YolactCOCOEvaluator
from ..layers import cpu_has_native_bfloat16
from ..utils.detectron2_adapter import set_step_trainer
from .checkpoint import YolactCheckpointer

__all__ = [
    "AutocastModel", "AutocastTrainer", "FiniteParameters", "YolactTrainer", "build_adamw", "build_step_trainer",
    "wrap_ddp", "check_finite_losses", "check_finite_parameters", "check_total_batch_size", "drop_metrics_from",
]

logger = logging.getLogger(__name__)


def wrap_ddp(model: torch.nn.Module, broadcast_buffers: bool = False, **ddp_kwargs) -> torch.nn.Module:
    """
    DistributedDataParallel when there are several processes, on GPU (one device per process) or CPU
    (gloo; detectron2's ``create_ddp_model`` passes ``device_ids`` even for a CPU module, which DDP refuses).
    ``ddp_kwargs``: more of DistributedDataParallel's arguments (e.g. ``find_unused_parameters``).
    """
    on_gpu = next(model.parameters()).device.type == "cuda"
    device_ids = [comm.get_local_rank()] if on_gpu else None
    return create_ddp_model(model, broadcast_buffers=broadcast_buffers, device_ids=device_ids, **ddp_kwargs)


def check_finite_losses(module: torch.nn.Module, inputs, outputs) -> None:
    """
    A forward hook of the model: in training, where the model returns its loss terms, stop with an error naming
    each term that is NaN or infinite and the iteration, before the backward pass spreads it into the weights.
    detectron2's trainer reports only that their sum is not finite, after the backward pass, and on the
    first process only. The terms are checked together, with one device synchronisation per step.
    """
    if not module.training or not isinstance(outputs, dict) or not outputs:
        return
    if bool(torch.stack([torch.isfinite(value.detach()).all() for value in outputs.values()]).all()):
        return
    values = {name: value.detach().float().sum().item() for name, value in outputs.items()}
    terms = ", ".join(f"{name} = {value}" for name, value in values.items() if not math.isfinite(value))
    all_terms = {name: round(value, 6) for name, value in values.items()}
    raise FloatingPointError(
        f"Loss became non-finite at iteration {get_event_storage().iter}: {terms} (all terms: {all_terms}). "
        f"{_NON_FINITE_ADVICE}; the last checkpoint in OUTPUT_DIR is not affected"
    )


# What to try when training diverges.
_NON_FINITE_ADVICE = "Lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or enable SOLVER.CLIP_GRADIENTS"


def check_finite_parameters(model: nn.Module, when: str) -> None:
    """
    Stop with a FloatingPointError naming the parameters of ``model`` that hold a NaN or infinity (``when``:
    "after iteration 41", "before evaluation"), so that neither a checkpoint nor an evaluation is made of them.
    A NaN or infinity anywhere makes the sum of all weights non-finite: one reduction, one device synchronisation.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    if not params or bool(torch.stack([p.sum(dtype=torch.float32) for p in params.values()]).sum().isfinite()):
        return
    bad = [name for name, p in params.items() if not torch.isfinite(p).all()]
    if not bad:  # finite weights whose sum overflowed
        return
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    raise FloatingPointError(
        f"Non-finite weights {when}: {shown}. {_NON_FINITE_ADVICE}, and train again from the last checkpoint "
        f"with finite weights"
    )


class FiniteParameters(HookBase):
    """
    Before the checkpointer and the evaluation of a step, stop training with a named error
    (:func:`check_finite_parameters`) when the step left non-finite weights, e.g. from a non-finite gradient of
    finite losses. Checked after the steps whose weights are saved or evaluated: every ``period`` iterations for
    each of ``periods`` (those of the checkpointer and of the evaluation; 0 for none) and after the last one. In
    between, a non-finite weight makes the next forward's losses non-finite, which :func:`check_finite_losses`
    reports.
    """

    def __init__(self, periods):
        self.periods = [int(p) for p in periods if p > 0]

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter >= self.trainer.max_iter or any(next_iter % p == 0 for p in self.periods):
            check_finite_parameters(self.trainer.model, f"after iteration {self.trainer.iter}")


def check_total_batch_size(total: int, key: str) -> None:
    """
    The total batch size ``total`` (config key ``key``, e.g. ``SOLVER.IMS_PER_BATCH``) must be a positive multiple
    of the number of processes, which share it; a ValueError naming the key says so.
    """
    world_size = comm.get_world_size()
    if total <= 0 or total % world_size:
        raise ValueError(
            f"{key}={total}: the total batch size, shared by the {world_size} training process(es), must be a "
            f"positive multiple of {world_size}; set {key} to e.g. {world_size * max(1, -(-total // world_size))}"
        )


def drop_metrics_from(metrics_file: str, start_iter: int) -> None:
    """
    Truncate a ``metrics.json`` (one JSON object per line, by increasing ``iteration``) before the first record of
    iteration ``start_iter`` or later, or the first unreadable line (one cut short by a kill): a run resumed at
    ``start_iter`` then appends its records after those of the iterations it keeps. The file keeps its inode,
    so a writer that has it open for appending goes on writing to it.
    """
    if not os.path.isfile(metrics_file):
        return
    with open(metrics_file, "rb+") as f:
        kept = dropped = 0
        for line in f:
            iteration = _record_iteration(line)
            if iteration is None or iteration >= start_iter:
                dropped = 1 + sum(1 for _ in f)
                break
            kept += len(line)
        f.truncate(kept)
    if dropped:
        logger.info(f"{metrics_file}: dropped its last {dropped} records, from iteration {start_iter} on, to resume")


def _record_iteration(line: bytes):
    """The ``iteration`` of a whole metrics.json line, else None (a line cut short, or not a record)."""
    if not line.endswith(b"\n"):
        return None
    try:
        return int(json.loads(line)["iteration"])
    except (ValueError, KeyError, TypeError):
        return None


class AutocastModel(nn.Module):
    """
    ``model`` with its forward in training under ``torch.autocast(device_type, dtype=precision)``: the network
    runs in the low precision, the weights stay float32, and backward and the optimizer step (which the training
    loop runs after the forward) stay outside autocast. In eval mode its forward is the model's.
    """

    def __init__(self, model: nn.Module, device_type: str = "cpu", precision: torch.dtype = torch.bfloat16):
        super().__init__()
        self.module = model  # the name DistributedDataParallel gives the model it wraps
        self.device_type = device_type
        self.precision = precision

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.precision, enabled=self.training):
            return self.module(*args, **kwargs)


class AutocastTrainer(SimpleTrainer):
    """
    detectron2's SimpleTrainer (its loop unchanged) of an :class:`AutocastModel`: mixed precision on the CPU,
    where detectron2's AMPTrainer (CUDA only, float16 with a gradient scaler) does not run. The default bfloat16
    has float32's exponent range, so the gradients need no scaling. ``precision`` is the name of AMPTrainer's
    attribute; ``model`` is the wrapper, ``model.module`` the model trained.
    """

    def __init__(self, model, data_loader, optimizer, device_type: str = "cpu", precision=torch.bfloat16, **kwargs):
        """``kwargs``: SimpleTrainer's other arguments (``zero_grad_before_forward``, ``async_write_metrics``, ...)."""
        super().__init__(AutocastModel(model, device_type, precision), data_loader, optimizer, **kwargs)
        self.precision = precision


def build_step_trainer(model, data_loader, optimizer, *, amp: bool, device: str) -> SimpleTrainer:
    """
    The loop that runs each iteration: SimpleTrainer in float32, or with ``amp`` (``SOLVER.AMP.ENABLED``) mixed
    precision, by detectron2's AMPTrainer on CUDA (float16) or :class:`AutocastTrainer` on a CPU with native
    bfloat16. ``device``: the model's (``MODEL.DEVICE``).
    A CPU without it would emulate bfloat16, many times slower than float32, so there the run trains in float32,
    with a warning.
    """
    if not amp:
        return SimpleTrainer(model, data_loader, optimizer)
    if device.startswith("cuda"):
        return AMPTrainer(model, data_loader, optimizer)
    if not cpu_has_native_bfloat16():
        logger.warning(
            "SOLVER.AMP.ENABLED, but this CPU has no native bfloat16 (AVX512-BF16 / AMX): emulated, it would run "
            "many times slower than float32, so this run trains in float32"
        )
        return SimpleTrainer(model, data_loader, optimizer)
    return AutocastTrainer(model, data_loader, optimizer, device_type="cpu", precision=torch.bfloat16)


def build_adamw(params, *, lr: float, weight_decay: float, clip_gradients: Optional[Mapping] = None):
    """
    PyTorch's AdamW, fused (one kernel for all parameters, CPU and CUDA) where PyTorch has it: the same update,
    ~4x faster than its per-parameter loop on the CPU; with gradient clipping as detectron2's
    ``maybe_add_gradient_clipping`` does it when ``clip_gradients`` (the keys of ``SOLVER.CLIP_GRADIENTS``:
    ENABLED, CLIP_TYPE, CLIP_VALUE, NORM_TYPE) is enabled.

    Args:
        params: parameters or parameter groups (e.g. ``get_default_optimizer_params(model, ...)``).
    """
    solver = CfgNode({"SOLVER": {"CLIP_GRADIENTS": dict(clip_gradients or {"ENABLED": False})}})
    adamw = maybe_add_gradient_clipping(solver, torch.optim.AdamW)
    fused = {"fused": True} if TORCH_VERSION >= (2, 4) else {}  # fused CPU kernels since PyTorch 2.4
    return adamw(params, lr=lr, weight_decay=weight_decay, **fused)


class YolactTrainer(DefaultTrainer):
    """
    A DefaultTrainer that feeds YOLACT models through :class:`YolactDatasetMapper` (other meta-architectures,
    e.g. Mask R-CNN for comparison, keep detectron2's loaders), evaluates with COCOEvaluator (bbox + segm; for
    YOLACT its :class:`YolactCOCOEvaluator`, which scores YOLACT++'s masks with their own scores),
    checks the class count of the config against the datasets, and runs multi-process and in mixed precision
    (``SOLVER.AMP.ENABLED``, see :func:`build_step_trainer`) on CPU or GPU.
    """

    def __init__(self, cfg):  # pylint: disable=super-init-not-called
        """
        The parts of DefaultTrainer, built by the same ``build_*`` class methods (which subclasses override as with
        DefaultTrainer), and put together here because detectron2 (0.7.2) builds two of them inline in
        ``DefaultTrainer.__init__``, with no method to override: it wraps the model with ``create_ddp_model``,
        which passes ``device_ids`` even for a CPU model, which DistributedDataParallel refuses (here
        :func:`wrap_ddp`), and it runs AMPTrainer for SOLVER.AMP.ENABLED, which needs CUDA (here
        :func:`build_step_trainer`, which adds CPU bfloat16). The hooks are DefaultTrainer's (:meth:`build_hooks`).
        """
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        model.register_forward_hook(check_finite_losses)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model)
        set_step_trainer(
            self, build_step_trainer(model, data_loader, optimizer, amp=cfg.SOLVER.AMP.ENABLED, device=cfg.MODEL.DEVICE)
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = YolactCheckpointer(
            model, cfg.OUTPUT_DIR, reinit_class_layers=True, trainer=weakref.proxy(self)
        )
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """
        detectron2's: resume from the last checkpoint of OUTPUT_DIR (with ``resume``), else load MODEL.WEIGHTS
        (class-dependent layers of another class count re-initialised, see :class:`YolactCheckpointer`). A resumed
        run first drops from metrics.json the records of the iterations it will run again.
        """
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint() and comm.is_main_process():
            drop_metrics_from(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)

    def build_hooks(self):
        """
        DefaultTrainer's hooks, after :class:`FiniteParameters` (a step that leaves non-finite weights stops
        training before they are saved or evaluated), with a checkpointer keeping the last
        SOLVER.CHECKPOINT_MAX_TO_KEEP periodic checkpoints (0: all).
        """
        max_to_keep = self.cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP
        if max_to_keep < 0:
            raise ValueError(f"SOLVER.CHECKPOINT_MAX_TO_KEEP={max_to_keep}: give a number of checkpoints, or 0 for all")
        default = super().build_hooks()
        periods = (self.cfg.SOLVER.CHECKPOINT_PERIOD, self.cfg.TEST.EVAL_PERIOD)
        return [FiniteParameters(periods)] + [
            hooks.PeriodicCheckpointer(self.checkpointer, h.period, max_to_keep=max_to_keep or None)
            if isinstance(h, hooks.PeriodicCheckpointer) else h
            for h in default
        ]

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """
        DefaultTrainer's evaluation, refused (FloatingPointError) for a module with non-finite weights. ``model``
        may be any callable on detectron2's inputs (an exported model's runtime, say); only modules are checked.
        """
        if isinstance(model, nn.Module):
            check_finite_parameters(model, "before evaluation")
        return super().test(cfg, model, evaluators)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """
        detectron2's SGD, or :func:`build_adamw` with the same parameter groups and gradient clipping
        (SOLVER.OPTIMIZER).
        """
        name = cfg.SOLVER.OPTIMIZER.upper()
        if name == "SGD":
            return super().build_optimizer(cfg, model)
        if name != "ADAMW":
            raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW'; got '{cfg.SOLVER.OPTIMIZER}'")
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        solver = cfg.SOLVER
        return build_adamw(
            params, lr=solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY, clip_gradients=solver.CLIP_GRADIENTS
        )

    @classmethod
    def build_train_loader(cls, cfg):
        """
        The training loader, of a total batch size SOLVER.IMS_PER_BATCH that the processes can share; its datasets'
        class counts (known once they are loaded) are checked.
        """
        check_total_batch_size(cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH")
        if cfg.MODEL.META_ARCHITECTURE == "YOLACT":
            loader = build_yolact_train_loader(cfg)
        else:
            loader = super().build_train_loader(cfg)
        check_num_classes(cfg, cfg.DATASETS.TRAIN)
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """The inference loader of one dataset, whose class count is checked."""
        if cfg.MODEL.META_ARCHITECTURE == "YOLACT":
            loader = build_yolact_test_loader(cfg, dataset_name)
        else:
            loader = super().build_test_loader(cfg, dataset_name)
        check_num_classes(cfg, [dataset_name])
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        if evaluator_type != "coco":
            raise NotImplementedError(
                f"Dataset '{dataset_name}' has evaluator_type '{evaluator_type}'; only COCO-style evaluation "
                f"(bbox + segm) is supported"
            )
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator = YolactCOCOEvaluator if cfg.MODEL.META_ARCHITECTURE == "YOLACT" else COCOEvaluator
        return evaluator(dataset_name, tasks=("bbox", "segm"), distributed=True, output_dir=output_folder)
