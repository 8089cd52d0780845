"""YolactCheckpointer: atomic checkpoint files and their orphans, class-dependent layers re-initialised, other misfits
refused, missing / unreachable / non-checkpoint weights named with what to do."""
import logging
import os
import pickle
import re
import socket
import stat
import time
from urllib.error import URLError

import pytest
import torch
import yaml
from iopath.common import file_io as iopath_file_io

from detectron2.modeling import build_model

from yolact_d2.engine import YolactCheckpointer, write_atomically
from yolact_d2.engine.checkpoint import remove_orphan_temporary_files

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(cfg, num_classes=5, **changes):
    """The model of ``cfg`` (tests/conftest.py's small config) with ``num_classes`` and ``KEY: value`` changes."""
    cfg = cfg.clone()
    cfg.MODEL.YOLACT.NUM_CLASSES = num_classes
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return build_model(cfg)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


real_save = torch.save


def _half_then_fail(obj, f):
    """torch.save that writes the first half of the file, then fails (a full disk, a kill)."""
    real_save(obj, f)
    size = f.tell()
    f.seek(size // 2)
    f.truncate()
    raise OSError("No space left on device")


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint_and_tag(cfg, tmp_path, monkeypatch):
    model = _model(cfg)
    checkpointer = YolactCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final", iteration=9)
    saved = _state(model)
    with torch.no_grad():
        model.head.cls_score.weight.add_(1.0)  # the weights of a later save
    monkeypatch.setattr(torch, "save", _half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_final", iteration=19)  # a rerun overwriting model_final.pth
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no temporary file left
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    loaded = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert loaded["iteration"] == 9
    for key, value in saved.items():
        torch.testing.assert_close(loaded["model"][key], value, msg=key)


def test_write_atomically_replaces_the_whole_file_or_nothing(tmp_path):
    path = tmp_path / "last_checkpoint"
    write_atomically(str(path), lambda f: f.write(b"model_0000001.pth"))
    assert path.read_text() == "model_0000001.pth"

    def fail_midway(f):
        f.write(b"model_00")
        raise KeyboardInterrupt  # as a Ctrl-C during the write

    with pytest.raises(KeyboardInterrupt):
        write_atomically(str(path), fail_midway)
    assert path.read_text() == "model_0000001.pth" and os.listdir(tmp_path) == ["last_checkpoint"]
    write_atomically(str(path), lambda f: f.write(b"model_0000003.pth"))
    assert path.read_text() == "model_0000003.pth"


PLUS = {"MODEL.YOLACT.MASK_RESCORING.ENABLED": True}


@pytest.fixture
def five_class_checkpoint(cfg, tmp_path):
    """A checkpoint of the small YOLACT++ (mask re-scoring on) for 5 classes, and its state dict."""
    torch.manual_seed(1)
    model = _model(cfg, 5, **PLUS)
    path = str(tmp_path / "five.pth")
    torch.save({"model": model.state_dict()}, path)
    return path, _state(model)


CLASS_LAYERS = ("head.cls_score", "sem_seg_head.conv", "mask_rescoring.layers.10")


def test_fine_tuning_on_another_class_count_reinitialises_the_class_layers_in_one_log_line(
    cfg, five_class_checkpoint, caplog
):
    path, saved = five_class_checkpoint
    torch.manual_seed(2)
    model = _model(cfg, 3, **PLUS)
    assert model.class_dependent_layers() == list(CLASS_LAYERS)
    initial = _state(model)
    with caplog.at_level(logging.INFO):
        YolactCheckpointer(model, reinit_class_layers=True).load(path)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "Loading from" not in
                r.getMessage()]
    assert len(messages) == 1, messages  # no per-tensor "Skip loading" nor "not found in the checkpoint"
    assert messages[0].startswith(
        "Re-initialised the class-dependent layers head.cls_score, mask_rescoring.layers.10, sem_seg_head.conv"
    )
    assert "head.cls_score.weight [18, 64, 3, 3] (model [12, 64, 3, 3])" in messages[0]  # 3 anchors x (5 + 1)
    for key, value in model.state_dict().items():
        expected = initial[key] if key.startswith(CLASS_LAYERS) else saved[key]
        torch.testing.assert_close(value, expected, msg=key)


def test_inference_with_another_class_count_is_refused(cfg, five_class_checkpoint):
    path, _ = five_class_checkpoint
    model = _model(cfg, 3, **PLUS)
    with pytest.raises(ValueError, match=r"class-dependent tensors head\.cls_score\.weight \[18, 64, 3, 3\] "
                                         r"\(model \[12, 64, 3, 3\]\).*another class count"):
        YolactCheckpointer(model).load(path)


@pytest.mark.parametrize(
    "changes, names",
    [
        ({"MODEL.YOLACT.NUM_PROTOTYPES": 16}, ["protonet.predictor.weight [8, 64, 1, 1] (model [16, 64, 1, 1])",
                                               "head.coef_pred.weight [24, 64, 3, 3] (model [48, 64, 3, 3])"]),
        ({"MODEL.FPN.OUT_CHANNELS": 32}, ["backbone.fpn_lateral3.weight [64, 128, 1, 1] (model [32, 128, 1, 1])"]),
    ],
)
def test_other_tensors_of_other_shapes_are_refused_by_name(cfg, five_class_checkpoint, changes, names):
    path, _ = five_class_checkpoint
    model = _model(cfg, 5, **PLUS, **changes)
    before = _state(model)
    with pytest.raises(ValueError, match="do not fit the model: it was trained with another architecture") as e:
        YolactCheckpointer(model, reinit_class_layers=True).load(path)
    for name in names:
        assert name in str(e.value)
    for key, value in model.state_dict().items():  # nothing was loaded
        torch.testing.assert_close(value, before[key], msg=key)


def test_a_checkpoint_of_a_ddp_model_loads(cfg, five_class_checkpoint, tmp_path):
    _, saved = five_class_checkpoint
    path = str(tmp_path / "ddp.pth")
    torch.save({"model": {"module." + k: v for k, v in saved.items()}}, path)
    model = _model(cfg, 5, **PLUS)
    YolactCheckpointer(model).load(path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)


def test_models_without_class_dependent_layers_load_as_with_detectron2(tmp_path, caplog):
    path = str(tmp_path / "linear.pth")
    torch.save({"model": torch.nn.Linear(3, 4).state_dict()}, path)
    model = torch.nn.Linear(3, 2)
    with caplog.at_level(logging.WARNING):
        YolactCheckpointer(model).load(path)
    assert "Skip loading parameter 'weight'" in caplog.text  # detectron2's warning, no error


def test_write_atomically_gives_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        with open(tmp_path / "plain", "wb") as f:
            f.write(b"x")
        write_atomically(str(tmp_path / "atomic"), lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == 0o644


def _temporary_name(host, pid):
    """A temporary file name of write_atomically for model_final.pth, by writer ``pid`` of ``host``."""
    return f".model_final.pth.{host}.{pid}.ab3_x9yz.tmp"


def _ended_process():
    """The pid of a process of this machine that has ended."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_kill_during_a_checkpoint_write_leaves_a_temporary_file_that_the_next_start_removes(
    cfg, tmp_path
):
    model = _model(cfg)
    YolactCheckpointer(model, str(tmp_path)).save("model_final", iteration=9)
    pid = os.fork()
    if pid == 0:  # a writer killed mid-write
        try:
            write_atomically(str(tmp_path / "model_final.pth"), lambda f: (f.write(b"half"), os.kill(os.getpid(), 9)))
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    orphans = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert len(orphans) == 1 and f".{pid}." in orphans[0]
    YolactCheckpointer(model, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
    assert torch.load(tmp_path / "model_final.pth", weights_only=False)["iteration"] == 9


def test_only_temporary_files_of_ended_or_long_silent_writers_are_removed(tmp_path):
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())  # as write_atomically names it
    day_old = time.time() - 25 * 3600
    files = {
        _temporary_name(host, _ended_process()): True,  # this machine, writer gone
        _temporary_name(host, os.getpid()): False,  # this process
        _temporary_name(host, os.getppid()): False,  # a live process (pytest's parent)
        _temporary_name("other-host", 1234): False,  # another machine's, fresh: its writer may be alive
        ".model_final.pth.ab3_x9yz.tmp": False,  # named without its writer, fresh
        "model_final.pth": False,
        "notes.tmp": False,
        ".model_final.pth.tmp": False,
    }
    old = {
        _temporary_name("other-host", 99): True,
        ".model_0000099.pth.kq1_0zzz.tmp": True,
        f".model_0000199.pth.{host}.{os.getppid()}.ab3_x9yz.tmp": True,  # its pid since taken by a live process
        "old.tmp": False,
    }
    for name in list(files) + list(old):
        (tmp_path / name).write_bytes(b"x")
    for name in old:
        os.utime(tmp_path / name, (day_old, day_old))
    removed = remove_orphan_temporary_files(str(tmp_path))
    expected = {name for name, orphan in {**files, **old}.items() if orphan}
    assert {os.path.basename(p) for p in removed} == expected
    assert set(os.listdir(tmp_path)) == (set(files) | set(old)) - expected


@pytest.mark.parametrize("config", sorted(os.listdir(os.path.join(REPO_ROOT, "configs", "original"))))
def test_the_original_configs_weights_before_conversion_name_the_converter_command(config, tmp_path, monkeypatch):
    with open(os.path.join(REPO_ROOT, "configs", "original", config)) as f:
        weights = yaml.safe_load(f)["MODEL"]["WEIGHTS"]
    monkeypatch.chdir(tmp_path)  # no converted weights here
    with pytest.raises(FileNotFoundError) as e:
        YolactCheckpointer(torch.nn.Linear(3, 2)).load(weights)
    name = os.path.basename(weights)
    assert f"{weights} (MODEL.WEIGHTS) does not exist" in str(e.value)
    assert f"python tools/convert_yolact_weights.py {name} {weights}" in str(e.value)


def test_missing_weights_of_another_name_say_how_to_start_without_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mine\.pth \(MODEL\.WEIGHTS\) does not exist.*MODEL\.WEIGHTS.*\"\""):
        YolactCheckpointer(torch.nn.Linear(3, 2)).load(str(tmp_path / "mine.pth"))


def test_weights_that_cannot_be_downloaded_say_which_file_goes_where(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(iopath_file_io, "download", offline)
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path))
    url = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    cached = tmp_path / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    for weights in ("detectron2://ImageNetPretrained/MSRA/R-50.pkl", url):
        with pytest.raises(OSError) as e:
            YolactCheckpointer(torch.nn.Linear(3, 2)).load(weights)
        message = str(e.value)
        assert f"The weights {weights} could not be downloaded" in message and "name resolution" in message
        assert f"Fetch {url} " in message and f"put it at {cached} " in message
        assert 'or to "" to start from random weights' in message
    # the file put where the message says loads, offline
    cached.parent.mkdir(parents=True, exist_ok=True)
    fetched = torch.nn.Linear(3, 2)
    with open(cached, "wb") as f:
        pickle.dump({"model": fetched.state_dict(), "__author__": "test"}, f)
    model = torch.nn.Linear(3, 2)
    YolactCheckpointer(model).load("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    torch.testing.assert_close(model.weight, fetched.weight)


@pytest.mark.parametrize(
    "content, what",
    [
        (b"", "it is empty"),
        (b"weights: none\nsecond line", "it is a text file starting 'weights: none'"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50), "it is a PNG image"),
        (bytes(range(256)) * 4, "it is 1024 bytes of another format"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_with_what_it_is(tmp_path, content, what):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        YolactCheckpointer(torch.nn.Linear(3, 2)).load(str(path))
    assert f"The weights file {path} (MODEL.WEIGHTS) is not a checkpoint: {what}." in str(e.value)
    assert "tools/convert_yolact_weights.py" in str(e.value)
