"""YOLACT's per-stage breakdown from a profiler trace: known stage times, nesting, the real model's ranges."""
import time

import pytest
import torch
from torch import nn
from torch.profiler import profile, record_function

from yolact_d2.benchmark.complexity import analyze_complexity
from yolact_d2.benchmark.inputs import inference_inputs, synthetic_images
from yolact_d2.benchmark.models import build_random_model
from yolact_d2.benchmark.stages import OTHER_STAGE, STAGES, measure_stages

CONV_STAGES = ("backbone (ResNet)", "FPN", "protonet", "head + anchors")
# Seconds each stage of the fake model sleeps; the ResNet runs inside the backbone's range.
SLEEPS = {"preprocess": 0.004, "backbone (ResNet)": 0.04, "FPN": 0.006, "protonet": 0.004, "head + anchors": 0.004,
          "decode + NMS": 0.004, "mask assembly + crop (+ re-scoring)": 0.004,
          "post-processing (to Instances)": 0.004, OTHER_STAGE: 0.008}
SLACK = 0.025  # sleeps overrun on a loaded machine; less than the ResNet's time, so nesting errors still show


class _Sleep(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


class _SleepingYolact(nn.Module):
    """YOLACT's stage ranges (and a ``backbone.bottom_up``) around sleeps of known length."""

    def __init__(self, ranges=tuple(STAGES.values())):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.bottom_up = _Sleep(SLEEPS["backbone (ResNet)"])
        self.ranges = ranges

    def _stage(self, name, seconds):
        if name in self.ranges:
            with record_function(name):
                time.sleep(seconds)

    def forward(self, inputs):
        self._stage("yolact/preprocess", SLEEPS["preprocess"])
        with record_function("yolact/backbone"):
            self.backbone.bottom_up(inputs)
            time.sleep(SLEEPS["FPN"])
        for stage in list(STAGES)[3:]:
            self._stage(STAGES[stage], SLEEPS[stage])
        time.sleep(SLEEPS[OTHER_STAGE])  # outside every stage
        return [{"instances": [0, 1, 2]}]


def test_stage_times_are_the_ranges_durations_with_nested_stages_excluded():
    result = measure_stages(_SleepingYolact(), [{}], warmup=1, iters=2, device="cpu")
    rows = {r["stage"]: r for r in result["stages"]}
    assert list(rows) == list(STAGES) + [OTHER_STAGE]
    for stage, seconds in SLEEPS.items():  # the FPN's time excludes the ResNet's 40 ms inside it
        assert seconds * 1000 <= rows[stage]["median_ms"] < (seconds + SLACK) * 1000, stage
    total = sum(SLEEPS.values()) * 1000
    assert total <= result["end_to_end_ms"] < total + SLACK * 1000
    assert result["sum_ms"] == pytest.approx(sum(r["median_ms"] for r in rows.values()))
    assert rows["FPN"]["share"] == pytest.approx(rows["FPN"]["median_ms"] / result["sum_ms"])
    assert result["detections"] == [3] and result["batch_size"] == 1


def test_a_missing_range_is_a_clear_error():
    model = _SleepingYolact(ranges=("yolact/preprocess",))
    with pytest.raises(RuntimeError, match="no ranges .*'yolact/protonet'.*record_function"):
        measure_stages(model, [{}], warmup=0, iters=1, device="cpu")


@pytest.fixture(params=[False, True], ids=["yolact", "mask_rescoring"], scope="module")
def model_and_inputs(request, make_small_cfg):
    cfg = make_small_cfg(input_size=96)
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    cfg.MODEL.YOLACT.MASK_RESCORING.ENABLED = request.param
    inputs = inference_inputs(synthetic_images(1, 96), cfg)
    return build_random_model(cfg, inputs), inputs


def test_the_model_marks_every_stage_and_the_stages_add_up(model_and_inputs):
    model, inputs = model_and_inputs
    with torch.inference_mode():
        expected = model(inputs)[0]["instances"]
    result = measure_stages(model, inputs, warmup=0, iters=2, device="cpu")
    rows = {r["stage"]: r for r in result["stages"]}
    assert all(rows[s]["median_ms"] > 0 for s in STAGES), rows
    # medians of the parts vs the median of the whole: equal up to run-to-run noise
    assert result["sum_ms"] == pytest.approx(result["end_to_end_ms"], rel=0.3, abs=5.0)
    assert result["detections"] == [10]
    with torch.inference_mode(), profile() as prof:  # the ResNet's hooks are gone afterwards
        again = model(inputs)[0]["instances"]
    names = {e.name for e in prof.events()}
    assert set(STAGES.values()) - names == {"yolact/backbone/resnet"}
    torch.testing.assert_close(again.scores, expected.scores)


def test_convolutional_stages_get_gmacs_and_throughput(model_and_inputs):
    model, inputs = model_and_inputs
    gmacs_by_module = analyze_complexity(model, inputs)["gmacs_by_module"]
    rows = {r["stage"]: r for r in measure_stages(
        model, inputs, warmup=0, iters=1, device="cpu", gmacs_by_module=gmacs_by_module)["stages"]}
    assert rows["backbone (ResNet)"]["gmacs"] == pytest.approx(gmacs_by_module["backbone.bottom_up"])
    assert rows["FPN"]["gmacs"] == pytest.approx(gmacs_by_module["backbone"] - gmacs_by_module["backbone.bottom_up"])
    for stage in CONV_STAGES:
        assert rows[stage]["gmacs_per_s"] == pytest.approx(rows[stage]["gmacs"] / (rows[stage]["median_ms"] / 1000))
    assert rows["decode + NMS"]["gmacs"] is None
