"""
YOLACT on the embedded synthetic dataset (yolact_shapes), trained from scratch on a CPU:
configs/embedded/yolact_R_18_shapes.yaml as a LazyConfig (see that file for why each setting differs from COCO's).
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import MultiStepParamScheduler

from yolact_d2.data.transforms import PhotometricDistort, RandomFlip, ResizeToSquare, TransposeTransform
from yolact_d2.engine import build_adamw

from ..common.yolact import _PAD, dataloader, lr_multiplier, model, train

# From scratch: a normalised input, every stage trained, GroupNorm in the ResNet.
model.pixel_std = [57.375, 57.12, 58.395]
model.backbone.bottom_up.stem.norm = "GN"
model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="GN")  # basic blocks
model.backbone.bottom_up.freeze_at = 0
model.backbone.out_channels = 128
model.protonet.update(conv_dims=[128, 128, 128], post_upsample_conv_dims=[128])
model.head.update(num_classes=5, shared_conv_dims=[128], num_anchors=9)
model.input_size = 256
# The paper's sizes scaled by 256 / 550, three per level (size * 2 ** (j / 3)).
model.anchor_generator.sizes = [
    [11, 13.86, 17.46], [22, 27.72, 34.92], [45, 56.7, 71.43], [89, 112.13, 141.28], [179, 225.53, 284.14]
]
model.loss.update(positive_iou=0.4, negative_iou=0.3)
model.loss.loss_weights.loss_sem_seg = 4.0

_resize = L(ResizeToSquare)(size="${model.input_size}", preserve_aspect_ratio=False, pad_value=_PAD)
dataloader.train.dataset.names = "yolact_shapes_train"
dataloader.train.mapper.augmentations = [
    L(PhotometricDistort)(image_format="BGR"),
    L(RandomFlip)(horizontal=True),
    # the 8 rotations and reflections of a shapes image are images of the same dataset
    L(RandomFlip)(horizontal=False, vertical=True),
    L(T.RandomApply)(tfm_or_aug=L(TransposeTransform)(), prob=0.5),
    _resize,
]
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test.dataset.names = "yolact_shapes_val"
dataloader.test.num_workers = 1

# AdamW (fused), gradient norm clipped at 10.
optimizer = L(build_adamw)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0),
    lr=0.001,
    weight_decay=0.0001,
    clip_gradients={"ENABLED": True, "CLIP_TYPE": "norm", "CLIP_VALUE": 10.0, "NORM_TYPE": 2.0},
)

# 2000 iterations, x0.1 at 1400 and 1800, linear warm-up from 0.001 over 200.
lr_multiplier.scheduler = L(MultiStepParamScheduler)(
    values=[1.0, 0.1, 0.01], milestones=[1400, 1800], num_updates=2000
)
lr_multiplier.update(warmup_length=200 / 2000, warmup_factor=0.001)

train.update(
    output_dir="./output/lazy/embedded/yolact_R_18_shapes",
    init_checkpoint="",
    max_iter=2000,
    device="cpu",
    eval_period=2000,
)
train.amp.enabled = True
train.checkpointer.period = 400
