"""tools/lazyconfig_train_net.py: the embedded LazyConfig, shrunk to a tiny model and input, trains and evaluates."""
import importlib.util
import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "lazy", "embedded", "yolact_R_18_shapes.py")


def _tool():
    """tools/lazyconfig_train_net.py as a module."""
    path = os.path.join(ROOT, "tools", "lazyconfig_train_net.py")
    spec = importlib.util.spec_from_file_location("lazyconfig_train_net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(tool, output_dir, *extra, overrides=()):
    tiny = [
        "model.input_size=64", "model.backbone.out_channels=32", "model.protonet.conv_dims=[32]",
        "model.protonet.post_upsample_conv_dims=[32]", "model.head.shared_conv_dims=[32]",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "train.max_iter=3", "train.eval_period=0", "train.amp.enabled=False", "train.log_period=1",
        "train.checkpointer.period=1", "train.checkpointer.max_to_keep=1", f"train.output_dir={output_dir}",
    ]
    return tool.default_argument_parser().parse_args(["--config-file", CONFIG, *extra, *tiny, *overrides])


def test_trains_a_few_iterations_then_evaluates(tmp_path):
    tool = _tool()
    tool.main(_args(tool, tmp_path))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    trained = [m for m in metrics if "total_loss" in m]
    assert [m["iteration"] for m in trained] == [0, 1, 2]
    assert all(torch.isfinite(torch.tensor(m["total_loss"])) for m in trained)
    assert all(m["num_pos_anchors"] > 0 for m in trained)  # the loss's matching statistics reach the storage
    evaluated = [m for m in metrics if "segm/AP" in m]
    assert len(evaluated) == 1 and 0 <= evaluated[0]["segm/AP"] <= 100 and 0 <= evaluated[0]["bbox/AP"] <= 100
    # a checkpoint after each iteration, the last one kept (train.checkpointer.max_to_keep), and the final one
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000002.pth", "model_final.pth"]
    checkpoint = tmp_path / "model_final.pth"
    results = tool.main(_args(tool, tmp_path / "eval", "--eval-only", f"train.init_checkpoint={checkpoint}"))
    assert results["segm"]["AP"] == pytest.approx(evaluated[0]["segm/AP"])


def test_an_unknown_override_key_is_refused_with_the_closest_keys(tmp_path):
    tool = _tool()
    with pytest.raises(KeyError, match=r"Non-existent config key: train.max_itr \(in the overrides\): did you mean "
                                       r"train.max_iter\?"):
        tool.main(_args(tool, tmp_path, overrides=["train.max_itr=30"]))
    assert not list(tmp_path.iterdir())  # refused before anything ran


def test_a_batch_size_the_processes_cannot_share_names_the_key(tmp_path):
    tool = _tool()
    with pytest.raises(ValueError, match=r"dataloader.train.total_batch_size=0: the total batch size"):
        tool.main(_args(tool, tmp_path, overrides=["dataloader.train.total_batch_size=0"]))


def test_a_missing_or_non_checkpoint_init_checkpoint_is_named(tmp_path):
    tool = _tool()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        tool.main(_args(tool, tmp_path / "eval", "--eval-only", f"train.init_checkpoint={tmp_path / 'missing.pth'}"))
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    with pytest.raises(ValueError, match="notes.pth"):
        tool.main(_args(tool, tmp_path / "train", f"train.init_checkpoint={text}"))
