"""
Checks of a dataset made when a loader is built, before the first iteration, so that bad data stops a run at its
start with an error naming the dataset, the file, the key, the first few images or annotations and the count,
rather than mid-epoch or in a crash deep inside detectron2 or pycocotools. Training and evaluation load through
the same checks, so a dataset that trains also evaluates. docs/robustness.md lists every case.

* its COCO json, when it has one (:func:`check_coco_json`): the file is JSON, with lists "images",
  "annotations" and "categories", no key twice in an object, and each entry's keys of the right type and range
  (ids unique integers, references to existing images and categories, positive image sizes, ...);
* image files that do not exist: how many, and the first few;
* annotations without a segmentation, with a bbox or polygon coordinate that is not a finite number
  (NaN, inf, missing), a polygon of fewer than 3 points or an RLE that does not cover its image: an error
  (YOLACT trains on masks; pycocotools crashes on such polygons in evaluation, which reads the file itself);
* annotations without area (a bbox of width or height <= 0, or a segmentation outside the image): dropped,
  with one warning naming the first few and the count (as detectron2's mappers drop empty boxes);
* annotations whose bbox is not the box of their segmentation inside the image (more than ``BOX_TOLERANCE``
  pixels away, e.g. outside the image): trained with the segmentation's box, with one warning naming them.
"""
import collections
import logging
import math
import os
from typing import Dict, List, Optional

import pycocotools.mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .datasets import check_coco_categories, is_json_integer, read_coco_json

__all__ = ["check_registered", "load_dataset", "check_coco_json", "check_dataset_dicts"]

logger = logging.getLogger(__name__)

# How many offending images or annotations an error or warning names (it always gives the total count).
MAX_NAMED = 5
# How far (pixels) a bbox may be from its segmentation's box before the segmentation's box replaces it.
BOX_TOLERANCE = 1.0


def load_dataset(name: str) -> List[Dict]:
    """
    The records of the registered dataset ``name`` (``DatasetCatalog.get``), its ``json_file`` (when its metadata
    has one) checked by :func:`check_coco_json` first: before loading, or after it for loaders that write their
    json when called.
    """
    check_registered(name)
    json_file = MetadataCatalog.get(name).get("json_file")
    checked = json_file is not None and os.path.isfile(json_file)
    if checked:
        check_coco_json(name, json_file)
    dicts = DatasetCatalog.get(name)
    if not checked and json_file is not None:
        check_coco_json(name, json_file)
    if len(dicts) == 0:
        raise ValueError(f"Dataset '{name}' has no images")
    return dicts


def check_registered(name: str) -> None:
    """Raise an error naming the dataset ``name`` when it is not registered, with how to register it."""
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"Dataset '{name}' is not registered. Register it first (e.g. detectron2.data.datasets."
            f"register_coco_instances, or the tools' --dataset NAME JSON_FILE IMAGE_ROOT) or import the module "
            f"that does."
        )


def check_dataset_dicts(name: str, dicts: List[Dict]) -> List[Dict]:
    """
    Check the records of dataset ``name`` (see the module docstring).

    Args:
        name: the dataset's name, for the messages.
        dicts: its records in detectron2's format (``file_name``, ``image_id``, optional ``height``, ``width``
            and ``annotations`` with ``bbox`` (XYWH or XYXY by ``bbox_mode``), ``segmentation`` and, if the loader
            kept it, ``id``).

    Returns:
        the records; those with an annotation without area, or whose bbox is not its segmentation's, as copies
        without it, or with the segmentation's box (XYWH).

    Raises:
        FileNotFoundError: when image files are missing.
        ValueError: when annotations have no segmentation, non-finite coordinates or polygons of < 3 points.
    """
    _check_image_files(name, dicts)
    invalid = [
        f"{_describe(record, index, anno)}: {problem}"
        for record in dicts
        for index, anno in enumerate(record.get("annotations", []))
        for problem in [_annotation_problem(anno, record.get("height"), record.get("width"))]
        if problem
    ]
    _raise_if_any(name, "annotations", invalid)
    empty, moved = [], []
    dicts = [_with_boxes_of_segmentations(record, empty, moved) for record in dicts]
    if empty:
        logger.warning(
            f"Dataset '{name}': dropped {len(empty)} annotations without area (a bbox of width or height <= 0, or a "
            f"segmentation outside the image); the first {min(len(empty), MAX_NAMED)}: {'; '.join(empty[:MAX_NAMED])}"
        )
    if moved:
        logger.warning(
            f"Dataset '{name}': {len(moved)} annotations have a bbox that is not the box of their segmentation "
            f"inside the image (by more than {BOX_TOLERANCE} pixel): training uses the segmentation's box; the "
            f"first {min(len(moved), MAX_NAMED)}: {'; '.join(moved[:MAX_NAMED])}. Fix the bbox in the file for "
            f"bbox evaluation, which reads it."
        )
    return dicts


def check_coco_json(name: str, json_file: str) -> None:
    """
    Check the COCO instances json of dataset ``name`` as a whole, before detectron2's ``load_coco_json`` reads
    it (which fails deep inside on bad ids or keys, and drops polygons of < 3 points that the evaluator, reading
    the same file, would crash on): every image has a unique integer ``id``, a unique ``file_name`` and
    positive integer ``height`` and ``width``; every annotation a unique integer ``id``, the ``image_id`` of an
    image, the ``category_id`` of a category, a finite non-negative ``area``, ``iscrowd`` 0 or 1 if present,
    and a valid bbox and segmentation (:func:`_annotation_problem`).

    Raises:
        ValueError: naming the file, the count and the first images or annotations with the key at fault.
    """
    content = read_coco_json(name, json_file)
    category_ids = {c["id"] for c in check_coco_categories(name, json_file, content["categories"])}
    images, problems = {}, []
    file_names = collections.Counter(im.get("file_name") for im in content["images"] if isinstance(im, dict))
    image_ids = collections.Counter(im.get("id") for im in content["images"] if isinstance(im, dict))
    for index, image in enumerate(content["images"]):
        problem = _image_problem(image, image_ids, file_names)
        if problem:
            problems.append(f"image #{index} (id {image.get('id') if isinstance(image, dict) else None}): {problem}")
        else:
            images[image["id"]] = image
    _raise_if_any(name, f"images of {json_file}", problems)
    annotation_ids = collections.Counter(a.get("id") for a in content["annotations"] if isinstance(a, dict))
    for index, anno in enumerate(content["annotations"]):
        if not isinstance(anno, dict):
            problems.append(f"annotation #{index}: is a {type(anno).__name__}, not an object")
            continue
        image = images.get(anno.get("image_id")) if is_json_integer(anno.get("image_id")) else None
        problem = _coco_annotation_problem(anno, image, annotation_ids, category_ids)
        if problem:
            record = {"image_id": anno.get("image_id"), "file_name": (image or {}).get("file_name", "no image")}
            problems.append(f"{_describe(record, index, anno)}: {problem}")
    _raise_if_any(name, "annotations", problems)


def _raise_if_any(name: str, what: str, problems: List[str]) -> None:
    if problems:
        raise ValueError(
            f"Dataset '{name}': {len(problems)} {what} are invalid; the first {min(len(problems), MAX_NAMED)}: "
            f"{'; '.join(problems[:MAX_NAMED])}. Fix or remove them in the dataset's file."
        )


def _image_problem(image, ids: collections.Counter, file_names: collections.Counter) -> str:
    """What is wrong with an entry of a COCO json's "images": "" (nothing) or the key and its rule."""
    if not isinstance(image, dict):
        return f"is a {type(image).__name__}, not an object"
    if not is_json_integer(image.get("id")):
        return f"\"id\" is {image.get('id')!r}: it must be an integer"
    if ids[image["id"]] > 1:
        return f"\"id\" {image['id']} is the id of {ids[image['id']]} images"
    if not isinstance(image.get("file_name"), str) or not image["file_name"]:
        return f"\"file_name\" is {image.get('file_name')!r}: it must be the image's path under the image folder"
    if file_names[image["file_name"]] > 1:
        return f"\"file_name\" {image['file_name']} is listed {file_names[image['file_name']]} times"
    for key in ("height", "width"):
        if not is_json_integer(image.get(key)) or image[key] <= 0:
            return f"\"{key}\" is {image.get(key)!r}: it must be the image's {key} in pixels, a positive integer"
    return ""


def _coco_annotation_problem(anno: Dict, image, ids: collections.Counter, category_ids) -> str:
    """What is wrong with an object of a COCO json's "annotations": "" or the key and its rule."""
    if not is_json_integer(anno.get("id")):
        return f"\"id\" is {anno.get('id')!r}: it must be an integer"
    if ids[anno["id"]] > 1:
        return f"\"id\" {anno['id']} is the id of {ids[anno['id']]} annotations"
    if image is None:
        return f"\"image_id\" {anno.get('image_id')!r} is the id of no image"
    if not is_json_integer(anno.get("category_id")) or anno["category_id"] not in category_ids:
        return f"\"category_id\" {anno.get('category_id')!r} is the id of no category ({sorted(category_ids)})"
    if not _finite_numbers([anno.get("area")]) or anno["area"] < 0:
        return f"\"area\" is {anno.get('area')!r}: it must be the mask's pixel count (COCO evaluation needs it)"
    if anno.get("iscrowd", 0) not in (0, 1) or isinstance(anno.get("iscrowd"), float):
        return f"\"iscrowd\" is {anno['iscrowd']!r}: it must be 0 or 1"
    return _annotation_problem(anno, image["height"], image["width"])


def _check_image_files(name: str, dicts: List[Dict]) -> None:
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        raise FileNotFoundError(
            f"Dataset '{name}': {len(missing)} of {len(dicts)} image files are missing; the first "
            f"{min(len(missing), MAX_NAMED)}: {missing[:MAX_NAMED]}. Check the image folder the dataset was "
            f"registered with."
        )


def _annotation_problem(anno: Dict, height: Optional[int] = None, width: Optional[int] = None) -> str:
    """
    What is wrong with one annotation's bbox and segmentation: "" (nothing) or a description of the invalid
    value. A segmentation is a list of polygons, each of at least 3 points (x, y) of finite numbers, or a
    compressed or uncompressed RLE whose ``size`` is the image's (``height``, ``width``, when known) and whose
    counts cover it exactly.
    """
    bbox = anno.get("bbox")
    if not _finite_numbers(bbox) or len(bbox) != 4:
        return f"bbox {bbox} is not 4 finite numbers"
    segm = anno.get("segmentation")
    if not segm:
        return "no segmentation (YOLACT trains on masks)"
    if isinstance(segm, dict):
        return _rle_problem(segm, height, width)
    if not isinstance(segm, list) or not all(isinstance(polygon, (list, tuple)) for polygon in segm):
        return "segmentation is neither a list of polygons (lists [x1, y1, x2, y2, ...]) nor an RLE object"
    if not all(_finite_numbers(polygon) for polygon in segm):
        return "a polygon coordinate is not a finite number"
    short = [len(polygon) for polygon in segm if len(polygon) < 6 or len(polygon) % 2]
    if short:
        return (
            f"a polygon has {short[0]} coordinates: a polygon is at least 3 points (x, y), 6 numbers or more, "
            f"in pairs (pycocotools' evaluation fails on others)"
        )
    return ""


def _rle_problem(rle: Dict, height: Optional[int], width: Optional[int]) -> str:
    """What is wrong with a COCO RLE (``size`` [h, w], ``counts`` a list of run lengths or a compressed string)."""
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(is_json_integer(v) and v > 0 for v in size)):
        return f"RLE \"size\" is {size!r}: it must be [height, width]"
    if height is not None and list(size) != [height, width]:
        return f"RLE \"size\" {list(size)} is not the image's [height, width] [{height}, {width}]"
    if isinstance(counts, (str, bytes)):
        runs = _compressed_rle_runs(counts if isinstance(counts, str) else counts.decode("ascii", "replace"))
    elif isinstance(counts, list) and all(is_json_integer(c) for c in counts):
        runs = counts
    else:
        return "RLE \"counts\" must be a list of run lengths or a compressed RLE string"
    if runs is None or any(c < 0 for c in runs) or sum(runs) != size[0] * size[1]:
        return f"RLE \"counts\" do not cover the {size[0]} x {size[1]} mask (run lengths >= 0, summing to h * w)"
    return ""


def _compressed_rle_runs(counts: str) -> Optional[List[int]]:
    """
    The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``: 5 bits a character from
    ``chr(48)``, 0x20 continues, 0x10 the sign; from the fourth run on, each the difference to the run two
    before), or None when the string is not one.
    """
    runs, i = [], 0
    while i < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if i == len(counts) or not 0 <= ord(counts[i]) - 48 < 64:
                return None
            c = ord(counts[i]) - 48
            value |= (c & 0x1F) << shift
            more, i, shift = c & 0x20, i + 1, shift + 5
            if not more and c & 0x10:
                value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def _finite_numbers(values) -> bool:
    """Whether ``values`` is a sequence of numbers (not bools, not strings), all finite."""
    try:
        return all(not isinstance(v, (bool, str)) and math.isfinite(v) for v in values)
    except TypeError:
        return False


def _xywh(anno: Dict) -> List[float]:
    """The annotation's bbox as XYWH, in pixels."""
    return list(BoxMode.convert(list(anno["bbox"]), anno.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYWH_ABS))


def _segmentation_box(segm, height: Optional[int], width: Optional[int]) -> List[float]:
    """
    XYWH box of a (checked) segmentation inside the (``height``, ``width``) image when known: a polygon's extent
    clipped to the image, or an RLE's extent (pycocotools' ``toBbox``).
    """
    if isinstance(segm, dict):
        rle = mask_util.frPyObjects(segm, *segm["size"]) if isinstance(segm["counts"], list) else segm
        return [float(v) for v in mask_util.toBbox(rle)]
    xs = [x for polygon in segm for x in polygon[0::2]]
    ys = [y for polygon in segm for y in polygon[1::2]]
    x0, x1 = (min(xs), max(xs)) if width is None else (max(min(xs), 0), min(max(xs), width))
    y0, y1 = (min(ys), max(ys)) if height is None else (max(min(ys), 0), min(max(ys), height))
    return [float(x0), float(y0), float(max(x1 - x0, 0)), float(max(y1 - y0, 0))]


def _with_boxes_of_segmentations(record: Dict, empty: List[str], moved: List[str]) -> Dict:
    """
    The record without its annotations that have no area (their description appended to ``empty``), and with
    the segmentation's box (XYWH) for those whose bbox differs from it by more than ``BOX_TOLERANCE`` pixels
    (described in ``moved``).
    """
    annos, changed = [], False
    for index, anno in enumerate(record.get("annotations", [])):
        given = _xywh(anno)
        box = _segmentation_box(anno["segmentation"], record.get("height"), record.get("width"))
        if min(given[2:] + box[2:]) <= 0:
            empty.append(_describe(record, index, anno))
            changed = True
            continue
        if max(abs(a - b) for a, b in zip(given, box)) > BOX_TOLERANCE:
            moved.append(f"{_describe(record, index, anno)}: bbox {_rounded(given)}, segmentation's {_rounded(box)}")
            anno, changed = dict(anno, bbox=box, bbox_mode=BoxMode.XYWH_ABS), True
        annos.append(anno)
    return dict(record, annotations=annos) if changed else record


def _rounded(box: List[float]) -> List[float]:
    return [round(float(v), 1) for v in box]


def _describe(record: Dict, index: int, anno: Dict) -> str:
    which = f"id {anno['id']}" if "id" in anno else f"#{index}"
    return f"image {record.get('image_id')} ({os.path.basename(record['file_name'])}) annotation {which}"
