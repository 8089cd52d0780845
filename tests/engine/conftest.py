"""A tiny COCO-format dataset (from the synthetic generator) registered the way users register their own."""
import os

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from yolact_d2.data.synthetic import generate_yolact_shapes

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
