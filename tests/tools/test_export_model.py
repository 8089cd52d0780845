"""tools/export_model.py on a random tiny YOLACT: a TorchScript export, checked and usable; clear refusals."""
import os
import re

import cv2
import numpy as np
import pytest
import torch

from detectron2.config import get_cfg

from yolact_d2 import add_yolact_config
from yolact_d2.export import ExportedYolact

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "embedded", "yolact_R_18_shapes.yaml")
TINY = ["MODEL.YOLACT.INPUT_SIZE", "96", "MODEL.YOLACT.POSTPROCESS.SCORE_THRESH", "0.3"]


@pytest.fixture(scope="module")
def tool(load_tool):
    """tools/export_model.py as a module."""
    return load_tool("export_model.py")


def _export(tool, args):
    return tool.main(tool.parse_args(["--config-file", CONFIG] + args))


def test_torchscript_export_of_a_sample_image_is_checked_and_runs(tool, tmp_path, capsys):
    sample = str(tmp_path / "sample.png")
    cv2.imwrite(sample, np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert _export(tool, ["--format", "torchscript", "--sample-image", sample, "--output", str(out)] + TINY) == 0
    assert sorted(os.listdir(out)) == ["config.yaml", "model.ts"]
    assert f'= torch.jit.load("{out / "model.ts"}")(images)' in capsys.readouterr().out
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(str(out / "config.yaml"))
    image = torch.from_numpy(cv2.imread(sample).transpose(2, 0, 1).copy())
    instances = ExportedYolact(str(out / "model.ts"), cfg)([{"image": image}])[0]["instances"]
    assert instances.image_size == (60, 80) and len(instances) > 0


def test_scripting_is_refused(tool, capsys):
    with pytest.raises(SystemExit) as e:
        tool.parse_args(["--config-file", CONFIG, "--export-method", "scripting", "--output", "unused"])
    assert e.value.code == 2
    assert "scripting is not supported" in capsys.readouterr().err


def test_a_config_that_cannot_be_exported_stops_with_its_reason(tool, tmp_path):
    args = ["--output", str(tmp_path / "out")] + TINY + ["MODEL.YOLACT.MASK_RESCORING.ENABLED", "True",
                                                         "MODEL.YOLACT.PRESERVE_ASPECT_RATIO", "True"]
    with pytest.raises(SystemExit) as e:
        _export(tool, args)
    assert "PRESERVE_ASPECT_RATIO=True with YOLACT++'s mask re-scoring cannot be exported" in str(e.value.code)
    assert os.listdir(tmp_path / "out") == []


def test_opts_flag_is_applied(tool, tmp_path):
    args = tool.parse_args(["--config-file", CONFIG, "--output", str(tmp_path), "--input", "sample.png",
                            "--opts", "MODEL.WEIGHTS", "x.pth", "MODEL.YOLACT.INPUT_SIZE", "96"])
    cfg = tool.setup_cfg(args)
    assert cfg.MODEL.WEIGHTS == "x.pth" and cfg.MODEL.YOLACT.INPUT_SIZE == 96 and args.sample_image == "sample.png"
def test_an_exif_rotated_photograph_is_exported_and_run_upright(tool, tmp_path):
    from PIL import Image

    from yolact_d2.data import read_image

    upright = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)  # RGB
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # as a camera stores it: sideways
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photo = str(tmp_path / "camera.jpg")
    stored.save(photo, exif=exif, quality=100, subsampling=0)
    out = tmp_path / "out"
    assert _export(tool, ["--format", "torchscript", "--sample-image", photo, "--output", str(out)] + TINY) == 0
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(str(out / "config.yaml"))
    image = torch.from_numpy(read_image(photo, cfg.INPUT.FORMAT).transpose(2, 0, 1).copy())
    instances = ExportedYolact(str(out / "model.ts"), cfg)([{"image": image}])[0]["instances"]
    assert image.shape == (3, 40, 60) and instances.image_size == (40, 60)  # the upright frame
    assert len(instances) > 0 and instances.pred_masks.shape[1:] == (40, 60)


@pytest.fixture
def calibration_dataset(tmp_path):
    """A registered dataset of 3 random images, for DATASETS.TRAIN."""
    from detectron2.data import DatasetCatalog

    files = [str(tmp_path / f"train_{i}.png") for i in range(3)]
    for i, f in enumerate(files):
        cv2.imwrite(f, np.random.default_rng(i).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    DatasetCatalog.register("export_tool_calibration", lambda: [{"file_name": f} for f in files])
    yield "export_tool_calibration"
    DatasetCatalog.remove("export_tool_calibration")


def test_int8_export_writes_both_onnx_files(tool, tmp_path, capsys, calibration_dataset):
    pytest.importorskip("onnxruntime")
    from yolact_d2.export import onnx_precision

    out = tmp_path / "out"
    args = ["--format", "onnx", "--precision", "int8", "--calibration-count", "2", "--output", str(out)]
    opts = TINY + ["DATASETS.TRAIN", f"('{calibration_dataset}',)"]
    assert _export(tool, args + opts) == 0
    assert sorted(os.listdir(out)) == ["config.yaml", "model.onnx", "model_int8.onnx"]
    assert [onnx_precision(str(out / f)) for f in ("model.onnx", "model_int8.onnx")] == ["float32", "int8"]
    printed = capsys.readouterr().out
    assert f"Wrote {out / 'model.onnx'} (float32)" in printed
    assert f'InferenceSession("{out / "model_int8.onnx"}")' in printed
    reproduced = re.search(r"The int8 model reproduces (\d+) of the float32 model's (\d+) detections", printed)
    assert reproduced and 0 < int(reproduced[1]) <= int(reproduced[2])
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(str(out / "config.yaml"))
    image = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (3, 60, 80), dtype=np.uint8))
    instances = ExportedYolact(str(out / "model_int8.onnx"), cfg)([{"image": image}])[0]["instances"]
    assert instances.image_size == (60, 80) and len(instances) > 0


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--precision", "int8"], "--precision int8 needs --format onnx"),
        (["--format", "onnx", "--calibration-count", "4"], "only apply to --precision int8"),
        (["--format", "onnx", "--precision", "int8", "--calibration-count", "0"], "must be >= 1; got 0"),
        (["--format", "onnx", "--precision", "int8", "--calibration-images", "x.png"], "no such file x.png"),
    ],
    ids=["int8 torchscript", "calibration without int8", "zero images", "missing image"],
)
def test_invalid_precision_arguments_exit_2(tool, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        tool.parse_args(["--config-file", CONFIG, "--output", "unused"] + flags)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_reproduced_detections_match_class_and_box(tool):
    from detectron2.structures import Boxes, Instances

    def instances(boxes, classes):
        result = Instances((100, 100))
        result.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        result.pred_classes = torch.tensor(classes, dtype=torch.int64)
        return result

    expected = instances([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0, 1, 2])
    # the first box shifted by 2 (IoU 0.67), the second of another class, the third moved away (IoU 0)
    got = instances([[2, 0, 12, 10], [20, 20, 40, 40], [70, 70, 80, 80]], [0, 2, 2])
    assert tool.reproduced_detections(expected, got) == 1
    assert tool.reproduced_detections(expected, got[:0]) == 0
