"""YOLACT ResNet-50-FPN at 550 x 550 on COCO, the paper's schedule: configs/yolact_R_50_FPN_550.yaml as a LazyConfig."""
from .common.yolact import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
