"""The precision of inference: names checked, bfloat16 only where the CPU runs it natively, float16 on CUDA."""
import pytest
import torch

from yolact_d2.engine import trainer as trainer_module
from yolact_d2.layers import PRECISIONS, inference_autocast, resolve_precision
from yolact_d2.layers import precision as precision_module


@pytest.fixture
def native_bfloat16(monkeypatch):
    """``native_bfloat16(flag)``: make this CPU have native bfloat16 (True) or not (False)."""
    return lambda flag: monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: flag)


def test_the_precisions_are_torch_dtypes():
    assert PRECISIONS == ("float32", "bfloat16", "float16")
    assert [getattr(torch, p).is_floating_point for p in PRECISIONS] == [True] * 3


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", torch.device("cpu")])
def test_float32_is_float32_everywhere(device, native_bfloat16):
    native_bfloat16(False)
    assert resolve_precision("float32", device) == "float32"


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "cuda:0"])
def test_bfloat16_on_a_cpu_with_native_bfloat16_and_on_cuda(device, native_bfloat16, caplog):
    native_bfloat16(True)
    with caplog.at_level("WARNING", logger=precision_module.__name__):
        assert resolve_precision("bfloat16", device) == "bfloat16"
    assert caplog.text == ""


def test_bfloat16_on_a_cpu_without_it_falls_back_to_float32_with_a_warning(native_bfloat16, caplog):
    native_bfloat16(False)
    with caplog.at_level("WARNING", logger=precision_module.__name__):
        assert resolve_precision("bfloat16", "cpu") == "float32"
    assert "no native bfloat16" in caplog.text and "runs in float32" in caplog.text
    assert resolve_precision("bfloat16", "cuda") == "bfloat16"  # the CPU's lack does not matter on a GPU


def test_float16_is_for_cuda():
    assert resolve_precision("float16", "cuda:0") == "float16"
    with pytest.raises(ValueError, match="'float16' is for CUDA devices.*'bfloat16'"):
        resolve_precision("float16", "cpu")


@pytest.mark.parametrize("name", ["int8", "bf16", "Float32", ""])
def test_unknown_precisions_name_the_value_and_the_choices(name):
    message = f"Unknown precision {name!r}: choose one of float32, bfloat16, float16"
    with pytest.raises(ValueError, match=message):
        resolve_precision(name, "cpu")
    with pytest.raises(ValueError, match=message):
        inference_autocast(name, "cpu")


def test_autocast_lowers_convolutions_to_the_precision():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        with inference_autocast("float32", "cpu"):
            full = conv(x)
        with inference_autocast("bfloat16", torch.device("cpu")):
            low = conv(x)
    assert full.dtype == torch.float32 and low.dtype == torch.bfloat16
    torch.testing.assert_close(full, conv(x))
    torch.testing.assert_close(low.float(), full, rtol=0.05, atol=0.05)
    assert not torch.equal(low.float(), full)  # rounded to bfloat16's 8-bit mantissa


def test_the_trainer_decides_amp_with_the_same_check():
    assert trainer_module.cpu_has_native_bfloat16 is precision_module.cpu_has_native_bfloat16
    assert isinstance(precision_module.cpu_has_native_bfloat16(), bool)
