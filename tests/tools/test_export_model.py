"""tools/export_model.py on a random tiny YOLACT: a TorchScript export, checked and usable; clear refusals."""
import os

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


def test_torchscript_export_of_a_sample_image_is_checked_and_runs(tool, tmp_path, capsys, one_thread):
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


def test_a_config_that_cannot_be_exported_stops_with_its_reason(tool, tmp_path, one_thread):
    args = ["--output", str(tmp_path / "out")] + TINY + ["MODEL.YOLACT.POSTPROCESS.NAME", "StandardNMS",
                                                         "MODEL.YOLACT.PRESERVE_ASPECT_RATIO", "True"]
    with pytest.raises(SystemExit) as e:
        _export(tool, args)
    assert "PRESERVE_ASPECT_RATIO=True cannot be exported" in str(e.value.code)
    assert os.listdir(tmp_path / "out") == []


def test_opts_flag_is_applied(tool, tmp_path):
    args = tool.parse_args(["--config-file", CONFIG, "--output", str(tmp_path), "--input", "sample.png",
                            "--opts", "MODEL.WEIGHTS", "x.pth", "MODEL.YOLACT.INPUT_SIZE", "96"])
    cfg = tool.setup_cfg(args)
    assert cfg.MODEL.WEIGHTS == "x.pth" and cfg.MODEL.YOLACT.INPUT_SIZE == 96 and args.sample_image == "sample.png"
def test_an_exif_rotated_photograph_is_exported_and_run_upright(tool, tmp_path, one_thread):
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
