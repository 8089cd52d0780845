"""
Registration of a user's COCO-format instance segmentation dataset, the detectron2 way, with clear errors.

:func:`register_coco_dataset` checks the files first, then registers them as detectron2's ``register_coco_instances``
does, keeping each annotation's ``id`` so that the checks of :mod:`.validation` can name it.
It also puts the dataset's ``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` in its metadata at once,
computed as detectron2's ``load_coco_json`` does when it loads the dataset (categories sorted by id, id ``k``-th
in that order -> contiguous id ``k``; so ids {3, 7, 42} become 0, 1, 2), so that the class count can be
checked and the class names drawn before the dataset is loaded.
"""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = ["register_coco_dataset", "add_dataset_argument", "read_coco_categories", "read_coco_json"]

logger = logging.getLogger(__name__)

_COCO_KEYS = ("images", "annotations", "categories")


def register_coco_dataset(name: str, json_file: str, image_root: str) -> None:
    """
    Register a COCO instances json and its image folder under ``name`` in detectron2's DatasetCatalog and
    MetadataCatalog (``json_file``, ``image_root``, ``evaluator_type`` "coco", ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id``), after checking them.

    Registering a name again with the same files does nothing (unless the json's categories changed); with other
    files it replaces the earlier registration, with a warning.

    Args:
        name (str): the dataset's name, for ``DATASETS.TRAIN`` / ``DATASETS.TEST``.
        json_file (str): COCO instances json (keys "images", "annotations", "categories").
        image_root (str): folder that the images' ``file_name`` are relative to.

    Raises:
        FileNotFoundError: when ``json_file`` or ``image_root`` does not exist.
        ValueError: when ``json_file`` is not JSON, or not a COCO instances json.
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    categories = _coco_category_metadata(read_coco_categories(name, json_file))
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Dataset '{name}': image folder not found: {image_root}")
    if name in DatasetCatalog.list():
        old = MetadataCatalog.get(name)
        old_files = (old.get("json_file"), old.get("image_root"))
        if old_files == (json_file, image_root) and all(old.get(k) == v for k, v in categories.items()):
            return
        if old_files != (json_file, image_root):
            logger.warning(
                f"Dataset '{name}' was registered with json {old_files[0]} and images {old_files[1]}; "
                f"replacing it with json {json_file} and images {image_root}"
            )
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"]))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **categories)


def read_coco_json(name: str, json_file: str) -> dict:
    """
    The content of a COCO instances json, after checking that the file is one: an object with the lists
    "images", "annotations" and "categories", and no key twice in any object (JSON keeps the last silently).
    Errors name the dataset ``name``, the file, and the JSON error's position, the missing or repeated key.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"Dataset '{name}': COCO json file not found: {json_file}")
    try:
        with open(json_file, encoding="utf-8") as f:
            content = json.load(f, object_pairs_hook=_object_without_repeated_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"Dataset '{name}': {json_file} is not a JSON file ({e})") from e
    except _RepeatedKeyError as e:
        raise ValueError(f"Dataset '{name}': {json_file} has an object with the key {e} twice: keep one") from None
    if not isinstance(content, dict):
        raise ValueError(
            f"Dataset '{name}': {json_file} is not a COCO instances json: it holds a {type(content).__name__}, "
            f"not an object with keys {list(_COCO_KEYS)}"
        )
    missing = [key for key in _COCO_KEYS if key not in content]
    if missing:
        raise ValueError(f"Dataset '{name}': {json_file} is not a COCO instances json: it has no key {missing}")
    not_lists = [key for key in _COCO_KEYS if not isinstance(content[key], list)]
    if not_lists:
        raise ValueError(f"Dataset '{name}': in {json_file}, {not_lists} must be lists (of objects)")
    return content


class _RepeatedKeyError(ValueError):
    pass


def _object_without_repeated_keys(pairs):
    content = dict(pairs)
    if len(content) != len(pairs):
        keys = [key for key, _ in pairs]
        raise _RepeatedKeyError(repr(next(key for key in keys if keys.count(key) > 1)))
    return content


def read_coco_categories(name: str, json_file: str) -> list:
    """
    The "categories" of a COCO instances json (:func:`read_coco_json`), after checking that each has an integer
    "id", unique, and a "name" string: errors name the dataset ``name`` and the file.
    """
    return check_coco_categories(name, json_file, read_coco_json(name, json_file)["categories"])


def check_coco_categories(name: str, json_file: str, categories: list) -> list:
    """``categories`` (the "categories" of ``json_file``) after the checks of :func:`read_coco_categories`."""
    bad = [
        f"#{i} {c!r}"
        for i, c in enumerate(categories)
        if not (isinstance(c, dict) and is_json_integer(c.get("id")) and isinstance(c.get("name"), str))
    ]
    if not categories or bad:
        raise ValueError(
            f"Dataset '{name}': the \"categories\" of {json_file} must be a non-empty list of objects with "
            f"an integer \"id\" and a string \"name\"{'; not so: ' + ', '.join(bad[:5]) if bad else ''}"
        )
    if len({c["id"] for c in categories}) != len(categories):
        raise ValueError(f"Dataset '{name}': {json_file} has several categories with the same id")
    return categories


def is_json_integer(value) -> bool:
    """Whether a JSON value is an integer (not a bool, not a float such as 1.0 or NaN)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_category_metadata(categories: list) -> dict:
    """``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` of COCO categories, as ``load_coco_json``."""
    categories = sorted(categories, key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def add_dataset_argument(parser):
    """
    Add to an argparse parser the repeatable option ``--dataset NAME JSON_FILE IMAGE_ROOT`` of the tools; they
    call :func:`register_coco_dataset` on each ``args.dataset`` before using the config.
    """
    parser.add_argument(
        "--dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON_FILE", "IMAGE_ROOT"),
        help="register a COCO-format dataset under NAME, for DATASETS.TRAIN / DATASETS.TEST (repeatable)",
    )
    return parser
