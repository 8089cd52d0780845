"""add_yolact_config sets exactly the recorded keys and defaults (shipped configs: tests/test_configs.py)."""
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from yolact_d2.config import add_yolact_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS_FILE = os.path.join(ROOT, "tests", "fixtures", "yolact_config_defaults.txt")
_UNSET = "<not set by add_yolact_config>"


def _leaves(node: CN, prefix: str = ""):
    for name, value in node.items():
        if isinstance(value, CN):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def _keys_set_by_add_yolact_config():
    """``{dotted key: repr(default)}`` of every leaf add_yolact_config writes, found by first overwriting every
    leaf of detectron2's default config with a marker: also finds keys it sets to detectron2's own default."""
    cfg = get_cfg()
    for key, _ in list(_leaves(cfg)):
        *path, name = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[name] = _UNSET
    add_yolact_config(cfg)
    return {key: repr(value) for key, value in _leaves(cfg) if value is not _UNSET}


def _recorded_defaults():
    with open(DEFAULTS_FILE) as f:
        lines = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
    return dict(line.split(" = ", 1) for line in lines)


def test_keys_and_defaults_equal_the_recorded_ones():
    actual, recorded = _keys_set_by_add_yolact_config(), _recorded_defaults()
    differences = sorted(
        f"{key}: recorded {recorded.get(key, '(absent)')}, add_yolact_config {actual.get(key, '(absent)')}"
        for key in set(actual) | set(recorded)
        if actual.get(key) != recorded.get(key)
    )
    assert not differences, f"update {DEFAULTS_FILE} if intended:\n" + "\n".join(differences)


def test_keys_outside_model_yolact_are_documented():
    outside = sorted(key for key in _keys_set_by_add_yolact_config() if not key.startswith("MODEL.YOLACT."))
    assert outside, "add_yolact_config sets TEST.DETECTIONS_PER_IMAGE at least"
    undocumented = [key for key in outside if f"``{key}``" not in add_yolact_config.__doc__]
    assert not undocumented, f"add_yolact_config's docstring must name these keys outside MODEL.YOLACT: {undocumented}"
