"""YOLACT's modules; importing this registers the backbone, meta-architecture, protonet, head and NMS variants."""
from .anchors import YolactAnchorGenerator, build_box2box_transform
from .backbone import YolactFPN, YolactTopBlock, build_yolact_resnet_fpn_backbone
from .head import YOLACT_HEAD_REGISTRY, YolactHead, build_yolact_head
from .loss import YolactLoss, match_anchors, ohem_negatives
from .meta_arch import YOLACT
from .postprocessing import (
    POSTPROCESSOR_REGISTRY,
    CrossClassFastNMS,
    FastNMS,
    StandardNMS,
    assemble_mask_logits,
    box_crop_masks,
    build_postprocessor,
)
from .protonet import PROTONET_REGISTRY, ProtoNet, build_protonet
