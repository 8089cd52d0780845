"""detectron2's DefaultTrainer, adapted to YOLACT's data, to distributed training and to mixed precision on CPUs."""
import logging
import os
import time
import weakref

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.env import TORCH_VERSION
from detectron2.utils.logger import setup_logger

from ..data.build import build_yolact_test_loader, build_yolact_train_loader, check_num_classes
from ..evaluation import YolactCOCOEvaluator

__all__ = ["AutocastTrainer", "YolactTrainer", "build_step_trainer", "wrap_ddp"]

logger = logging.getLogger(__name__)


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """
    DistributedDataParallel when there are several processes, on GPU (one device per process) or CPU
    (gloo; detectron2's ``create_ddp_model`` passes ``device_ids`` even for a CPU module, which DDP refuses).
    """
    on_gpu = next(model.parameters()).device.type == "cuda"
    device_ids = [comm.get_local_rank()] if on_gpu else None
    return create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)


class AutocastTrainer(SimpleTrainer):
    """
    SimpleTrainer with the forward pass (losses included) under ``torch.autocast``: mixed precision on the
    CPU, where detectron2's AMPTrainer (CUDA only, float16 with a gradient scaler) does not run. The default
    bfloat16 has float32's exponent range, so the gradients need no scaling; backward and the optimizer step
    run outside autocast, on the float32 parameters.
    """

    def __init__(self, model, data_loader, optimizer, device_type: str = "cpu", precision=torch.bfloat16):
        super().__init__(model, data_loader, optimizer)
        self.device_type = device_type
        self.precision = precision  # the name of AMPTrainer's attribute

    def run_step(self):
        assert self.model.training, "[AutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX) rather than by conversion."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # pylint: disable=protected-access


def build_step_trainer(cfg, model, data_loader, optimizer) -> SimpleTrainer:
    """
    The loop that runs each iteration: SimpleTrainer in float32, or with ``SOLVER.AMP.ENABLED`` mixed precision,
    by detectron2's AMPTrainer on CUDA (float16) or :class:`AutocastTrainer` on a CPU with native bfloat16.
    A CPU without it would emulate bfloat16 (the embedded config: 16.8 s per iteration against 1.10 in float32
    on a 2-core AMD EPYC), so there the run trains in float32, with a warning.
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    if cfg.MODEL.DEVICE.startswith("cuda"):
        return AMPTrainer(model, data_loader, optimizer)
    if not cpu_has_native_bfloat16():
        logger.warning(
            "SOLVER.AMP.ENABLED, but this CPU has no native bfloat16 (AVX512-BF16 / AMX): emulated, it would run "
            "~15x slower than float32, so this run trains in float32"
        )
        return SimpleTrainer(model, data_loader, optimizer)
    return AutocastTrainer(model, data_loader, optimizer, device_type="cpu", precision=torch.bfloat16)


class YolactTrainer(DefaultTrainer):
    """
    A DefaultTrainer that feeds YOLACT models through :class:`YolactDatasetMapper` (other meta-architectures,
    e.g. Mask R-CNN for comparison, keep detectron2's loaders), evaluates with COCOEvaluator (bbox + segm; for
    YOLACT its :class:`YolactCOCOEvaluator`, which scores YOLACT++'s masks with their own scores),
    checks the class count of the config against the datasets, and runs multi-process and in mixed precision
    (``SOLVER.AMP.ENABLED``, see :func:`build_step_trainer`) on CPU or GPU.
    """

    def __init__(self, cfg):  # pylint: disable=super-init-not-called
        # DefaultTrainer.__init__ builds the DDP model with GPU-only arguments; this is its sequence with
        # :func:`wrap_ddp` instead.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_optimizer(cls, cfg, model):
        """
        detectron2's SGD, or AdamW with the same parameter groups and gradient clipping (SOLVER.OPTIMIZER). AdamW
        is PyTorch's fused implementation (one kernel for all parameters, CPU and CUDA) where PyTorch has it:
        the same update, ~4x faster than its per-parameter loop on the CPU.
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
        adamw = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
        fused = {"fused": True} if TORCH_VERSION >= (2, 4) else {}  # fused CPU kernels since PyTorch 2.4
        return adamw(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **fused)

    @classmethod
    def build_train_loader(cls, cfg):
        """The training loader; its datasets' class counts (known once they are loaded) are checked."""
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
