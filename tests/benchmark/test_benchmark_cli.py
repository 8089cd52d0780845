"""tools/benchmark.py end to end on tiny settings, in a subprocess."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_writes_the_reports(small_yolact_config, mask_rcnn_config, tmp_path):
    out = tmp_path / "bench"
    args = [
        sys.executable, os.path.join(ROOT, "tools", "benchmark.py"),
        "--configs", small_yolact_config, mask_rcnn_config,
        "--tasks", "latency,stages,nms,flops", "--iters", "1", "--warmup", "0", "--input-size", "96",
        "--batch-sizes", "1", "--fixed-detections", "5", "--num-threads", "1", "--device", "cpu",
        "--output-dir", str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== Latency ==" in proc.stdout and "speed-up vs mask_rcnn_R_18_FPN_shapes" in proc.stdout
    assert sorted(os.listdir(out)) == ["benchmark.json", "benchmark.md"]  # no accuracy: no plot
    results = json.loads((out / "benchmark.json").read_text())
    assert len(results["latency"]) == 2 * 2  # configs x modes
    assert {r["input_size"] for r in results["latency"]} == {96}
    assert {tuple(r["detections"]) for r in results["latency"] if r["mode"] == "fixed"} == {(5,)}
    assert [r["config"] for r in results["flops"]] == ["small_yolact", "mask_rcnn_R_18_FPN_shapes"]
    assert len(results["stages"]) == 1 and results["stages"][0]["plain_ms"] > 0
    assert [r["name"] for r in results["nms"]["rows"]] == ["FastNMS", "CrossClassFastNMS", "StandardNMS"]
    assert results["settings"]["tasks"] == ["latency", "stages", "nms", "flops"]
    assert "## YOLACT stages" in (out / "benchmark.md").read_text()
