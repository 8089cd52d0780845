"""
tools/convert_yolact_weights.py given files that are not weights of the original YOLACT: each is refused at load
time by a message saying what the file is (or is not) and what to give instead.
"""
import importlib.util
import os

import numpy as np
import pytest
import torch

TOOL_PATH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tools", "convert_yolact_weights.py")
_spec = importlib.util.spec_from_file_location("convert_yolact_weights_errors", TOOL_PATH)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

WHAT_TO_GIVE = "Give the .pth weights of the original YOLACT"


def _convert(path, tmp_path, *flags):
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(path), str(tmp_path / "out.pth"), *flags])
    assert not (tmp_path / "out.pth").exists()
    return str(exit_info.value.code)


def test_random_bytes_are_not_a_pytorch_file(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    message = _convert(path, tmp_path)
    assert f"{path} is not a file written by torch.save" in message and WHAT_TO_GIVE in message
    assert "weights_only=False" not in message


def test_a_text_file_is_named_as_text(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("https://github.com/dbolya/yolact: download the weights here\n")
    message = _convert(path, tmp_path)
    assert f"{path} is a text file (it starts with 'https://github.com/dbolya/yolact" in message
    assert WHAT_TO_GIVE in message and "KeyError" not in message


def test_a_pickle_of_other_objects_is_refused_without_suggesting_unsafe_loading(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": np.zeros(3)}, path)  # numpy arrays: refused by torch.load(weights_only=True)
    message = _convert(path, tmp_path)
    assert f"{path} holds objects other than tensors" in message and WHAT_TO_GIVE in message
    assert "weights_only=False" not in message


def test_a_file_of_something_else_than_a_state_dict_is_named(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    assert f"{path} holds a Tensor, not a state dict" in _convert(path, tmp_path)


@pytest.mark.parametrize("wrapped", [True, False], ids=["detectron2 checkpoint", "bare state dict"])
def test_a_yolact_d2_checkpoint_is_said_to_need_no_conversion(tmp_path, wrapped):
    state_dict = {"backbone.bottom_up.stem.conv1.weight": torch.zeros(2, 3), "head.cls_score.bias": torch.zeros(1)}
    path = tmp_path / "model_final.pth"
    torch.save({"model": state_dict, "iteration": 10} if wrapped else state_dict, path)
    for flags in ((), ("--backbone",)):
        message = _convert(path, tmp_path, *flags)
        assert f"{path} is already a yolact_d2 checkpoint" in message
        assert f"MODEL.WEIGHTS {path}" in message and "unknown keys" not in message


def test_another_detectron2_checkpoint_is_named(tmp_path):
    path = tmp_path / "model_final_f10217.pth"
    torch.save({"model": {"roi_heads.box_predictor.cls_score.weight": torch.zeros(2, 2)}}, path)
    message = _convert(path, tmp_path)
    assert f"{path} is a detectron2 checkpoint (a 'model' entry), not weights of the original YOLACT" in message
