import json
import logging

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from yolact_d2.data import register_coco_dataset

NAME = "test_datasets_custom"


@pytest.fixture(autouse=True)
def unregister():
    yield
    if NAME in DatasetCatalog.list():
        DatasetCatalog.remove(NAME)
    if NAME in MetadataCatalog.list():
        MetadataCatalog.remove(NAME)


def _write_coco(path, category_ids=(1, 2)):
    """A COCO instances json with one 20 x 30 image and one square annotation per category (listed unsorted)."""
    annotations = [
        {"id": k + 1, "image_id": 1, "category_id": c, "bbox": [k, k, 4, 4], "area": 16, "iscrowd": 0,
         "segmentation": [[k, k, k + 4, k, k + 4, k + 4, k, k + 4]]}
        for k, c in enumerate(category_ids)
    ]
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in reversed(category_ids)],
    }
    path.write_text(json.dumps(coco))
    return str(path)


def test_missing_json_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"'{NAME}': COCO json file not found: .*nothere.json"):
        register_coco_dataset(NAME, str(tmp_path / "nothere.json"), str(tmp_path))
    assert NAME not in DatasetCatalog.list()


def test_a_file_that_is_not_json_is_named(tmp_path):
    (tmp_path / "broken.json").write_bytes(b"\x89PNG\x00 not json")
    with pytest.raises(ValueError, match="broken.json is not a JSON file"):
        register_coco_dataset(NAME, str(tmp_path / "broken.json"), str(tmp_path))


@pytest.mark.parametrize(
    "content, missing",
    [({"images": [], "info": {}}, "['annotations', 'categories']"), ([1, 2], "a list, not an object")],
)
def test_json_that_is_not_coco_instances_names_what_is_missing(tmp_path, content, missing):
    (tmp_path / "other.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="other.json is not a COCO instances json") as e:
        register_coco_dataset(NAME, str(tmp_path / "other.json"), str(tmp_path))
    assert missing in str(e.value)


def test_missing_image_folder_is_named(tmp_path):
    json_file = _write_coco(tmp_path / "a.json")
    with pytest.raises(FileNotFoundError, match="image folder not found: .*no_images"):
        register_coco_dataset(NAME, json_file, str(tmp_path / "no_images"))


def test_non_contiguous_category_ids_map_to_0_to_c_minus_1(tmp_path):
    json_file = _write_coco(tmp_path / "a.json", category_ids=(42, 3, 7))
    register_coco_dataset(NAME, json_file, str(tmp_path))
    meta = MetadataCatalog.get(NAME)
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 42: 2}
    assert meta.thing_classes == ["class3", "class7", "class42"]
    assert meta.json_file == json_file and meta.evaluator_type == "coco"
    (record,) = DatasetCatalog.get(NAME)  # detectron2's load_coco_json sets the same metadata again
    assert [a["category_id"] for a in record["annotations"]] == [2, 0, 1]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 42: 2}


def _warnings(caplog):
    """The warnings yolact_d2 logged (detectron2's own INFO lines may be captured too, by other tests' loggers)."""
    return [r for r in caplog.records if r.name.startswith("yolact_d2") and r.levelno >= logging.WARNING]


def test_registering_again_is_idempotent_and_other_files_replace_with_a_warning(tmp_path, caplog):
    first = _write_coco(tmp_path / "a.json")
    register_coco_dataset(NAME, first, str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="yolact_d2"):
        register_coco_dataset(NAME, first, str(tmp_path))
    assert not _warnings(caplog)
    assert len(DatasetCatalog.get(NAME)) == 1

    _write_coco(tmp_path / "a.json", category_ids=(1, 2, 3))  # same files, edited categories: registered again
    with caplog.at_level(logging.WARNING, logger="yolact_d2"):
        register_coco_dataset(NAME, first, str(tmp_path))
    assert not _warnings(caplog)
    assert MetadataCatalog.get(NAME).thing_classes == ["class1", "class2", "class3"]

    second = _write_coco(tmp_path / "b.json", category_ids=(5, 6, 8))
    with caplog.at_level(logging.WARNING, logger="yolact_d2"):
        register_coco_dataset(NAME, second, str(tmp_path))
    assert f"Dataset '{NAME}' was registered with json {first}" in caplog.text
    assert MetadataCatalog.get(NAME).json_file == second
    assert MetadataCatalog.get(NAME).thing_classes == ["class5", "class6", "class8"]
    assert [a["category_id"] for a in DatasetCatalog.get(NAME)[0]["annotations"]] == [0, 1, 2]
