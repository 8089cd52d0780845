"""Data loaders for YOLACT and the checks that tie a config to its datasets."""
import itertools
from typing import Dict, Iterable, List

from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import filter_images_with_only_crowd_annotations, print_instances_class_histogram
from detectron2.data.detection_utils import check_metadata_consistency

from .dataset_mapper import YolactDatasetMapper
from .validation import check_dataset_dicts, check_registered, load_dataset

__all__ = [
    "config_num_classes",
    "check_num_classes",
    "load_yolact_dataset_dicts",
    "build_yolact_train_loader",
    "build_yolact_test_loader",
]


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
        check_registered(name)
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and len(classes) != expected:
            raise ValueError(
                f"Dataset '{name}' has {len(classes)} classes {list(classes)} but the config predicts {expected} "
                f"(MODEL.YOLACT.NUM_CLASSES / ROI_HEADS.NUM_CLASSES): set the config's class count to {len(classes)}"
            )


def load_yolact_dataset_dicts(names: Iterable[str], filter_empty: bool) -> List[Dict]:
    """
    The records of datasets ``names``, as detectron2's ``get_detection_dataset_dicts`` gives them to its loaders
    (concatenated; with ``filter_empty``, images without a non-crowd annotation dropped; class names checked
    alike and their histogram logged), each dataset loaded by :func:`load_dataset` and checked by
    :func:`check_dataset_dicts` first: bad data stops here, with errors naming the files, not mid-epoch.
    """
    names = list(names)
    dicts = list(itertools.chain.from_iterable(check_dataset_dicts(name, load_dataset(name)) for name in names))
    if filter_empty:
        dicts = filter_images_with_only_crowd_annotations(dicts)
        if not dicts:
            raise ValueError(
                f"No image of datasets {names} has a non-crowd annotation, and DATALOADER.FILTER_EMPTY_ANNOTATIONS "
                f"drops the others"
            )
    classes = MetadataCatalog.get(names[0]).get("thing_classes")
    if classes is not None and any("annotations" in d for d in dicts):
        check_metadata_consistency("thing_classes", names)
        print_instances_class_histogram(dicts, classes)
    return dicts


def build_yolact_train_loader(cfg):
    """
    detectron2's training loader over ``DATASETS.TRAIN`` (checked by :func:`load_yolact_dataset_dicts`) with
    the augmenting :class:`YolactDatasetMapper`.
    """
    dicts = load_yolact_dataset_dicts(cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    return build_detection_train_loader(cfg, mapper=YolactDatasetMapper(cfg, is_train=True), dataset=dicts)


def build_yolact_test_loader(cfg, dataset_name: str):
    """
    detectron2's inference loader over one dataset (checked by :func:`load_yolact_dataset_dicts`, every image
    kept) with the (non-augmenting) :class:`YolactDatasetMapper`.
    """
    return build_detection_test_loader(
        dataset=load_yolact_dataset_dicts([dataset_name], filter_empty=False),
        mapper=YolactDatasetMapper(cfg, is_train=False),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
