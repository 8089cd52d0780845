"""Bad datasets stop when the loader is built, with errors naming the files, keys, images and counts."""
import json
import logging

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

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


def test_registered_with_detectron2_an_invalid_annotation_is_named_by_its_index(tmp_path):
    annotations = [_annotation(11, 1), _annotation(12, 1, bbox=(5, 5, float("inf"), 20))]
    _register_d2(tmp_path, _coco(1, annotations))
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
    assert "dropped 2 annotations whose bbox has no area" in caplog.text
    assert "image 1 (im0.png) annotation id 12; image 2 (im1.png) annotation id 13" in caplog.text
    # DATALOADER.FILTER_EMPTY_ANNOTATIONS then drops the image left without annotations.
    assert [d["image_id"] for d in load_yolact_dataset_dicts([NAME], filter_empty=True)] == [1, 3]


def test_polygons_with_fewer_than_3_points_are_dropped_by_detectron2(tmp_path):
    annotations = [_annotation(11, 1), _annotation(12, 1, segmentation=[[5, 5, 35, 5]])]
    register_coco_dataset(NAME, _write(tmp_path, _coco(1, annotations)), str(tmp_path))
    (record,) = load_yolact_dataset_dicts([NAME], filter_empty=True)
    assert [a["id"] for a in record["annotations"]] == [11]


def test_empty_and_crowd_only_images_follow_filter_empty_annotations(tmp_path):
    annotations = [_annotation(11, 1), _annotation(12, 2, iscrowd=1)]  # image 3 has none
    register_coco_dataset(NAME, _write(tmp_path, _coco(3, annotations)), str(tmp_path))
    assert [d["image_id"] for d in load_yolact_dataset_dicts([NAME], filter_empty=True)] == [1]
    assert [d["image_id"] for d in load_yolact_dataset_dicts([NAME], filter_empty=False)] == [1, 2, 3]


def test_a_dataset_without_usable_images_names_the_filter(tmp_path):
    register_coco_dataset(NAME, _write(tmp_path, _coco(2, [_annotation(11, 1, iscrowd=1)])), str(tmp_path))
    with pytest.raises(ValueError, match=f"No image of datasets \\['{NAME}'\\] has a non-crowd annotation"):
        load_yolact_dataset_dicts([NAME], filter_empty=True)
