"""tools/benchmark.py takes detectron2's flags: --config-file, --input, --output, --opts."""
import os

import pytest

from yolact_d2.benchmark.models import benchmark_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "embedded", "yolact_R_18_shapes.yaml")


def test_detectron2_flags_are_parsed_and_applied(load_tool):
    args = load_tool("benchmark.py").get_parser().parse_args(
        ["--config-file", CONFIG, "--input", "a.png", "--output", "out", "--opts", "MODEL.WEIGHTS", "x.pth"]
    )
    assert args.configs == [CONFIG] and args.images == ["a.png"] and args.output_dir == "out"
    cfg = benchmark_config(args.configs[0], device="cpu", input_size=96, opts=args.opts)
    assert cfg.MODEL.WEIGHTS == "x.pth" and cfg.MODEL.YOLACT.INPUT_SIZE == 96


def test_onnxruntime_precisions_are_parsed(load_tool, capsys):
    parser = load_tool("benchmark.py").get_parser()
    assert parser.parse_args(["--onnxruntime", "float32", "int8"]).onnxruntime == ["float32", "int8"]
    assert parser.parse_args([]).onnxruntime == []
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--onnxruntime", "int4"])
    assert e.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err


def test_precisions_flag(load_tool):
    parser = load_tool("benchmark.py").get_parser()
    assert parser.parse_args([]).precisions == ["float32"]
    assert parser.parse_args(["--precisions", "float32", "bfloat16"]).precisions == ["float32", "bfloat16"]
    with pytest.raises(SystemExit):  # argparse: invalid choice
        parser.parse_args(["--precisions", "int8"])
