"""tools/train_net.py killed with kill -9, then resumed (2 processes and one dying: docs/robustness.md)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
CONFIG = os.path.join(ROOT, "configs", "embedded", "yolact_R_18_shapes.yaml")
# A tiny run on the embedded dataset, without evaluation; detectron2 writes metrics.json every 20 iterations.
TINY = [
    "MODEL.YOLACT.INPUT_SIZE", "64", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "1",
    "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "()", "SOLVER.AMP.ENABLED", "False", "DATASETS.TEST", "()",
]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _start(cmd, output):
    """Run ``cmd`` in the background, its output to the file ``output`` (a pipe left unread would block it)."""
    with open(output, "w") as f:
        return subprocess.Popen(cmd, cwd=os.path.dirname(output), env=ENV, stdout=f, stderr=subprocess.STDOUT)


def _wait_for(condition, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"train_net exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.05)


def _iterations(metrics_file):
    with open(metrics_file) as f:
        return [json.loads(line)["iteration"] for line in f]


def test_kill_9_then_resume_continues_from_the_last_checkpoint_with_metrics_intact(tmp_path):
    # A checkpoint after iteration 14 (then 29), metrics after 19. Killed once metrics has iteration 19, the run
    # resumes from model_0000014.pth at iteration 15 and runs 15..19 again.
    cmd = [sys.executable, TRAIN_NET, "--config-file", CONFIG, "OUTPUT_DIR", str(tmp_path),
           "SOLVER.CHECKPOINT_PERIOD", "15"] + TINY
    metrics = tmp_path / "metrics.json"
    proc = _start(cmd + ["SOLVER.MAX_ITER", "1000"], str(tmp_path / "killed.txt"))
    _wait_for(lambda: metrics.exists() and '"iteration": 19' in metrics.read_text(), proc, 240, "iteration 19")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000014.pth"
    assert _iterations(metrics) == [19]

    resumed = subprocess.run(cmd[:2] + ["--resume"] + cmd[2:] + ["SOLVER.MAX_ITER", "20"], cwd=str(tmp_path), env=ENV, text=True,
                             capture_output=True, timeout=240)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "Starting training from iteration 15" in log
    assert "dropped its last 1 records, from iteration 15 on" in log
    assert _iterations(metrics) == [19]  # once: the record of the killed run was replaced by the resumed run's
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
