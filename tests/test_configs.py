"""Every shipped config merges onto add_yolact_config's keys and builds its model; paper defaults hold."""
import glob
import math
import os

import pytest

from detectron2.config import get_cfg

from yolact_d2 import add_yolact_config
from yolact_d2.config import load_yolact_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def _load(path):
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(path)
    return cfg


def test_paper_defaults():
    cfg = get_cfg()
    add_yolact_config(cfg)
    y = cfg.MODEL.YOLACT
    assert (y.NUM_PROTOTYPES, y.INPUT_SIZE, y.PRESERVE_ASPECT_RATIO) == (32, 550, False)
    assert y.ANCHOR.SIZES == [[24], [48], [96], [192], [384]] and y.ANCHOR.ASPECT_RATIOS == [[1.0, 0.5, 2.0]]
    assert (y.MATCHER.POSITIVE_IOU, y.MATCHER.NEGATIVE_IOU, y.MATCHER.CROWD_IOU) == (0.5, 0.4, 0.7)
    assert (y.LOSS.CLS_WEIGHT, y.LOSS.BOX_WEIGHT, y.LOSS.MASK_WEIGHT, y.LOSS.SEM_SEG_WEIGHT) == (1, 1.5, 6.125, 1)
    assert (y.LOSS.OHEM_NEG_POS_RATIO, y.LOSS.MASKS_TO_TRAIN) == (3, 100)
    p = y.POSTPROCESS
    assert (p.NAME, p.NMS_THRESH, p.TOP_K, p.SCORE_THRESH, p.SECOND_SCORE_THRESH, p.MASK_THRESH) == (
        "FastNMS", 0.5, 200, 0.05, False, 0.5)
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 100


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_merges(path):
    cfg = _load(path)
    if cfg.MODEL.META_ARCHITECTURE == "YOLACT":
        assert len(cfg.MODEL.YOLACT.ANCHOR.SIZES) == len(cfg.MODEL.YOLACT.IN_FEATURES)


@pytest.mark.parametrize("name,bases,rescoring", [
    ("yolact_plus_R_50_FPN_550.yaml", (24, 48, 96, 192, 384), True),
    ("embedded/yolact_plus_R_18_shapes.yaml", (11, 22, 45, 89, 179), True),
    ("embedded/yolact_R_18_shapes.yaml", (11, 22, 45, 89, 179), False),  # YOLACT with YOLACT++'s anchors
])
def test_anchor_sizes_are_three_octave_steps(name, bases, rescoring):
    cfg = _load(os.path.join(ROOT, "configs", name))
    assert len(cfg.MODEL.YOLACT.ANCHOR.SIZES) == len(bases)
    for level, base in zip(cfg.MODEL.YOLACT.ANCHOR.SIZES, bases):
        assert level == pytest.approx([base * 2 ** (j / 3) for j in range(3)], rel=1e-3)
    assert not cfg.MODEL.YOLACT.ANCHOR.SQUARE and cfg.MODEL.YOLACT.MASK_RESCORING.ENABLED == rescoring


@pytest.mark.parametrize("name,size", [("yolact_R_101_FPN_400.yaml", 400), ("yolact_R_101_FPN_700.yaml", 700)])
def test_input_size_variants_scale_anchors(name, size):
    cfg = _load(os.path.join(ROOT, "configs", name))
    assert cfg.MODEL.YOLACT.INPUT_SIZE == size
    for got, base in zip(cfg.MODEL.YOLACT.ANCHOR.SIZES, (24, 48, 96, 192, 384)):
        assert abs(got[0] - base * size / 550) <= 1


def test_yolact_plus_r50_builds_with_13_deformable_blocks_and_9_anchors():
    from detectron2.modeling import build_model

    from yolact_d2.modeling.backbone import YolactDeformBottleneckBlock

    cfg = _load(os.path.join(ROOT, "configs", "yolact_plus_R_50_FPN_550.yaml"))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    model = build_model(cfg)
    assert sum(isinstance(m, YolactDeformBottleneckBlock) for m in model.modules()) == 13
    assert model.anchor_generator.num_anchors == 9
    assert model.head.cls_score.out_channels == 9 * 81
    assert math.isclose(model.anchor_generator.sizes[0][1], 30.2381, rel_tol=1e-4)


def test_embedded_mask_rcnn_shares_yolact_data_input_and_schedule():
    """The Mask R-CNN baseline shares the embedded YOLACT config's data, input, backbone and schedule."""
    yolact = _load(os.path.join(ROOT, "configs", "embedded", "yolact_R_18_shapes.yaml"))
    rcnn = _load(os.path.join(ROOT, "configs", "embedded", "mask_rcnn_R_18_FPN_shapes.yaml"))
    assert (rcnn.MODEL.META_ARCHITECTURE, yolact.MODEL.META_ARCHITECTURE) == ("GeneralizedRCNN", "YOLACT")
    assert rcnn.INPUT.MIN_SIZE_TRAIN == (yolact.MODEL.YOLACT.INPUT_SIZE,) == (256,)
    shared = ["DATASETS", "SOLVER", "TEST.EVAL_PERIOD", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD",
              "MODEL.BACKBONE.FREEZE_AT", "MODEL.RESNETS.DEPTH", "MODEL.RESNETS.NORM", "MODEL.FPN.OUT_CHANNELS"]
    for key in shared:
        assert _get(rcnn, key) == _get(yolact, key), key


def _get(cfg, key):
    for name in key.split("."):
        cfg = cfg[name]
    return cfg


def test_unknown_keys_name_the_key_its_source_and_the_closest_keys(tmp_path):
    base = os.path.join(ROOT, "configs", "Base-YOLACT.yaml")
    with pytest.raises(KeyError, match=r"Non-existent key: MODEL.YOLACT.NUM_PROTOTYPE \(in the command-line options\)"
                       r": did you mean MODEL.YOLACT.NUM_PROTOTYPES or "):
        load_yolact_config(base, ["--", "MODEL.YOLACT.NUM_PROTOTYPE", "4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{base}"\nMODEL:\n  YOLACT:\n    ANCHORS:\n      SQUARE: True\n')
    with pytest.raises(KeyError, match=rf"Non-existent config key: MODEL.YOLACT.ANCHORS \(in {bad}\): did you mean "
                       r"MODEL.YOLACT.ANCHOR or "):
        load_yolact_config(str(bad), [])
    with pytest.raises(KeyError, match="XYZZY .*no key of detectron2 or add_yolact_config is close"):
        load_yolact_config(base, ["XYZZY", "1"])
PAPER_CONFIGS = [p for p in CONFIGS if os.sep + "embedded" + os.sep not in p]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=[os.path.relpath(p, ROOT) for p in PAPER_CONFIGS])
def test_paper_configs_train_the_backbone_batch_norms_as_the_original(path):
    """SyncBN in every ResNet stage past FREEZE_AT (the original trains its BatchNorms); FrozenBN in the others."""
    import torch

    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling import build_backbone

    cfg = _load(path)
    assert cfg.MODEL.RESNETS.NORM == "SyncBN"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 18, 64  # the norms do not depend on the depth
    bottom_up = build_backbone(cfg).bottom_up
    frozen = ["stem", "res2", "res3", "res4", "res5"][: cfg.MODEL.BACKBONE.FREEZE_AT]
    for name, stage in bottom_up.named_children():
        norms = {type(m) for m in stage.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm,
                                                                     FrozenBatchNorm2d))}
        assert norms == ({FrozenBatchNorm2d} if name in frozen else {torch.nn.SyncBatchNorm}), name
    assert (cfg.MODEL.BACKBONE.FREEZE_AT == 0) == ("original" in path)


def test_embedded_configs_keep_group_norm():
    for name in ("yolact_R_18_shapes.yaml", "yolact_plus_R_18_shapes.yaml"):
        assert _load(os.path.join(ROOT, "configs", "embedded", name)).MODEL.RESNETS.NORM == "GN"
