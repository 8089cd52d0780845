"""The environment has what the project needs, and importing yolact_d2 registers its components."""
import importlib.util
import os

import yolact_d2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_detectron2_and_dependencies_import():
    import cv2
    import detectron2
    import pycocotools.mask
    from detectron2.config import get_cfg

    cfg = get_cfg()
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert detectron2.__version__
    assert cv2.imdecode is not None and pycocotools.mask.encode is not None


def test_importing_registers_every_component():
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    assert META_ARCH_REGISTRY.get("YOLACT") is yolact_d2.YOLACT
    assert BACKBONE_REGISTRY.get("build_yolact_resnet_fpn_backbone") is yolact_d2.build_yolact_resnet_fpn_backbone
    assert "ProtoNet" in yolact_d2.PROTONET_REGISTRY
    assert "YolactHead" in yolact_d2.YOLACT_HEAD_REGISTRY
    for name in ("FastNMS", "CrossClassFastNMS", "StandardNMS"):
        assert name in yolact_d2.POSTPROCESSOR_REGISTRY


def test_no_foreign_tools_package_shadows_the_projects_tools():
    """sal-detectron2's wheel ships a top-level `tools` package; set-up must have removed it."""
    spec = importlib.util.find_spec("tools")
    if spec is not None:
        origin = spec.origin or next(iter(spec.submodule_search_locations))
        assert os.path.abspath(origin).startswith(ROOT), f"'tools' resolves to {origin}, outside the project"
