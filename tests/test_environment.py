"""The environment has what the project needs, and importing yolact_d2 registers its components."""
import importlib.util
import os

import yolact_d2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_importing_yolact_d2_leaves_detectron2s_default_config_alone():
    """Keys are added by ``add_yolact_config(cfg)`` on a config, never to detectron2's global defaults."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert "YOLACT" not in cfg.MODEL
    yolact_d2.add_yolact_config(cfg)
    assert "YOLACT" in cfg.MODEL and "YOLACT" not in get_cfg().MODEL


def test_opencv_round_trips_a_png_exactly_in_bgr_order():
    import cv2
    import numpy as np

    image = np.zeros((3, 4, 3), np.uint8)
    image[0, 0] = (255, 0, 0)  # blue in BGR
    image[2, 3] = (10, 20, 30)
    ok, encoded = cv2.imencode(".png", image)
    assert ok and bytes(encoded[:8]) == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded, image)
    rgb = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    assert tuple(rgb[0, 0]) == (0, 0, 255) and tuple(rgb[2, 3]) == (30, 20, 10)


def test_pycocotools_rle_of_a_known_mask():
    """A 2 x 3 block at rows 1-2, columns 2-4 of a 4 x 6 mask: area 6, COCO box (x, y, w, h) = (2, 1, 3, 2); the
    RLE runs are column-major (Fortran order): 4 + 4 zeros (columns 0-1), then per column 1 zero, 2 ones, 1 zero."""
    import numpy as np
    from pycocotools import mask as mask_util

    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    assert mask_util.area(rle) == 6
    assert list(mask_util.toBbox(rle)) == [2, 1, 3, 2]
    assert rle["size"] == [4, 6]
    np.testing.assert_array_equal(mask_util.decode(rle), mask)
    runs = mask_util.frPyObjects({"size": [4, 6], "counts": [9, 2, 2, 2, 2, 2, 5]}, 4, 6)
    np.testing.assert_array_equal(mask_util.decode(runs), mask)


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
