"""Importing yolact_d2 (and the tools) shows none of the third-party deprecation warnings it can avoid."""
import os
import re
import subprocess
import sys
import warnings

import pytest

from yolact_d2.quiet_imports import AVOIDABLE_WARNINGS, quiet_third_party_imports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = (
    "import yolact_d2, yolact_d2.benchmark, yolact_d2.export, yolact_d2.utils\n"
    "from detectron2.modeling import build_model\n"
    "from yolact_d2.config import load_yolact_config\n"
    "cfg = load_yolact_config('configs/embedded/yolact_plus_R_18_shapes.yaml', ['MODEL.YOLACT.INPUT_SIZE', '96'])\n"
    "build_model(cfg)\n"
    "print('built')\n"
)


def _stderr_of(args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-W", "default"] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def _avoidable_in(text):
    return [message for _, message in AVOIDABLE_WARNINGS if re.search(message, text)]


@pytest.mark.parametrize("args", [["-c", BUILD], [os.path.join("tools", "demo.py"), "--help"]], ids=["build", "demo"])
def test_no_avoidable_warning_at_start_up(args):
    stdout, stderr = _stderr_of(args)
    assert _avoidable_in(stderr) == [], stderr[-3000:]
    assert "built" in stdout or "--config-file" in stdout


def test_the_filter_is_narrow():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_third_party_imports():
            warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`", FutureWarning)
            warnings.warn("pkg_resources is deprecated as an API", UserWarning)
            warnings.warn("`torch.jit.script` is deprecated", UserWarning)  # other category: shown
            warnings.warn("something else is deprecated", FutureWarning)  # other message: shown
        warnings.warn("`torch.jit.script` is deprecated", FutureWarning)  # outside the block: shown
    assert [(w.category, str(w.message)) for w in caught] == [
        (UserWarning, "`torch.jit.script` is deprecated"),
        (FutureWarning, "something else is deprecated"),
        (FutureWarning, "`torch.jit.script` is deprecated"),
    ]
