"""
Detections as COCO-style dicts, for programs that consume them without files: the format of COCO's results
json (``COCO.loadRes``), with masks as compressed RLE or as polygons.

Ids, as every results file of yolact_d2 writes them (the demo's ``--json-output``):

* ``category_id``: the dataset's id of the class when its metadata maps them
  (``thing_dataset_id_to_contiguous_id``: COCO, ``--dataset``), else the class index + 1, as COCO's ids
  start at 1 (:func:`coco_category_ids`);
* ``image_id``: the dataset's id of the image when every image is one of the dataset's (its ``json_file``),
  else the image's position among the inputs, from 1 (:func:`coco_image_ids`);
* ``file_name``: the image (or video) the result was found in, so that a file is understood without its inputs.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Union

import cv2
import numpy as np

from detectron2.structures import Instances

from ..data.datasets import read_coco_json
from ..evaluation import instances_to_yolact_coco_json

__all__ = ["instances_to_coco_dicts", "mask_to_polygons", "coco_category_ids", "coco_image_ids"]

logger = logging.getLogger(__name__)

MASK_FORMATS = ("rle", "polygon")


def instances_to_coco_dicts(
    instances: Instances,
    image_id: int,
    mask_format: str = "rle",
    class_ids: Optional[Union[Sequence[int], Dict[int, int]]] = None,
    file_name: Optional[str] = None,
) -> List[Dict]:
    """
    One COCO result dict per instance of a model's output, e.g. ``model([...])[0]["instances"].to("cpu")``.

    Args:
        instances: detectron2 ``Instances`` on the CPU with ``pred_boxes`` (XYXY, pixels of the image),
            ``scores``, ``pred_classes`` (contiguous, 0..C-1) and optionally ``pred_masks`` ((N, H, W) bool).
        image_id: the ``image_id`` of every dict.
        mask_format: "rle" (a compressed RLE, ``counts`` as str, as detectron2's COCOEvaluator writes) or
            "polygon" (a list of ``[x1, y1, x2, y2, ...]`` outlines in pixel coordinates, see
            :func:`mask_to_polygons`; a mask without any outline of three points, e.g. an empty one, is one
            polygon of zero area at its box's corner, which pycocotools rasterises to an empty mask: an empty
            list would crash ``COCOeval.evaluate``).
        class_ids: ``class_ids[k]`` is the ``category_id`` written for class ``k`` (e.g. the dataset's ids,
            :func:`coco_category_ids`); None writes ``k + 1``.
        file_name: written as every dict's ``file_name`` when given.

    Returns:
        list[dict]: ``image_id``, ``category_id``, ``bbox`` (XYWH, pixels), ``score``, with masks
        ``segmentation``, for YOLACT++ (``mask_scores``) ``mask_score``, and ``file_name`` when given; an empty
        list without instances.
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}; got '{mask_format}'")
    has_masks = instances.has("pred_masks")
    if mask_format == "polygon" and has_masks:
        fields = {k: v for k, v in instances.get_fields().items() if k != "pred_masks"}
        results = instances_to_yolact_coco_json(Instances(instances.image_size, **fields), image_id)
        for result, mask in zip(results, instances.pred_masks):
            result["segmentation"] = mask_to_polygons(np.asarray(mask)) or _empty_polygon(result["bbox"])
    else:
        results = instances_to_yolact_coco_json(instances, image_id)
    for result in results:
        k = result["category_id"]
        result["category_id"] = k + 1 if class_ids is None else int(class_ids[k])
        if file_name is not None:
            result["file_name"] = file_name
    return results


def coco_category_ids(metadata, num_classes: int) -> Dict[int, int]:
    """
    Class index (0..C-1) -> the ``category_id`` results are written with: the dataset's id where ``metadata``
    (a detectron2 ``Metadata``) has ``thing_dataset_id_to_contiguous_id``, else the index + 1.
    """
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    if id_map:
        return {k: dataset_id for dataset_id, k in id_map.items()}
    return {k: k + 1 for k in range(num_classes)}


def coco_image_ids(paths: Sequence[str], metadata) -> List[int]:
    """
    The ``image_id`` of each image file in ``paths``: the id in the dataset's COCO json (``metadata``'s
    ``json_file``, file names under its ``image_root``) when every file is one of its images, else the file's
    position in ``paths`` from 1 (with a warning when the json lists some of them but not all), so that ids never
    mix two numberings.
    """
    positions = list(range(1, len(paths) + 1))
    json_file, image_root = metadata.get("json_file"), metadata.get("image_root")
    if json_file is None or image_root is None or not os.path.isfile(json_file):
        return positions
    ids = {
        os.path.abspath(os.path.join(image_root, image["file_name"])): image["id"]
        for image in read_coco_json(metadata.name, json_file)["images"]
    }
    found = [ids.get(os.path.abspath(path)) for path in paths]
    if None not in found:
        return found
    if any(i is not None for i in found):
        logger.warning(
            f"{found.count(None)} of {len(paths)} inputs are not images of dataset '{metadata.name}' "
            f"({json_file}): image_id is each input's position, from 1, not the dataset's id"
        )
    return positions


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """
    The outlines of a binary (H, W) mask as COCO polygons: one ``[x1, y1, x2, y2, ...]`` list per connected
    part, in pixel coordinates (x right, y down, a pixel's centre at integer + 0.5). COCO rasterises each
    polygon by the even-odd rule and merges the polygons of an annotation, so a part's holes are kept by
    joining each hole to the part's outline with a cut that goes there and back along the same line. Parts
    of fewer than three outline points (one or two isolated pixels) are left out.
    """
    contours, hierarchy = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    parents = hierarchy[0][:, 3]
    polygons = []
    for i, contour in enumerate(contours):
        if parents[i] >= 0:
            continue  # a hole, spliced into its outline below
        outline = contour[:, 0, :].astype(np.float64)
        for j in np.flatnonzero(parents == i):
            outline = _splice_hole(outline, contours[j][:, 0, :].astype(np.float64))
        if len(outline) >= 3:
            polygons.append((outline + 0.5).ravel().tolist())
    return polygons


def _empty_polygon(bbox: Sequence[float]) -> List[List[float]]:
    """One polygon of zero area, three times the corner (x, y) of an XYWH box: an empty mask, as COCO polygons."""
    return [[float(bbox[0]), float(bbox[1])] * 3]


def _splice_hole(outline: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """
    (P, 2) outline and (Q, 2) hole -> one (P + Q + 2, 2) closed path: along the outline to the point nearest
    the hole, around the hole from its nearest point back to that point, then back to the outline.
    """
    distances = ((outline[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmin(distances), distances.shape)
    around_hole = np.concatenate([hole[j:], hole[: j + 1]])
    return np.concatenate([outline[: i + 1], around_hole, outline[i:]])
