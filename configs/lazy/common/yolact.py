"""
The parts every YOLACT LazyConfig shares: the model (ResNet-50-FPN at 550, Base-YOLACT.yaml's settings and
yolact_d2/config.py's defaults), COCO loaders with the original's augmentations, SGD, the step schedule and
the training settings of ``tools/lazyconfig_train_net.py``.

One value feeds the others by interpolation: ``model.head.num_classes`` the class counts,
``model.backbone.out_channels`` the channels the heads read, ``model.input_size`` the loss and the loaders.
"""
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params

from yolact_d2.data import YolactDatasetMapper
from yolact_d2.data.transforms import PhotometricDistort, RandomExpand, RandomFlip, RandomSampleCrop, ResizeToSquare
from yolact_d2.modeling import (
    YOLACT,
    FastNMS,
    ProtoNet,
    YolactAnchorGenerator,
    YolactFPN,
    YolactHead,
    YolactLoss,
    YolactSemSegHead,
    YolactTopBlock,
)

# detectron2's MSRA ImageNet weights: BGR, mean subtraction only.
_PIXEL_MEAN = [103.53, 116.28, 123.675]

model = L(YOLACT)(
    backbone=L(YolactFPN)(
        # BatchNorms trained as the original trains them, with the whole batch's statistics (SyncBN); the
        # stages up to freeze_at are frozen (FrozenBN). "naiveSyncBN" for multi-process CPU runs, "FrozenBN"
        # for tiny batches.
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="SyncBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="SyncBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        norm="",
        top_block=L(YolactTopBlock)(channels="${..out_channels}", relu_before_p7=False),
        fuse_type="sum",
        interpolation="bilinear",
        relu_outputs=True,
    ),
    protonet=L(ProtoNet)(
        in_feature="p3",
        in_channels="${..backbone.out_channels}",
        conv_dims=[256, 256, 256],
        upsample_factor=2,
        post_upsample_conv_dims=[256],
        num_prototypes="${..head.num_prototypes}",
        norm="",
    ),
    head=L(YolactHead)(
        in_channels="${..backbone.out_channels}",
        num_anchors=3,  # sizes per level x aspect ratios of the anchor generator
        num_classes=80,
        num_prototypes=32,
        shared_conv_dims=[256],
        norm="",
        prior_prob=0.0,
    ),
    anchor_generator=L(YolactAnchorGenerator)(
        sizes=[[24], [48], [96], [192], [384]], aspect_ratios=[1.0, 0.5, 2.0], square=False
    ),
    box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
    postprocessor=L(FastNMS)(
        nms_thresh=0.5, top_k=200, score_thresh=0.05, second_score_thresh=False, max_detections=100
    ),
    loss=L(YolactLoss)(
        num_classes="${..head.num_classes}",
        input_size="${..input_size}",
        positive_iou=0.5,
        negative_iou=0.4,
        crowd_iou=0.7,
        loss_weights={
            "loss_cls": 1.0, "loss_box_reg": 1.5, "loss_mask": 6.125, "loss_sem_seg": 1.0, "loss_mask_iou": 25.0
        },
        cls_loss_type="ohem",
        neg_pos_ratio=3,
        box_reg_loss_type="smooth_l1",
        masks_to_train=100,
    ),
    sem_seg_head=L(YolactSemSegHead)(
        in_features=["p3"], in_channels="${..backbone.out_channels}", num_classes="${..head.num_classes}"
    ),
    mask_rescoring=None,
    in_features=["p3", "p4", "p5", "p6", "p7"],
    input_size=550,
    preserve_aspect_ratio=False,
    pixel_mean=_PIXEL_MEAN,
    pixel_std=[1.0, 1.0, 1.0],
    mask_threshold=0.5,
    channels_last=True,
    # Inference in "float32", "bfloat16" (CPUs with AVX512-BF16 / AMX, recent GPUs) or "float16" (CUDA), taken as
    # given: resolve_precision(precision, device) of yolact_d2.layers gives what a device runs (yacs configs:
    # MODEL.YOLACT.PRECISION, resolved for MODEL.DEVICE).
    precision="float32",
)

# The expand canvas and the padding take the pixel mean (rounded), in the images' channel order.
_PAD = [round(v) for v in _PIXEL_MEAN]

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(YolactDatasetMapper)(
        is_train=True,
        augmentations=[
            L(PhotometricDistort)(image_format="${...image_format}"),
            L(RandomExpand)(max_expand=4.0, pad_value=_PAD),
            L(RandomSampleCrop)(),
            L(RandomFlip)(horizontal=True),
            L(ResizeToSquare)(size="${model.input_size}", preserve_aspect_ratio=False, pad_value=_PAD),
        ],
        image_format="BGR",
    ),
    total_batch_size=8,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(YolactDatasetMapper)(
        is_train=False,
        augmentations=[],  # the image as read: the model resizes it
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)
dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}", tasks=("bbox", "segm"))

# The paper: SGD lr 1e-3, momentum 0.9, weight decay 5e-4 (none on norm layers), batch 8.
optimizer = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),  # params.model is set by the training tool
    lr=0.001,
    momentum=0.9,
    weight_decay=0.0005,
)

# 800k iterations, x0.1 at 280k / 600k / 700k / 750k, linear warm-up from 1e-4 over 500 iterations.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01, 0.001, 0.0001], milestones=[280000, 600000, 700000, 750000], num_updates=800000
    ),
    warmup_length=500 / 800000,
    warmup_method="linear",
    warmup_factor=0.0001,
)

train = dict(
    output_dir="./output/lazy/yolact_R_50_FPN_550",
    init_checkpoint="detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    max_iter=800000,
    amp=dict(enabled=False),  # mixed precision: float16 on CUDA, bfloat16 on a CPU that has it natively
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False),
    checkpointer=dict(period=10000, max_to_keep=100),
    eval_period=0,  # 0: evaluate only after training
    log_period=20,
    device="cuda",
)
