"""Data loaders for YOLACT and the checks that tie a config to its datasets."""
from typing import Iterable

from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)

from .dataset_mapper import YolactDatasetMapper

__all__ = ["config_num_classes", "check_num_classes", "build_yolact_train_loader", "build_yolact_test_loader"]


def config_num_classes(cfg) -> int:
    """The class count a config's model predicts (YOLACT, RetinaNet or R-CNN meta-architectures)."""
    if cfg.MODEL.META_ARCHITECTURE == "YOLACT":
        return cfg.MODEL.YOLACT.NUM_CLASSES
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        return cfg.MODEL.RETINANET.NUM_CLASSES
    return cfg.MODEL.ROI_HEADS.NUM_CLASSES


def check_num_classes(cfg, dataset_names: Iterable[str]) -> None:
    """
    Raise an error naming the dataset when it is not registered, or when its ``thing_classes`` count
    differs from the config's class count. ``thing_classes`` of COCO-json datasets is known once the
    dataset has been loaded (``DatasetCatalog.get``), so call this after building a loader.
    """
    expected = config_num_classes(cfg)
    for name in dataset_names:
        if name not in DatasetCatalog.list():
            raise KeyError(
                f"Dataset '{name}' is not registered. Register it first (e.g. detectron2.data.datasets."
                f"register_coco_instances) or import the module that does."
            )
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and len(classes) != expected:
            raise ValueError(
                f"Dataset '{name}' has {len(classes)} classes {list(classes)} but the config predicts {expected} "
                f"(MODEL.YOLACT.NUM_CLASSES / ROI_HEADS.NUM_CLASSES): set the config's class count to {len(classes)}"
            )


def build_yolact_train_loader(cfg):
    """detectron2's training loader over ``DATASETS.TRAIN`` with the augmenting :class:`YolactDatasetMapper`."""
    return build_detection_train_loader(cfg, mapper=YolactDatasetMapper(cfg, is_train=True))


def build_yolact_test_loader(cfg, dataset_name: str):
    """detectron2's inference loader over one dataset with the (non-augmenting) :class:`YolactDatasetMapper`."""
    return build_detection_test_loader(cfg, dataset_name, mapper=YolactDatasetMapper(cfg, is_train=False))
