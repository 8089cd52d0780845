"""End to end: a user's COCO dataset (category ids 5 and 9) registered by --dataset, fine-tuned from a 5-class
checkpoint, evaluated, demoed, exported and run."""
import contextlib
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from detectron2.modeling import build_model

from yolact_d2.config import load_yolact_config
from yolact_d2.data import read_image
from yolact_d2.export import ExportedYolact

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "embedded", "yolact_R_18_shapes.yaml")
CATEGORIES = [{"id": 5, "name": "disc"}, {"id": 9, "name": "block"}]
TINY_OPTS = ["MODEL.YOLACT.INPUT_SIZE", "96", "DATALOADER.NUM_WORKERS", "0", "TEST.DETECTIONS_PER_IMAGE", "5"]


def _draw_image(rng, height, width):
    """A BGR image with a disc and a block, and their COCO annotations (the disc as RLE, the block as polygon)."""
    image = np.full((height, width, 3), rng.integers(0, 100, 3), np.uint8)
    disc = np.zeros((height, width), np.uint8)
    cv2.circle(disc, (width // 4, height // 2), min(height, width) // 5, 1, -1)
    image[disc > 0] = (40, 220, 240)
    x0, y0, x1, y1 = width // 2 + 4, height // 4, width - 8, 3 * height // 4
    image[y0:y1, x0:x1] = (230, 60, 30)
    rle = mask_util.encode(np.asfortranarray(disc))
    rle["counts"] = rle["counts"].decode("ascii")
    annotations = [
        {"category_id": 5, "segmentation": rle, "bbox": mask_util.toBbox(rle).tolist(), "area": float(disc.sum())},
        {"category_id": 9, "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "bbox": [x0, y0, x1 - x0, y1 - y0],
         "area": float((x1 - x0) * (y1 - y0))},
    ]
    return image, annotations


def write_custom_dataset(root, num_images=4):
    """``root/images/img<k>.png`` and ``root/train.json`` (all images, ids 1..n) and ``root/val.json`` (two)."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"))
    images, annotations = [], []
    for k in range(num_images):
        height, width = (96, 128) if k % 2 else (112, 96)
        image, annos = _draw_image(rng, height, width)
        file_name = f"img{k}.png"
        cv2.imwrite(os.path.join(root, "images", file_name), image)
        images.append({"id": k + 1, "file_name": file_name, "height": height, "width": width})
        for anno in annos:
            annotations.append(dict(anno, id=len(annotations) + 1, image_id=k + 1, iscrowd=0))
    for split, count in (("train", num_images), ("val", 2)):
        coco = {
            "images": images[:count],
            "annotations": [a for a in annotations if a["image_id"] <= count],
            "categories": CATEGORIES,
        }
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump(coco, f)


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    write_custom_dataset(str(root))
    return root


def _datasets(root):
    images = str(root / "images")
    return ["--dataset", "my_train", str(root / "train.json"), images, "--dataset", "my_val", str(root / "val.json"),
            images]


def _five_class_checkpoint(path):
    """A checkpoint of the tiny embedded model for the 5 classes of yolact_shapes (random weights)."""
    cfg = load_yolact_config(CONFIG, TINY_OPTS)
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, path)


def test_fine_tune_a_checkpoint_on_a_custom_dataset_evaluate_demo_and_export_it(custom, load_tool):
    output_dir = custom / "output"
    _five_class_checkpoint(str(custom / "five_classes.pth"))
    code, log = _run(
        [os.path.join(ROOT, "tools", "train_net.py"), "--config-file", CONFIG] + _datasets(custom) + [
            "MODEL.WEIGHTS", str(custom / "five_classes.pth"),
            "DATASETS.TRAIN", '("my_train",)', "DATASETS.TEST", '("my_val",)', "MODEL.YOLACT.NUM_CLASSES", "2",
            "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "100",
            "TEST.EVAL_PERIOD", "2", "MODEL.YOLACT.POSTPROCESS.SCORE_THRESH", "0.0", "OUTPUT_DIR", str(output_dir),
        ] + TINY_OPTS,
        cwd=str(custom),
    )
    assert code == 0, log[-4000:]
    assert "Re-initialised the class-dependent layers head.cls_score, sem_seg_head.conv: the checkpoint" in log
    assert "Skip loading parameter" not in log
    assert "Evaluation results for bbox" in log and "Evaluation results for segm" in log, log[-4000:]
    assert "| AP " in log

    code, log = _run(
        [os.path.join(ROOT, "tools", "demo.py"), "--config-file", CONFIG] + _datasets(custom) + [
            "--input", str(custom / "images"), "--output", str(custom / "demo"), "--json-output",
            str(custom / "detections.json"), "--confidence-threshold", "0",
            "DATASETS.TEST", '("my_val",)', "MODEL.YOLACT.NUM_CLASSES", "2",
            "MODEL.WEIGHTS", str(output_dir / "model_final.pth"),
        ] + TINY_OPTS,
        cwd=str(custom),
    )
    assert code == 0, log[-4000:]
    assert "Class names: ['disc', 'block']" in log
    assert sorted(os.listdir(custom / "demo")) == [f"img{k}.png" for k in range(4)]
    with contextlib.redirect_stdout(io.StringIO()):
        results = COCO(str(custom / "train.json")).loadRes(str(custom / "detections.json"))
    assert {a["category_id"] for a in results.anns.values()} <= {5, 9}  # the dataset's ids, not 0..1

    export = load_tool("export_model.py")
    exported_dir = custom / "exported"
    image_file = str(custom / "images" / "img1.png")
    assert export.main(export.parse_args([
        "--config-file", CONFIG, "--format", "onnx", "--sample-image", image_file, "--output", str(exported_dir),
        "MODEL.YOLACT.NUM_CLASSES", "2", "MODEL.WEIGHTS", str(output_dir / "model_final.pth"),
        "MODEL.YOLACT.POSTPROCESS.SCORE_THRESH", "0.0"] + TINY_OPTS)) == 0
    cfg = load_yolact_config(str(exported_dir / "config.yaml"), [])
    image = torch.from_numpy(read_image(image_file, "BGR").transpose(2, 0, 1).copy())
    instances = ExportedYolact(str(exported_dir / "model.onnx"), cfg)([{"image": image}])[0]["instances"]
    assert instances.image_size == (96, 128) and 0 < len(instances) <= 5
    assert set(instances.pred_classes.tolist()) <= {0, 1}  # the 2 classes of the fine-tuned model


def test_class_count_mismatch_names_the_dataset_and_both_counts(custom):
    code, log = _run(
        [os.path.join(ROOT, "tools", "demo.py"), "--config-file", CONFIG] + _datasets(custom) + [
            "--input", str(custom / "images"), "--json-output", str(custom / "unused.json"),
            "DATASETS.TEST", '("my_val",)', "MODEL.YOLACT.NUM_CLASSES", "3",
        ],
        cwd=str(custom),
    )
    assert code != 0
    assert "Dataset 'my_val' has 2 classes ['disc', 'block'] but the config predicts 3" in log, log[-3000:]
