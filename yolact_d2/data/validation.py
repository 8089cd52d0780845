"""
Checks of a dataset's records (detectron2's dataset dicts) made when a loader is built, before the first
iteration, so that bad data stops a run at its start with an error naming the dataset, the files and the count,
rather than mid-epoch (or, for NaN polygon coordinates, in a crash of pycocotools).

* a dataset that cannot be loaded (malformed JSON, a JSON that is not COCO): the JSON file and the problem;
* image files that do not exist: how many, and the first few;
* annotations without a segmentation, or with a bbox or polygon coordinate that is not a finite number
  (NaN, inf, missing): an error naming the first few (image and annotation) and the count; YOLACT trains on
  masks, and pycocotools cannot rasterise a non-finite polygon;
* annotations whose bbox has no area (width or height <= 0): dropped, with one warning naming the first few
  and the count (as detectron2's mappers drop empty boxes).

Polygons with fewer than 3 points are dropped by detectron2's ``load_coco_json`` (with a warning giving
their count), so they never reach these checks.
"""
import logging
import math
import os
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .datasets import read_coco_categories

__all__ = ["check_registered", "load_dataset", "check_dataset_dicts"]

logger = logging.getLogger(__name__)

# How many offending images or annotations an error or warning names (it always gives the total count).
MAX_NAMED = 5


def load_dataset(name: str) -> List[Dict]:
    """
    The records of the registered dataset ``name`` (``DatasetCatalog.get``). When loading fails, or gives no
    images or no annotations, and the dataset has a ``json_file`` in its metadata, the file is checked as a COCO
    instances json, so that the error names the file and the JSON error position or the missing key.
    """
    check_registered(name)
    try:
        dicts = DatasetCatalog.get(name)
    except (ValueError, KeyError, TypeError):  # json.JSONDecodeError is a ValueError
        _check_json_file(name)
        raise
    if len(dicts) == 0:
        _check_json_file(name)
        raise ValueError(f"Dataset '{name}' has no images")
    if not any(d.get("annotations") for d in dicts):  # legitimate for inference only; a json may lack the key
        _check_json_file(name)
    return dicts


def check_registered(name: str) -> None:
    """Raise an error naming the dataset ``name`` when it is not registered, with how to register it."""
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"Dataset '{name}' is not registered. Register it first (e.g. detectron2.data.datasets."
            f"register_coco_instances, or the tools' --dataset NAME JSON_FILE IMAGE_ROOT) or import the module "
            f"that does."
        )


def _check_json_file(name: str) -> None:
    """Raise the error of :func:`read_coco_categories` when the dataset's json file is not a COCO json."""
    json_file = MetadataCatalog.get(name).get("json_file")
    if json_file is not None:
        read_coco_categories(name, json_file)


def check_dataset_dicts(name: str, dicts: List[Dict]) -> List[Dict]:
    """
    Check the records of dataset ``name`` (see the module docstring).

    Args:
        name: the dataset's name, for the messages.
        dicts: its records in detectron2's format (``file_name``, ``image_id``, optional ``annotations``
            with ``bbox`` (XYWH or XYXY by ``bbox_mode``), ``segmentation`` and, if the loader kept it, ``id``).

    Returns:
        the records, those with an annotation of zero area as copies without it.

    Raises:
        FileNotFoundError: when image files are missing.
        ValueError: when annotations have no segmentation or non-finite coordinates.
    """
    _check_image_files(name, dicts)
    invalid, empty = [], []
    for record in dicts:
        for index, anno in enumerate(record.get("annotations", [])):
            problem = _annotation_problem(anno)
            if problem == "zero area":
                empty.append(_describe(record, index, anno))
            elif problem:
                invalid.append(f"{_describe(record, index, anno)}: {problem}")
    if invalid:
        raise ValueError(
            f"Dataset '{name}': {len(invalid)} annotations are invalid; the first {min(len(invalid), MAX_NAMED)}: "
            f"{'; '.join(invalid[:MAX_NAMED])}. Fix or remove them in the dataset's file."
        )
    if not empty:
        return dicts
    logger.warning(
        f"Dataset '{name}': dropped {len(empty)} annotations whose bbox has no area (width or height <= 0); the "
        f"first {min(len(empty), MAX_NAMED)}: {'; '.join(empty[:MAX_NAMED])}"
    )
    return [_without_empty_boxes(record) for record in dicts]


def _check_image_files(name: str, dicts: List[Dict]) -> None:
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        raise FileNotFoundError(
            f"Dataset '{name}': {len(missing)} of {len(dicts)} image files are missing; the first "
            f"{min(len(missing), MAX_NAMED)}: {missing[:MAX_NAMED]}. Check the image folder the dataset was "
            f"registered with."
        )


def _annotation_problem(anno: Dict) -> str:
    """What is wrong with one annotation: "" (nothing), "zero area", or a description of the invalid value."""
    bbox = anno.get("bbox")
    if not _finite_numbers(bbox) or len(bbox) != 4:
        return f"bbox {bbox} is not 4 finite numbers"
    segm = anno.get("segmentation")
    if not segm:
        return "no segmentation (YOLACT trains on masks)"
    if isinstance(segm, list) and not all(_finite_numbers(polygon) for polygon in segm):
        return "a polygon coordinate is not a finite number"
    return "" if _box_area(anno) > 0 else "zero area"


def _finite_numbers(values) -> bool:
    """Whether ``values`` is a sequence of numbers, all finite."""
    try:
        return all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def _box_area(anno: Dict) -> float:
    """Area of the annotation's bbox in pixels, 0 when its width or height is not positive."""
    x0, y0, x1, y1 = BoxMode.convert(list(anno["bbox"]), anno.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
    return (x1 - x0) * (y1 - y0) if x1 > x0 and y1 > y0 else 0.0


def _describe(record: Dict, index: int, anno: Dict) -> str:
    which = f"id {anno['id']}" if "id" in anno else f"#{index}"
    return f"image {record.get('image_id')} ({os.path.basename(record['file_name'])}) annotation {which}"


def _without_empty_boxes(record: Dict) -> Dict:
    annos = record.get("annotations", [])
    kept = [anno for anno in annos if _box_area(anno) > 0]
    return record if len(kept) == len(annos) else dict(record, annotations=kept)
