"""YOLACT ResNet-101-FPN at 550 x 550 on COCO (YOLACT-550 of the paper): configs/yolact_R_101_FPN_550.yaml."""
from .common.yolact import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "./output/lazy/yolact_R_101_FPN_550"
