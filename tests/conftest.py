"""Shared fixtures: small YOLACT configs that build and run in well under a second on a CPU; one torch thread; a
tiny COCO-format dataset."""
import contextlib
import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from yolact_d2 import add_yolact_config
from yolact_d2.data.synthetic import generate_yolact_shapes

# The repository's root: configs are found from it whatever the working directory.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_cfg(num_classes: int = 5, input_size: int = 160):
    """A YOLACT config with an R-18 backbone, 64 channels and 8 prototypes, random weights, on the CPU."""
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", "Base-YOLACT.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.FPN.OUT_CHANNELS = 64
    cfg.MODEL.PIXEL_STD = [57.4, 57.1, 58.4]
    y = cfg.MODEL.YOLACT
    y.NUM_CLASSES = num_classes
    y.NUM_PROTOTYPES = 8
    y.INPUT_SIZE = input_size
    y.ANCHOR.SIZES = [[s * input_size / 550] for s in (24, 48, 96, 192, 384)]
    y.PROTONET.CONV_DIMS = [64, 64]
    y.PROTONET.POST_UPSAMPLE_CONV_DIMS = [64]
    y.HEAD.SHARED_CONV_DIMS = [64]
    return cfg


@pytest.fixture
def cfg():
    torch.manual_seed(0)
    return small_cfg()


@pytest.fixture(scope="session")
def make_small_cfg():
    """:func:`small_cfg` for test modules (``import conftest`` may find another folder's conftest)."""
    return small_cfg


@contextlib.contextmanager
def _torch_threads(num_threads: int):
    saved = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test runs with one torch thread, restored after it even if the test changes it: the models are tiny,
    and on a 2-core machine a second thread gains little alone and costs many times that when the cores are busy
    (training tests ran 5-15x slower with two)."""
    with _torch_threads(1):
        yield


TINY = "tiny_shapes"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Registers ``tiny_shapes`` (6 images, 5 classes) with ``register_coco_instances``; returns its name."""
    root = str(tmp_path_factory.mktemp("datasets"))
    json_file = generate_yolact_shapes(root, "val", 6)
    image_root = os.path.join(os.path.dirname(os.path.dirname(json_file)), "val")
    if TINY in DatasetCatalog.list():
        DatasetCatalog.remove(TINY)
        MetadataCatalog.remove(TINY)
    register_coco_instances(TINY, {}, json_file, image_root)
    DatasetCatalog.get(TINY)  # loads it, which sets thing_classes
    return TINY
