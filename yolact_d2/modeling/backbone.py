"""
ResNet-FPN backbone of YOLACT: P3-P5 from res3-res5, P6 and P7 by stride-2 convs from P5; for YOLACT++ a 3x3
conv of every n-th block (bottleneck, or basic for ResNet-18/34) of chosen stages is deformable.
"""
import contextlib
from typing import Dict

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone import resnet as resnet_module
from detectron2.modeling.backbone.resnet import (
    BasicBlock,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
    build_resnet_backbone,
)

from ..layers import DeformConv, ModulatedDeformConv

__all__ = [
    "YolactFPN",
    "YolactTopBlock",
    "YolactDeformBottleneckBlock",
    "YolactDeformBasicBlock",
    "build_yolact_resnet",
    "build_yolact_resnet_fpn_backbone",
]


@contextlib.contextmanager
def _deform_ops(deform_conv, modulated_deform_conv):
    """Temporarily bind detectron2's ResNet module to the given deformable conv classes."""
    saved = resnet_module.DeformConv, resnet_module.ModulatedDeformConv
    resnet_module.DeformConv, resnet_module.ModulatedDeformConv = deform_conv, modulated_deform_conv
    try:
        yield
    finally:
        resnet_module.DeformConv, resnet_module.ModulatedDeformConv = saved


class YolactDeformBottleneckBlock(DeformBottleneckBlock):
    """
    detectron2's ``DeformBottleneckBlock`` (same modules and parameter names: ``conv2_offset`` predicts the
    offsets, and the mask for DCNv2, zero-initialised) whose deformable conv runs on any device
    (:mod:`yolact_d2.layers.deform_conv`).
    """

    def __init__(self, in_channels, out_channels, **kwargs):
        # detectron2 builds conv2 from names bound in its resnet module; without its compiled ops those are
        # dummies that raise on construction, so build the block with ours in their place.
        with _deform_ops(DeformConv, ModulatedDeformConv):
            super().__init__(in_channels, out_channels, **kwargs)

    @classmethod
    def like(cls, block: BottleneckBlock, norm: str, modulated: bool, num_groups: int):
        """A deformable block with the channels, stride, groups and dilation of a plain ``block``."""
        return cls(
            block.in_channels,
            block.out_channels,
            bottleneck_channels=block.conv1.out_channels,
            stride=block.stride,
            num_groups=block.conv2.groups,
            norm=norm,
            stride_in_1x1=block.conv1.stride[0] > 1,
            dilation=block.conv2.dilation[0],
            deform_modulated=modulated,
            deform_num_groups=num_groups,
        )


class YolactDeformBasicBlock(BasicBlock):
    """
    detectron2's ResNet-18/34 ``BasicBlock`` whose second 3x3 conv (stride 1) is deformable, built like the 3x3
    conv of ``DeformBottleneckBlock``: ``conv2_offset`` (zero-initialised, so training starts from a plain
    conv) predicts the offsets, and for DCNv2 the modulation mask, from the first conv's output. detectron2
    has no deformable basic block; this one gives the small ResNets a YOLACT++ backbone.
    """

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN", deform_modulated=False,
                 deform_num_groups=1):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        self.deform_modulated = deform_modulated
        offsets_per_group = 27 if deform_modulated else 18  # (2 + modulated) * 3 * 3
        self.conv2_offset = Conv2d(out_channels, offsets_per_group * deform_num_groups, kernel_size=3, padding=1)
        conv = ModulatedDeformConv if deform_modulated else DeformConv
        self.conv2 = conv(out_channels, out_channels, kernel_size=3, padding=1, bias=False,
                          deformable_groups=deform_num_groups, norm=get_norm(norm, out_channels))
        weight_init.c2_msra_fill(self.conv2)
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    @classmethod
    def like(cls, block: BasicBlock, norm: str, modulated: bool, num_groups: int):
        """A deformable block with the channels and stride of a plain ``block``."""
        return cls(block.in_channels, block.out_channels, stride=block.stride, norm=norm,
                   deform_modulated=modulated, deform_num_groups=num_groups)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        offset = self.conv2_offset(out)
        if self.deform_modulated:
            offset_x, offset_y, mask = torch.chunk(offset, 3, dim=1)
            out = self.conv2(out, torch.cat((offset_x, offset_y), dim=1), mask.sigmoid())
        else:
            out = self.conv2(out, offset)
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out)


def _deformable_like(block: nn.Module, norm: str, modulated: bool, num_groups: int) -> nn.Module:
    """The deformable version of a plain ResNet block."""
    if isinstance(block, BottleneckBlock):
        return YolactDeformBottleneckBlock.like(block, norm, modulated, num_groups)
    if isinstance(block, BasicBlock):
        return YolactDeformBasicBlock.like(block, norm, modulated, num_groups)
    raise TypeError(f"No deformable version of the ResNet block {type(block).__name__}")


def build_yolact_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    detectron2's ResNet (``MODEL.RESNETS.*``) where, in each stage with ``DEFORM_ON_PER_STAGE`` set, blocks
    0, n, 2n, ... (n = ``MODEL.YOLACT.DEFORM_INTERVAL``) have a deformable 3x3 conv (DCNv2 with
    ``DEFORM_MODULATED``). detectron2 itself can only make every block of a stage deformable, and only
    bottleneck blocks.
    """
    rcfg = cfg.MODEL.RESNETS
    deform_stages = list(rcfg.DEFORM_ON_PER_STAGE)
    interval = cfg.MODEL.YOLACT.DEFORM_INTERVAL
    if interval < 1:
        raise ValueError(f"MODEL.YOLACT.DEFORM_INTERVAL must be >= 1; got {interval}")
    plain_cfg = cfg.clone()
    plain_cfg.defrost()
    plain_cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False] * len(deform_stages)
    resnet = build_resnet_backbone(plain_cfg, input_shape)
    stages = {f"res{i + 2}": deform for i, deform in enumerate(deform_stages)}
    for name, stage in zip(resnet.stage_names, resnet.stages):
        if stages.get(name):
            for i in range(0, len(stage), interval):
                stage[i] = _deformable_like(stage[i], rcfg.NORM, rcfg.DEFORM_MODULATED, rcfg.DEFORM_NUM_GROUPS)
    return resnet.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)


class YolactTopBlock(nn.Module):
    """
    P6 = conv3x3/2(P5), P7 = conv3x3/2(P6): the extra levels of YOLACT, computed from the FPN output P5
    (RetinaNet computes them from C5). Parameter names follow detectron2's ``LastLevelP6P7``.
    """

    def __init__(self, channels: int, relu_before_p7: bool = False, in_feature: str = "p5"):
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.relu_before_p7 = relu_before_p7
        self.p6 = nn.Conv2d(channels, channels, 3, 2, 1)
        self.p7 = nn.Conv2d(channels, channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            weight_init.c2_xavier_fill(module)

    def forward(self, p5):
        p6 = _strided_conv(self.p6, p5)
        p7 = _strided_conv(self.p7, F.relu(p6) if self.relu_before_p7 else p6)
        return [p6, p7]


def _strided_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """
    ``conv(x)``, in float32 (outside autocast) when ``x`` (N, C, H, W) is one pixel wide: there the last column of
    a 3 x 3 stride-2 kernel with padding 1 sees only padding, and oneDNN's bfloat16 weight gradient of such a
    column is uninitialised memory (garbage, at times NaN), which a CPU autocast run would feed to the optimizer.
    P6 and P7 are one pixel wide for inputs of at most 32 and 64 pixels; the float32 conv of one pixel costs
    nothing.
    """
    if x.shape[-1] != 1:
        return conv(x)
    with torch.autocast(x.device.type, enabled=False):
        return conv(x.float())


class YolactFPN(FPN):
    """
    detectron2's :class:`FPN` (same modules and parameter names) with YOLACT's top-down path: the coarser
    level is resized to the exact size of the finer one (so any input size works without padding), with
    a configurable interpolation, and the 3x3 output convs may be followed by a ReLU as in the original.

    Output: dict "p3".."p7" -> (N, C, Hi, Wi), Hi = ceil(H / 2**i) for the ResNet strides.
    """

    def __init__(
        self, *args, interpolation: str = "bilinear", relu_outputs: bool = True, fuse_type: str = "sum", **kwargs
    ):
        super().__init__(*args, fuse_type=fuse_type, **kwargs)
        self.fuse_type = fuse_type
        self.interpolation = interpolation
        self.relu_outputs = relu_outputs

    @property
    def size_divisibility(self):
        return 0

    def _upsample(self, x, size):
        if self.interpolation == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode=self.interpolation, align_corners=False)

    def pyramid(self, bottom_up: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The FPN on already computed bottom-up features (dict "res3".."res5" -> (N, C, Hi, Wi))."""
        inputs = [bottom_up[f] for f in self.in_features[::-1]]  # coarsest first
        prev = self.lateral_convs[0](inputs[0])
        results = [self.output_convs[0](prev)]
        for feature, lateral_conv, output_conv in zip(inputs[1:], self.lateral_convs[1:], self.output_convs[1:]):
            prev = lateral_conv(feature) + self._upsample(prev, feature.shape[-2:])
            if self.fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output_conv(prev))
        if self.relu_outputs:
            results = [F.relu(r) for r in results]
        names = list(self.output_shape())
        if self.top_block is not None:
            results.extend(self.top_block(results[names.index(self.top_block.in_feature)]))
        return dict(zip(names, results))

    def forward(self, x):
        return self.pyramid(self.bottom_up(x))


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    :func:`build_yolact_resnet` (OUT_FEATURES res3-res5) + :class:`YolactFPN` (``MODEL.FPN.*`` and
    ``MODEL.YOLACT.FPN.*``) giving p3-p7 with ``MODEL.FPN.OUT_CHANNELS`` channels.
    """
    bottom_up = build_yolact_resnet(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    yfpn = cfg.MODEL.YOLACT.FPN
    return YolactFPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=YolactTopBlock(out_channels, relu_before_p7=yfpn.RELU_BEFORE_P7),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        interpolation=yfpn.INTERPOLATION,
        relu_outputs=yfpn.RELU_OUTPUTS,
    )
