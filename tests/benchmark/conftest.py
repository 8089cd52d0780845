"""Fixtures of the benchmark tests: small YOLACT and Mask R-CNN configs as files."""
import pytest


@pytest.fixture
def small_yolact_config(cfg, tmp_path):
    """The small YOLACT config of tests/conftest.py at input size 96, written to ``small_yolact.yaml``."""
    cfg.MODEL.YOLACT.INPUT_SIZE = 96
    path = tmp_path / "small_yolact.yaml"
    path.write_text(cfg.dump())
    return str(path)


@pytest.fixture
def mask_rcnn_config():
    """detectron2's Mask R-CNN with YOLACT's small R-18 backbone (benchmarks set its input size)."""
    return "configs/embedded/mask_rcnn_R_18_FPN_shapes.yaml"
