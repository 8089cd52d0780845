"""The YOLACT loaders: checked datasets, and training that goes on past a corrupt image when configured to."""
import json
import logging

import cv2
import numpy as np
import pytest

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import SizeMismatchError

from yolact_d2.config import add_yolact_config
from yolact_d2.data import register_coco_dataset
from yolact_d2.data.build import build_yolact_test_loader, build_yolact_train_loader

NAME = "test_build_corrupt"


@pytest.fixture
def corrupt_dataset(tmp_path):
    """Three 40 x 60 images with one annotation each; im1.png is not an image."""
    images = [{"id": i + 1, "file_name": f"im{i}.png", "height": 40, "width": 60} for i in range(3)]
    annotations = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 30, 20], "area": 600, "iscrowd": 0,
         "segmentation": [[5, 5, 35, 5, 35, 25, 5, 25]]}
        for i in range(3)
    ]
    (tmp_path / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]})
    )
    for i in (0, 2):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), np.full((40, 60, 3), 90, np.uint8))
    (tmp_path / "im1.png").write_bytes(b"\x89PNG truncated")
    register_coco_dataset(NAME, str(tmp_path / "instances.json"), str(tmp_path))
    yield NAME
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _cfg(skip: bool):
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.DATASETS.TRAIN = (NAME,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.SKIP_CORRUPT_IMAGES = skip
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.MODEL.YOLACT.INPUT_SIZE = 32
    return cfg


def test_skip_corrupt_images_trains_on_the_other_images_and_names_the_skipped_one(corrupt_dataset, caplog):
    with caplog.at_level(logging.WARNING, logger="yolact_d2"):
        batches = iter(build_yolact_train_loader(_cfg(skip=True)))
        file_names = [x["file_name"].rsplit("/", 1)[-1] for _ in range(3) for x in next(batches)]
    assert len(file_names) == 12 and set(file_names) == {"im0.png", "im2.png"}
    assert "Skipping an image that cannot be read" in caplog.text and "im1.png" in caplog.text


def test_without_skip_the_corrupt_image_stops_training_and_evaluation_naming_it(corrupt_dataset):
    with pytest.raises(OSError, match="Cannot read image .*im1.png"):
        for _ in zip(range(3), build_yolact_train_loader(_cfg(skip=False))):
            pass
    with pytest.raises(OSError, match="Cannot read image .*im1.png"):
        list(build_yolact_test_loader(_cfg(skip=True), NAME))


def test_skip_corrupt_images_does_not_skip_an_image_whose_size_differs_from_its_annotation(corrupt_dataset, tmp_path):
    # im1.png is readable, but 50 x 60 where the json says 40 x 60: the dataset is wrong, not the file.
    cv2.imwrite(str(tmp_path / "im1.png"), np.full((50, 60, 3), 90, np.uint8))
    # detectron2's SizeMismatchError, which gives (width, height).
    with pytest.raises(SizeMismatchError, match=r"shape for image .*im1.png, got \(60, 50\), expect \(60, 40\)"):
        for _ in zip(range(3), build_yolact_train_loader(_cfg(skip=True))):
            pass
