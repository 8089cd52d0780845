"""YOLACT's modules; importing this registers the backbone, meta-architecture, protonet, head and NMS variants."""
from .anchors import YolactAnchorGenerator, build_box2box_transform
from .backbone import YolactFPN, YolactTopBlock, build_yolact_resnet_fpn_backbone
from .head import YOLACT_HEAD_REGISTRY, YolactHead, build_yolact_head
from .loss import YolactLoss, match_anchors, ohem_negatives
from .mask_rescoring import MaskIoUNet
from .masks import assemble_mask_logits, batched_box_iou, box_crop_masks
from .meta_arch import YOLACT, Detections
from .postprocessing import POSTPROCESSOR_REGISTRY, CrossClassFastNMS, FastNMS, StandardNMS, build_postprocessor
from .protonet import PROTONET_REGISTRY, ProtoNet, build_protonet
from .semantic_seg import YolactSemSegHead
