"""Bad datasets stop when the loader is built, with errors naming the files, keys, images and counts."""
import json
import logging
import traceback

import cv2
import pycocotools.mask as mask_util
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.structures import BoxMode

from yolact_d2.data import register_coco_dataset
from yolact_d2.data.build import load_yolact_dataset_dicts

NAME = "test_validation_dataset"
SQUARE = [[5, 5, 35, 5, 35, 25, 5, 25]]  # polygon of the 30 x 20 box at (5, 5)


@pytest.fixture(autouse=True)
def unregister():
    yield
    for catalog in (DatasetCatalog, MetadataCatalog):
        if NAME in catalog.list():
            catalog.remove(NAME)


def _coco(num_images, annotations=None):
    """A COCO dict of ``num_images`` 40 x 60 images, one square annotation each unless ``annotations``."""
    images = [{"id": i + 1, "file_name": f"im{i}.png", "height": 40, "width": 60} for i in range(num_images)]
    if annotations is None:
        annotations = [_annotation(10 + i, i + 1) for i in range(num_images)]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}


def _annotation(ann_id, image_id, bbox=(5, 5, 30, 20), segmentation=SQUARE, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": list(bbox), "area": 600,
            "iscrowd": iscrowd, "segmentation": segmentation}


def _write(tmp_path, coco, raw=None):
    """Write the json (``raw`` text, or ``coco``) and a PNG per image of ``coco``; returns the json path."""
    json_file = tmp_path / "instances.json"
    json_file.write_text(raw if raw is not None else json.dumps(coco))
    for image in (coco or {}).get("images", []):
        cv2.imwrite(str(tmp_path / image["file_name"]), np.full((40, 60, 3), 90, np.uint8))
    return str(json_file)


def _register_d2(tmp_path, coco, raw=None):
    """Register the way detectron2's tutorial does (no checks at registration)."""
    register_coco_instances(NAME, {}, _write(tmp_path, coco, raw), str(tmp_path))


def test_malformed_json_registered_with_detectron2_names_file_and_position(tmp_path):
    _register_d2(tmp_path, None, raw='{"images": [1, 2,, 3]}')
    with pytest.raises(ValueError, match=r"instances.json is not a JSON file \(Expecting value: line 1 column 18"):
        load_yolact_dataset_dicts([NAME], filter_empty=True)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_json_without_a_coco_key_names_the_key(tmp_path, key):
    coco = _coco(1)
    del coco[key]
    _register_d2(tmp_path, coco)
    with pytest.raises(ValueError, match=rf"instances.json is not a COCO instances json: it has no key \['{key}'\]"):
        load_yolact_dataset_dicts([NAME], filter_empty=True)


@pytest.mark.parametrize("missing, named", [([1, 3, 5], [1, 3, 5]), (list(range(7)), list(range(5)))])
def test_missing_image_files_are_counted_and_the_first_five_named(tmp_path, missing, named):
    json_file = _write(tmp_path, _coco(8))
    for i in missing:
        (tmp_path / f"im{i}.png").unlink()
    register_coco_dataset(NAME, json_file, str(tmp_path))  # registration checks the json, not the images
    with pytest.raises(FileNotFoundError, match=f"'{NAME}': {len(missing)} of 8 image files are missing") as e:
        load_yolact_dataset_dicts([NAME], filter_empty=False)
    assert str([str(tmp_path / f"im{i}.png") for i in named]) in str(e.value)
    assert f"im{missing[-1]}.png" not in str(e.value) or len(missing) <= 5


@pytest.mark.parametrize(
    "bad, problem",
    [
        ({"bbox": [5, 5, float("nan"), 20]}, "bbox [5, 5, nan, 20] is not 4 finite numbers"),
        ({"bbox": [5, 5, 30]}, "bbox [5, 5, 30] is not 4 finite numbers"),
        ({"segmentation": [[5, 5, float("inf"), 5, 35, 25, 5, 25]]}, "a polygon coordinate is not a finite number"),
        ({"segmentation": []}, "no segmentation (YOLACT trains on masks)"),
    ],
)
def test_invalid_annotations_are_an_error_naming_image_and_annotation(tmp_path, bad, problem):
    annotations = [_annotation(11, 1), dict(_annotation(12, 2), **bad), dict(_annotation(13, 3), **bad)]
    register_coco_dataset(NAME, _write(tmp_path, _coco(3, annotations)), str(tmp_path))
    with pytest.raises(ValueError, match=f"'{NAME}': 2 annotations are invalid") as e:
        load_yolact_dataset_dicts([NAME], filter_empty=True)
    assert f"image 2 (im1.png) annotation id 12: {problem}" in str(e.value)
    assert "image 3 (im2.png) annotation id 13" in str(e.value) and "id 11" not in str(e.value)


def test_registered_with_detectron2_an_invalid_annotation_is_named_by_its_id(tmp_path):
    annotations = [_annotation(11, 1), _annotation(12, 1, bbox=(5, 5, float("inf"), 20))]
    _register_d2(tmp_path, _coco(1, annotations))
    with pytest.raises(ValueError, match=r"image 1 \(im0.png\) annotation id 12: bbox"):
        load_yolact_dataset_dicts([NAME], filter_empty=True)


def test_records_without_a_json_file_are_checked_and_named_by_index(tmp_path):
    _write(tmp_path, _coco(1))
    record = {"file_name": str(tmp_path / "im0.png"), "image_id": 1, "height": 40, "width": 60,
              "annotations": [dict(_annotation(11, 1), bbox_mode=0), _annotation(12, 1, bbox=(5, 5, float("inf"), 20))]}
    for anno in record["annotations"]:
        anno.pop("id")
    DatasetCatalog.register(NAME, lambda: [record])
    with pytest.raises(ValueError, match=r"image 1 \(im0.png\) annotation #1: bbox"):
        load_yolact_dataset_dicts([NAME], filter_empty=True)


def test_zero_area_and_negative_boxes_are_dropped_with_a_warning(tmp_path, caplog):
    annotations = [
        _annotation(11, 1),
        _annotation(12, 1, bbox=(5, 5, 0, 20)),
        _annotation(13, 2, bbox=(35, 25, -30, -20)),  # the only annotation of image 2
        _annotation(14, 3),
    ]
    register_coco_dataset(NAME, _write(tmp_path, _coco(3, annotations)), str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="yolact_d2"):
        kept = load_yolact_dataset_dicts([NAME], filter_empty=False)
    assert [[a["id"] for a in d["annotations"]] for d in kept] == [[11], [], [14]]
    assert "dropped 2 annotations without area" in caplog.text
    assert "image 1 (im0.png) annotation id 12; image 2 (im1.png) annotation id 13" in caplog.text
    # DATALOADER.FILTER_EMPTY_ANNOTATIONS then drops the image left without annotations.
    assert [d["image_id"] for d in load_yolact_dataset_dicts([NAME], filter_empty=True)] == [1, 3]


SHORT_POLYGON = "annotation id 12: a polygon has 4 coordinates: a polygon is at least 3 points"


@pytest.mark.parametrize("register", [register_coco_dataset, register_coco_instances])
def test_polygons_with_fewer_than_3_points_stop_training_and_evaluation_alike(tmp_path, register):
    # detectron2's load_coco_json drops them (training went on), but the evaluator reads the file itself and
    # pycocotools crashes on them: both loaders now refuse the file, naming the annotation.
    annotations = [_annotation(11, 1), _annotation(12, 1, segmentation=[SQUARE[0], [5, 5, 35, 5]])]
    json_file = _write(tmp_path, _coco(1, annotations))
    if register is register_coco_dataset:
        register(NAME, json_file, str(tmp_path))
    else:
        register(NAME, {}, json_file, str(tmp_path))
    for filter_empty in (True, False):  # the training loader's, the test loader's
        expected = f"'{NAME}': 1 annotations are invalid; the first 1: image 1 \\(im0.png\\) {SHORT_POLYGON}"
        with pytest.raises(ValueError, match=expected):
            load_yolact_dataset_dicts([NAME], filter_empty=filter_empty)


def test_the_evaluators_conversion_of_records_meets_short_polygons_only_after_the_loader_refused_them(tmp_path):
    # A dataset of records (no json file): COCOEvaluator converts the records with convert_to_coco_json, where
    # pycocotools fails on a 2-point polygon; the test loader, built first, names it instead.
    _write(tmp_path, _coco(1))
    anno = dict(_annotation(12, 1, segmentation=[[5, 5, 35, 5]]), bbox_mode=0)
    DatasetCatalog.register(NAME, lambda: [{"file_name": str(tmp_path / "im0.png"), "image_id": 1, "height": 40,
                                            "width": 60, "annotations": [anno]}])
    MetadataCatalog.get(NAME).set(thing_classes=["a"])
    with pytest.raises(ValueError, match=SHORT_POLYGON):
        load_yolact_dataset_dicts([NAME], filter_empty=False)
    with pytest.raises(Exception) as deep:
        convert_to_coco_dict(NAME)
    assert "yolact_d2" not in "".join(traceback.format_tb(deep.tb))


def test_empty_and_crowd_only_images_follow_filter_empty_annotations(tmp_path):
    annotations = [_annotation(11, 1), _annotation(12, 2, iscrowd=1)]  # image 3 has none
    register_coco_dataset(NAME, _write(tmp_path, _coco(3, annotations)), str(tmp_path))
    assert [d["image_id"] for d in load_yolact_dataset_dicts([NAME], filter_empty=True)] == [1]
    assert [d["image_id"] for d in load_yolact_dataset_dicts([NAME], filter_empty=False)] == [1, 2, 3]


def test_a_dataset_without_usable_images_names_the_filter(tmp_path):
    register_coco_dataset(NAME, _write(tmp_path, _coco(2, [_annotation(11, 1, iscrowd=1)])), str(tmp_path))
    with pytest.raises(ValueError, match=f"No image of datasets \\['{NAME}'\\] has a non-crowd annotation"):
        load_yolact_dataset_dicts([NAME], filter_empty=True)


def test_a_bbox_outside_the_image_is_named_and_replaced_by_its_polygons_box(tmp_path, caplog):
    annotations = [
        _annotation(11, 1),  # bbox (5, 5, 30, 20): its polygon's box
        _annotation(12, 1, bbox=(50, 30, 40, 40)),  # reaches x 90, y 70 in the 60 x 40 image; polygon (5, 5, 30, 20)
        _annotation(13, 2, bbox=(5.4, 4.6, 30, 20.5)),  # within a pixel of its polygon's box: kept
        _annotation(14, 2, segmentation=[[50, 30, 70, 30, 70, 50, 50, 50]], bbox=(50, 30, 20, 20)),  # polygon out too
    ]
    register_coco_dataset(NAME, _write(tmp_path, _coco(2, annotations)), str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="yolact_d2"):
        records = load_yolact_dataset_dicts([NAME], filter_empty=True)
    boxes = {
        a["id"]: BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYWH_ABS)
        for r in records
        for a in r["annotations"]
    }
    # 14's polygon, clipped to the image, is (50, 30) - (60, 40).
    assert boxes == {11: [5, 5, 30, 20], 12: [5, 5, 30, 20], 13: [5.4, 4.6, 30, 20.5], 14: [50, 30, 10, 10]}
    assert (
        f"Dataset '{NAME}': 2 annotations have a bbox that is not the box of their segmentation inside the image"
        in caplog.text
    )
    assert (
        "image 1 (im0.png) annotation id 12: bbox [50.0, 30.0, 40.0, 40.0], segmentation's [5.0, 5.0, 30.0, 20.0]"
        in caplog.text
    )
    assert "annotation id 14: bbox [50.0, 30.0, 20.0, 20.0], segmentation's [50.0, 30.0, 10.0, 10.0]" in caplog.text
    assert "id 11" not in caplog.text and "id 13" not in caplog.text


# ---- A generic guard: a valid COCO json corrupted one field at a time --------------------------------------------

def _runs(mask):
    """Uncompressed COCO RLE counts of a (H, W) 0/1 mask: run lengths in column-major order, from a run of 0s."""
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return runs if flat[0] == 0 else [0] + runs


def _valid_coco():
    """2 images (40 x 60), 2 categories, annotations with a polygon, a compressed RLE and an uncompressed crowd RLE."""
    mask = np.zeros((40, 60), np.uint8, order="F")
    mask[10:20, 30:50] = 1
    rle = mask_util.encode(mask)
    coco = _coco(2, [_annotation(11, 1)])
    coco["categories"].append({"id": 7, "name": "b", "supercategory": "thing"})
    coco["annotations"] += [
        _annotation(12, 2, bbox=(30, 10, 20, 10), segmentation={"size": [40, 60], "counts": rle["counts"].decode()}),
        dict(_annotation(13, 2, bbox=(30, 10, 20, 10), iscrowd=1,
                         segmentation={"size": [40, 60], "counts": _runs(mask)}), category_id=7),
    ]
    return coco


# What each corruption may do without an error naming the key: the handling docs/robustness.md documents.
DOCUMENTED = {
    ("images", "id", "negative"): "accepted: any integer id",
    ("images", "height", "out of range"): "SizeMismatchError naming the file when the image is read",
    ("images", "width", "out of range"): "SizeMismatchError naming the file when the image is read",
    ("annotations", "id", "negative"): "accepted: any integer id",
    ("annotations", "id", "out of range"): "accepted: any integer id",
    ("images", "id", "out of range"): "accepted: any integer id",
    ("categories", "id", "out of range"): "accepted: any integer id",
    ("annotations", "iscrowd", "missing"): "accepted: 0 (not a crowd)",
    ("annotations", "area", "out of range"): "accepted: area only ranks small / medium / large in evaluation",
    ("annotations", "bbox", "negative"): "no area: dropped with a warning",
    ("annotations", "bbox", "out of range"): "not its segmentation's box: replaced by it, with a warning",
    ("annotations", "polygon", "duplicated"): "no area: dropped with a warning",
    ("annotations", "polygon", "negative"): "outside the image: the bbox is kept or replaced by the clipped box",
    ("annotations", "polygon", "out of range"): "outside the image: the bbox is kept or replaced by the clipped box",
    ("categories", "id", "negative"): "accepted: any integer id (sorted, then 0..C-1)",
    ("categories", "supercategory", "missing"): "accepted: not used",
    ("categories", "supercategory", "wrong type"): "accepted: not used",
    ("categories", "supercategory", "NaN"): "accepted: not used",
    ("categories", "supercategory", "negative"): "accepted: not used",
    ("categories", "supercategory", "out of range"): "accepted: not used",
    ("categories", "name", "negative"): "a string is expected: error",
}
SEGMENTATION_FORMS = ("polygon", "rle", "uncompressed rle", "rle size")
KINDS = ("missing", "wrong type", "NaN", "negative", "out of range", "duplicated")
# (section, index of the entry, key): the keys of each object of the json; segmentation's forms separately.
FIELDS = (
    [("images", 0, key) for key in ("id", "file_name", "height", "width")]
    + [("annotations", 0, key) for key in ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "polygon")]
    + [("annotations", 1, "rle"), ("annotations", 1, "rle size"), ("annotations", 2, "uncompressed rle")]
    + [("categories", 1, key) for key in ("id", "name", "supercategory")]
)
_BAD_VALUES = {  # kind -> value, for keys holding one number or string
    "wrong type": "3", "NaN": float("nan"), "negative": -5, "out of range": 10**9,
}


def _corrupt(coco, section, index, key, kind):
    """The json text of ``coco`` with ``kind`` done to ``key`` of ``coco[section][index]``; None if meaningless."""
    entry = coco[section][index]
    if key in SEGMENTATION_FORMS:
        segm = entry["segmentation"]
        if key == "polygon":
            values = {"missing": [], "wrong type": ["5, 5, 35, 5, 35, 25"], "NaN": [[5, 5, float("nan"), 5, 35, 25]],
                      "negative": [[-50, -5, -20, -5, -20, -25]], "out of range": [[5, 5, 900, 5, 900, 25, 5, 25]],
                      "duplicated": [[5, 5, 5, 5, 5, 5]]}  # one point three times
            entry["segmentation"] = values[kind]
        elif key == "rle size":
            if kind == "duplicated":
                return None
            segm["size"] = {"missing": None, "wrong type": "40x60", "NaN": [float("nan"), 60], "negative": [-40, 60],
                            "out of range": [400, 60]}[kind]
            if segm["size"] is None:
                del segm["size"]
        else:
            if kind == "duplicated":
                return None
            values = {"missing": None, "wrong type": 42, "NaN": [float("nan")], "negative": [-5, 2405],
                      "out of range": "zz" if key == "rle" else [10**6, 5]}
            segm["counts"] = values[kind]
            if segm["counts"] is None:
                del segm["counts"]
    elif kind == "missing":
        del entry[key]
    elif kind == "duplicated":
        if key in ("id", "file_name"):
            entry[key] = coco[section][index + 1 if index + 1 < len(coco[section]) else 0 if index else 1][key]
        else:  # the key twice in the object
            entry["__twice__"] = 0
            return json.dumps(coco).replace('"__twice__": 0', f'"{key}": {json.dumps(entry[key])}')
    else:
        value = 3 if kind == "wrong type" and isinstance(entry[key], str) else _BAD_VALUES[kind]
        entry[key] = [value] * 4 if key == "bbox" and kind != "wrong type" else value
        if key == "bbox" and kind == "out of range":
            entry[key] = [5, 5, 900, 20]
    return json.dumps(coco)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("section, index, key", FIELDS, ids=[f"{s}[{i}].{k}" for s, i, k in FIELDS])
def test_a_corrupted_field_is_named_or_handled_as_documented(tmp_path, section, index, key, kind):
    coco = _valid_coco()
    text = _corrupt(coco, section, index, key, kind)
    if text is None:
        pytest.skip(f"{kind} has no meaning for {key}")
    _write(tmp_path, _valid_coco())  # the image files
    (tmp_path / "instances.json").write_text(text)
    try:
        register_coco_dataset(NAME, str(tmp_path / "instances.json"), str(tmp_path))
        load_yolact_dataset_dicts([NAME], filter_empty=False)
    except (ValueError, KeyError, FileNotFoundError) as e:
        words = ("RLE", "polygon", "segmentation") if key in SEGMENTATION_FORMS else (f'"{key}"', f"'{key}'", key)
        assert f"Dataset '{NAME}'" in str(e), f"{type(e).__name__} without the dataset's name: {e}"
        assert any(word in str(e) for word in words), f"the key is not named: {e}"
        assert "yolact_d2" in traceback.extract_tb(e.__traceback__)[-1].filename, "raised outside yolact_d2"
    else:
        assert (section, key, kind) in DOCUMENTED, f"{section}[{index}].{key} {kind}: accepted without a word"
