import torch

from detectron2.layers import ShapeSpec

from yolact_d2.modeling.protonet import PROTONET_REGISTRY, ProtoNet, build_protonet


def test_paper_layout_gives_138_at_550(cfg):
    cfg.MODEL.YOLACT.PROTONET.CONV_DIMS = [256, 256, 256]
    cfg.MODEL.YOLACT.PROTONET.POST_UPSAMPLE_CONV_DIMS = [256]
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = 32
    net = build_protonet(cfg, {"p3": ShapeSpec(channels=256, stride=8)})
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == (
        [(256, 256, (3, 3))] * 4 + [(256, 32, (1, 1))]
    )
    with torch.no_grad():
        out = net({"p3": torch.randn(1, 256, 69, 69)})
    assert out.shape == (1, 32, 138, 138)
    assert out.min() >= 0 and out.max() > 0


def test_registry_lookup_by_name(cfg):
    assert PROTONET_REGISTRY.get(cfg.MODEL.YOLACT.PROTONET.NAME) is ProtoNet


def test_norm_from_config(cfg):
    cfg.MODEL.YOLACT.PROTONET.CONV_DIMS = [32, 32]
    cfg.MODEL.YOLACT.PROTONET.POST_UPSAMPLE_CONV_DIMS = [32]
    cfg.MODEL.YOLACT.PROTONET.NORM = "GN"
    net = build_protonet(cfg, {"p3": ShapeSpec(channels=16, stride=8)})
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 and net.predictor.bias is not None  # the 1x1 prototype conv keeps its bias
