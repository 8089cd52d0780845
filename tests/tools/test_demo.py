"""tools/demo.py on a randomly initialised tiny YOLACT: images (gray, RGBA, corrupt), COCO json output, video."""
import contextlib
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolact_d2.data.synthetic import generate_yolact_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "embedded", "yolact_R_18_shapes.yaml")
# Random weights: every candidate is kept (threshold 0), and a few are drawn to keep the test fast.
TINY = ["--confidence-threshold", "0", "MODEL.YOLACT.INPUT_SIZE", "96", "TEST.DETECTIONS_PER_IMAGE", "3"]


@pytest.fixture(scope="module")
def demo(load_tool):
    """tools/demo.py as a module."""
    return load_tool("demo.py")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder with 3 yolact_shapes images (colour, grayscale, RGBA) and a corrupt one; returns it and its json."""
    json_file = generate_yolact_shapes(str(tmp_path_factory.mktemp("demo")), "val", 3)
    folder = os.path.join(os.path.dirname(os.path.dirname(json_file)), "val")
    path = os.path.join(folder, "000001.png")
    cv2.imwrite(path, cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY))
    path = os.path.join(folder, "000002.png")
    cv2.imwrite(path, cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2BGRA))
    with open(os.path.join(folder, "zz_broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder, json_file


def _run_demo(demo, args):
    return demo.main(demo.get_parser().parse_args(["--config-file", CONFIG] + args + TINY))


def test_folder_with_a_corrupt_file(images, tmp_path):
    folder, gt_json = images
    out, json_output = tmp_path / "out", tmp_path / "detections.json"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "demo.py"), "--config-file", CONFIG, "--input", folder,
           "--output", str(out), "--json-output", str(json_output)] + TINY
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]  # some images were processed
    assert "Cannot read image " + os.path.join(folder, "zz_broken.png") in log
    assert "1 of 4 images could not be read" in log and "images/s" in log
    assert sorted(os.listdir(out)) == ["000000.png", "000001.png", "000002.png"]
    for name in os.listdir(out):
        source, drawn = cv2.imread(os.path.join(folder, name)), cv2.imread(str(out / name))
        assert drawn.shape == source.shape and np.abs(drawn.astype(int) - source).mean() > 1.0, name

    with contextlib.redirect_stdout(io.StringIO()):
        results = COCO(gt_json).loadRes(str(json_output))
    anns = list(results.anns.values())
    assert {a["image_id"] for a in anns} == {1, 2, 3}  # ids of 000000.png..000002.png in the json, from 1
    assert {a["category_id"] for a in anns} <= {1, 2, 3, 4, 5}
    assert all(isinstance(a["segmentation"]["counts"], str) and len(a["bbox"]) == 4 for a in anns)


def test_a_single_image_goes_to_the_output_file_and_unreadable_inputs_exit_1(demo, images, tmp_path):
    folder, _ = images
    out = tmp_path / "new" / "gray.jpg"
    assert _run_demo(demo, ["--input", os.path.join(folder, "000001.png"), "--output", str(out)]) == 0
    assert cv2.imread(str(out)).shape[2] == 3
    broken = os.path.join(folder, "zz_broken.png")
    assert _run_demo(demo, ["--input", broken, "--json-output", str(tmp_path / "none.json")]) == 1


def test_video(demo, tmp_path):
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (128, 96))
    for k in range(5):
        frame = np.full((96, 128, 3), 30 * k, np.uint8)
        cv2.circle(frame, (30 + 12 * k, 48), 20, (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    assert _run_demo(demo, ["--video-input", video, "--output", str(tmp_path / "out")]) == 0
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 5 and frames[0].shape == (96, 128, 3)


def test_webcam_without_display_nor_output_is_a_clear_error(demo, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit) as e:
        _run_demo(demo, ["--webcam"])
    assert "needs a display" in str(e.value.code) and "--output" in str(e.value.code)


def test_opts_flag_and_trailing_pairs_are_applied(demo):
    parser = demo.get_parser()
    cfg = demo.setup_cfg(parser.parse_args(["--config-file", CONFIG, "--input", "a.png", "--opts", "MODEL.WEIGHTS",
                                            "x.pth", "MODEL.YOLACT.INPUT_SIZE", "96"]))
    assert cfg.MODEL.WEIGHTS == "x.pth" and cfg.MODEL.YOLACT.INPUT_SIZE == 96
    cfg = demo.setup_cfg(parser.parse_args(["--config-file", CONFIG, "--input", "a.png", "--output", "out",
                                            "MODEL.WEIGHTS", "y.pth"]))
    assert cfg.MODEL.WEIGHTS == "y.pth"


def test_precision_flag_and_opts_set_the_precision(demo):
    parser = demo.get_parser()
    args = ["--config-file", CONFIG, "--input", "a.png"]
    assert demo.setup_cfg(parser.parse_args(args)).MODEL.YOLACT.PRECISION == "float32"  # the config's
    assert demo.setup_cfg(parser.parse_args(args + ["--precision", "bfloat16"])).MODEL.YOLACT.PRECISION == "bfloat16"
    cfg = demo.setup_cfg(parser.parse_args(args + ["--opts", "MODEL.YOLACT.PRECISION", "bfloat16"]))
    assert cfg.MODEL.YOLACT.PRECISION == "bfloat16"
    with pytest.raises(SystemExit):  # argparse: invalid choice
        parser.parse_args(args + ["--precision", "int8"])
    rcnn = os.path.join(ROOT, "configs", "embedded", "mask_rcnn_R_18_FPN_shapes.yaml")
    with pytest.raises(SystemExit, match="--precision bfloat16 sets MODEL.YOLACT.PRECISION, which GeneralizedRCNN"):
        demo.setup_cfg(parser.parse_args(["--config-file", rcnn, "--input", "a.png", "--precision", "bfloat16"]))


def test_json_output_with_polygon_masks(demo, images, tmp_path):
    folder, gt_json = images
    json_output = tmp_path / "polygons.json"
    assert _run_demo(demo, ["--input", os.path.join(folder, "000000.png"), "--json-output", str(json_output),
                            "--mask-format", "polygon"]) == 0
    with contextlib.redirect_stdout(io.StringIO()):
        anns = list(COCO(gt_json).loadRes(str(json_output)).anns.values())
    assert anns and {a["image_id"] for a in anns} == {1}
    for ann in anns:
        assert isinstance(ann["segmentation"], list)
        assert all(len(polygon) >= 6 and len(polygon) % 2 == 0 for polygon in ann["segmentation"])


def test_webcam_without_a_camera_is_a_clear_error(demo, monkeypatch, tmp_path):
    opened = []

    class NoCamera:
        def __init__(self, source):
            opened.append(source)

        def isOpened(self):
            return False

    monkeypatch.setattr(demo.cv2, "VideoCapture", NoCamera)
    with pytest.raises(SystemExit) as e:
        _run_demo(demo, ["--webcam", "--output", str(tmp_path / "cam.mp4")])
    assert opened == [0] and "Cannot open the webcam (camera 0)" in str(e.value.code)


def test_json_output_has_the_datasets_ids_and_file_names_and_evaluates(demo, images, tmp_path):
    folder, gt_json = images
    with open(gt_json) as f:
        gt = json.load(f)
    ids = {image["file_name"]: image["id"] for image in gt["images"]}
    inputs = [os.path.join(folder, "000002.png"), os.path.join(folder, "000000.png")]  # not the json's order
    for mask_format in ("polygon", "rle"):
        json_output = tmp_path / f"{mask_format}.json"
        args = ["--config-file", CONFIG, "--dataset", "demo_ids", gt_json, folder, "--input", *inputs,
                "--json-output", str(json_output), "--mask-format", mask_format] + TINY
        assert demo.main(demo.get_parser().parse_args(args + ["DATASETS.TEST", '("demo_ids",)'])) == 0
        with open(json_output) as f:
            results = json.load(f)
        assert {(r["file_name"], r["image_id"]) for r in results} == {(p, ids[os.path.basename(p)]) for p in inputs}
        assert {r["category_id"] for r in results} <= {c["id"] for c in gt["categories"]}
        with contextlib.redirect_stdout(io.StringIO()):  # random weights: empty masks among them
            coco = COCO(gt_json)
            evaluation = COCOeval(coco, coco.loadRes(str(json_output)), "segm")
            evaluation.evaluate()
            evaluation.accumulate()
        assert evaluation.eval["precision"].shape[2] == len(gt["categories"])
