"""Tests of the embedded synthetic dataset ``yolact_shapes`` (generated into pytest's tmp dirs)."""
import itertools
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog

from yolact_d2.data import synthetic
from yolact_d2.data.synthetic import (
    THING_CLASSES,
    TRAIN_NAME,
    VAL_NAME,
    ensure_yolact_shapes,
    generate_yolact_shapes,
    get_yolact_shapes_dir,
    register_yolact_shapes,
)

NUM_IMAGES = 6
# pycocotools calls np.array(..., copy=False) on numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def train_json(tmp_path_factory):
    """COCO json path of a 6-image train split, generated once for the read-only tests."""
    return generate_yolact_shapes(tmp_path_factory.mktemp("datasets"), "train", NUM_IMAGES)


@pytest.fixture(scope="module")
def coco(train_json):
    return COCO(train_json)


def _masks(coco, image_id):
    """(N, H, W) bool visible masks of one image's annotations, and the annotations."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    return np.stack([mask_util.decode(a["segmentation"]).astype(bool) for a in anns]), anns


def _read_images(json_file):
    image_dir = os.path.join(os.path.dirname(os.path.dirname(json_file)), "train")
    return [cv2.imread(os.path.join(image_dir, f)) for f in sorted(os.listdir(image_dir))]


def test_annotations_match_their_masks(coco):
    assert len(coco.imgs) == NUM_IMAGES
    assert sorted(coco.getCatIds()) == list(range(1, len(THING_CLASSES) + 1))
    for image_id, image in coco.imgs.items():
        masks, anns = _masks(coco, image_id)
        assert masks.shape[1:] == (image["height"], image["width"])
        for mask, ann in zip(masks, anns):
            ys, xs = np.nonzero(mask)
            assert ann["iscrowd"] == 0
            assert ann["area"] == mask.sum() >= synthetic._MIN_VISIBLE_AREA
            tight_box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["bbox"] == tight_box


def test_images_are_varied_and_crowded(coco, train_json):
    sizes = [(image["height"], image["width"]) for image in coco.imgs.values()]
    assert [image.shape[:2] for image in _read_images(train_json)] == sizes
    assert len(set(sizes)) == NUM_IMAGES
    lo, hi = synthetic._SIDE_RANGE
    assert all(lo <= side <= hi for size in sizes for side in size)
    assert all(len(coco.getAnnIds(imgIds=[i])) >= 2 for i in coco.imgs)
    assert len({a["category_id"] for a in coco.anns.values()}) == len(THING_CLASSES)


def test_visible_masks_are_disjoint(coco):
    for image_id in coco.imgs:
        masks, _ = _masks(coco, image_id)
        assert masks.sum(axis=0).max() == 1


def test_same_class_instances_touch_or_overlap(coco):
    def boxes_meet(a, b):
        (ax, ay, aw, ah), (bx, by, bw, bh) = a["bbox"], b["bbox"]
        return ax <= bx + bw and bx <= ax + aw and ay <= by + bh and by <= ay + ah

    def same_image_and_class(a, b):
        return a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]

    images_with_meeting_pairs = {
        a["image_id"]
        for a, b in itertools.combinations(coco.anns.values(), 2)
        if same_image_and_class(a, b) and boxes_meet(a, b)
    }
    assert len(images_with_meeting_pairs) >= 2


def test_generation_is_deterministic(tmp_path, train_json):
    again = generate_yolact_shapes(tmp_path, "train", NUM_IMAGES)
    with open(train_json, "rb") as f1, open(again, "rb") as f2:
        assert f1.read() == f2.read()
    for image1, image2 in zip(_read_images(train_json), _read_images(again), strict=True):
        np.testing.assert_array_equal(image1, image2)


def test_splits_differ(tmp_path, train_json):
    val_json = generate_yolact_shapes(tmp_path, "val", NUM_IMAGES)
    with open(train_json) as f1, open(val_json) as f2:
        assert json.load(f1)["annotations"] != json.load(f2)["annotations"]


def test_files_stay_in_the_dataset_folder(tmp_path):
    generate_yolact_shapes(tmp_path, "train", 2)
    assert os.listdir(tmp_path) == ["yolact_shapes"]
    assert sorted(os.listdir(tmp_path / "yolact_shapes")) == ["annotations", "train", "train.lock"]


def test_cache_dir_follows_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLACT_D2_DATASETS", str(tmp_path))
    assert get_yolact_shapes_dir() == str(tmp_path / "yolact_shapes")
    monkeypatch.delenv("YOLACT_D2_DATASETS")
    default = os.path.expanduser("~/.cache/yolact_d2/datasets/yolact_shapes")
    assert get_yolact_shapes_dir() == default


def _truncate_json(json_file, image_dir):
    with open(json_file, "r+") as f:
        f.truncate(os.path.getsize(json_file) // 2)


def _delete_an_image(json_file, image_dir):
    os.remove(os.path.join(image_dir, "000003.png"))


def _change_the_count(json_file, image_dir):
    with open(json_file) as f:
        coco = json.load(f)
    coco["images"].pop()
    with open(json_file, "w") as f:
        json.dump(coco, f)


@pytest.mark.parametrize("corrupt", [_truncate_json, _delete_an_image, _change_the_count])
def test_corrupted_split_is_regenerated(tmp_path, train_json, corrupt):
    json_file = generate_yolact_shapes(tmp_path, "train", NUM_IMAGES)
    corrupt(json_file, os.path.join(get_yolact_shapes_dir(tmp_path), "train"))
    assert ensure_yolact_shapes(tmp_path, "train", NUM_IMAGES) == json_file
    with open(train_json, "rb") as f1, open(json_file, "rb") as f2:
        assert f1.read() == f2.read()
    assert len(_read_images(json_file)) == NUM_IMAGES


def test_valid_split_is_kept(tmp_path):
    json_file = generate_yolact_shapes(tmp_path, "train", 2)
    mtime = os.stat(json_file).st_mtime_ns
    assert ensure_yolact_shapes(tmp_path, "train", 2) == json_file
    assert os.stat(json_file).st_mtime_ns == mtime
    ensure_yolact_shapes(tmp_path, "train", 3)  # another image count: regenerated
    assert len(_read_images(json_file)) == 3


def test_interrupted_generation_leaves_no_split(tmp_path, monkeypatch):
    render_image = synthetic._render_image
    calls = iter(range(100))

    def failing_render_image(rng):
        if next(calls) == 2:
            raise KeyboardInterrupt
        return render_image(rng)

    monkeypatch.setattr(synthetic, "_render_image", failing_render_image)
    with pytest.raises(KeyboardInterrupt):
        generate_yolact_shapes(tmp_path, "train", 4)
    dataset_dir = get_yolact_shapes_dir(tmp_path)
    assert os.listdir(dataset_dir) == ["train.lock"]
    assert not synthetic._is_valid_split(dataset_dir, "train", 4)


@pytest.fixture
def registered(tmp_path):
    """The datasets registered under tmp_path with 6 / 4 images; the default registration after."""
    register_yolact_shapes(tmp_path, split_sizes={"train": NUM_IMAGES, "val": 4})
    yield tmp_path
    register_yolact_shapes()


def test_registered_datasets_load_on_first_use(registered):
    dataset_dir = get_yolact_shapes_dir(registered)
    assert not os.path.exists(dataset_dir)
    for name, num_images in [(TRAIN_NAME, NUM_IMAGES), (VAL_NAME, 4)]:
        dicts = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        assert len(dicts) == num_images
        assert meta.thing_classes == list(THING_CLASSES)
        assert meta.evaluator_type == "coco"
        assert os.path.isfile(meta.json_file)
        assert all(os.path.isfile(d["file_name"]) for d in dicts)
        category_ids = {a["category_id"] for d in dicts for a in d["annotations"]}
        assert category_ids <= set(range(len(THING_CLASSES)))


def test_registration_is_idempotent(registered):
    register_yolact_shapes(registered, split_sizes={"train": NUM_IMAGES, "val": 4})
    register_yolact_shapes(registered / "other")
    assert MetadataCatalog.get(TRAIN_NAME).image_root == os.path.join(
        get_yolact_shapes_dir(registered / "other"), "train"
    )
