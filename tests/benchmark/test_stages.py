"""YOLACT's per-stage breakdown: every stage is timed, they add up to the total, and the model is left as it was."""
import pytest
import torch

from yolact_d2.benchmark.complexity import analyze_complexity
from yolact_d2.benchmark.inputs import inference_inputs, synthetic_images
from yolact_d2.benchmark.models import build_random_model
from yolact_d2.benchmark import stages
from yolact_d2.benchmark.stages import OTHER_STAGE, STAGES, instrument_stages, measure_stages
from yolact_d2.benchmark.timing import StageClock

CONV_STAGES = ("backbone (ResNet)", "FPN", "protonet", "head + anchors")


@pytest.fixture(params=[False, True], ids=["yolact", "mask_rescoring"])
def model_and_inputs(cfg, request):
    cfg.MODEL.YOLACT.INPUT_SIZE = 96
    cfg.MODEL.YOLACT.POSTPROCESS.SCORE_THRESH = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    cfg.MODEL.YOLACT.MASK_RESCORING.ENABLED = request.param
    inputs = inference_inputs(synthetic_images(1, 96), cfg)
    return build_random_model(cfg, inputs), inputs


def test_every_stage_is_timed_and_the_stages_add_up(model_and_inputs):
    model, inputs = model_and_inputs
    result = measure_stages(model, inputs, warmup=1, iters=3, device="cpu")
    rows = {r["stage"]: r for r in result["stages"]}
    assert list(rows) == list(STAGES) + [OTHER_STAGE]
    assert all(rows[s]["median_ms"] > 0 for s in STAGES), rows
    assert sum(r["share"] for r in rows.values()) == pytest.approx(1.0)
    # medians of the parts vs the median of the whole: equal up to run-to-run noise
    assert result["sum_ms"] == pytest.approx(result["end_to_end_ms"], rel=0.3, abs=5.0)
    assert result["detections"] == [10] and result["batch_size"] == 1


def test_convolutional_stages_get_gmacs_and_throughput(model_and_inputs):
    model, inputs = model_and_inputs
    gmacs_by_module = analyze_complexity(model, inputs)["gmacs_by_module"]
    rows = {r["stage"]: r for r in measure_stages(
        model, inputs, warmup=0, iters=1, device="cpu", gmacs_by_module=gmacs_by_module)["stages"]}
    for stage in CONV_STAGES:
        assert rows[stage]["gmacs"] > 0 and rows[stage]["gmacs_per_s"] > 0
    assert sum(rows[s]["gmacs"] for s in CONV_STAGES) <= gmacs_by_module[""] + 1e-9
    assert rows["decode + NMS"]["gmacs"] is None


def test_instrumentation_is_removed_afterwards(model_and_inputs):
    model, inputs = model_and_inputs
    clock = StageClock("cpu")
    with torch.inference_mode():
        expected = model(inputs)[0]["instances"]
        with instrument_stages(model, clock):
            instrumented = model(inputs)[0]["instances"]
        assert set(clock.seconds) == set(STAGES)
        clock.reset()
        model(inputs)
    assert not clock.seconds  # neither the model's stage timer nor the ResNet's hooks are left
    torch.testing.assert_close(instrumented.scores, expected.scores)


def test_a_stage_the_model_does_not_have_is_a_clear_error(model_and_inputs, monkeypatch):
    model, _ = model_and_inputs
    monkeypatch.setattr(stages, "INFERENCE_STAGES", ("preprocess", "backbone"))
    with pytest.raises(ValueError, match="decode_nms"):
        with instrument_stages(model, StageClock("cpu")):
            pass
