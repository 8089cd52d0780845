"""tools/benchmark.py: detectron2's flags mapped to the suite's settings, and bad values named before any run."""
import os

import pytest

from yolact_d2.benchmark import suite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "embedded", "yolact_R_18_shapes.yaml")


@pytest.fixture
def tool(load_tool):
    return load_tool("benchmark.py")


def test_flags_become_the_suites_settings(tool):
    args = tool.get_parser().parse_args([
        "--config-file", CONFIG, "--input", "a.png", "--output", "out", "--tasks", "latency, stages,",
        "--eval-weights", "a.yaml=b=c.pth", "--opts", "MODEL.YOLACT.NUM_CLASSES", "3",
    ])
    s = tool.settings_from_args(args)
    assert s.configs == [CONFIG] and s.images == ["a.png"] and s.output_dir == "out"
    assert s.tasks == ["latency", "stages"] and s.eval_weights == [("a.yaml", "b=c.pth")]
    assert s.opts == ["MODEL.YOLACT.NUM_CLASSES", "3"]
    assert s.input_size is None  # each config's own size
    assert tool.settings_from_args(tool.get_parser().parse_args([])).eval_weights is None  # the embedded defaults


@pytest.mark.parametrize("flags,error,message", [
    (["--eval-weights", "a.yaml"], ValueError, "--eval-weights takes CONFIG=WEIGHTS pairs; got 'a.yaml'"),
    (["--tasks", "latency,speed"], ValueError, r"Unknown tasks \['speed'\]; choose from latency,"),
    (["--input-size", "0"], ValueError, "--input-size must be >= 1"),
    (["--iters", "0"], ValueError, "--iters must be >= 1"),
    (["--opts", "MODEL.YOLACT.PRECISION", "bfloat16"], ValueError, "with --precisions, not with --opts"),
    (["--precisions", "bfloat16", "--onnxruntime", "int8"], ValueError, "keep float32 among --precisions"),
    (["--opts", "MODEL.YOLACT.INPUT_SIZ", "96"], KeyError, "MODEL.YOLACT.INPUT_SIZ"),
])
def test_bad_values_are_named_before_anything_is_measured(tool, monkeypatch, flags, error, message):
    measured = []
    monkeypatch.setattr(suite, "build_random_model", lambda *args: measured.append(args))
    args = tool.get_parser().parse_args(["--configs", CONFIG, "--tasks", "flops", "--device", "cpu"] + flags)
    with pytest.raises(error, match=message):
        tool.main(args)
    assert not measured
