#!/usr/bin/env bash
# The project's main job from nothing: set up the environment if needed (dev/setup_env.sh), generate the
# embedded yolact_shapes dataset on first use, train YOLACT on it on the CPU and print COCOEvaluator's
# bbox and segm AP. Extra arguments go to tools/train_net.py, e.g. `bash dev/run_main.sh SOLVER.MAX_ITER 100`
# or `bash dev/run_main.sh --config-file configs/embedded/mask_rcnn_R_18_FPN_shapes.yaml`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/dev/setup_env.sh"
VENV=${YOLACT_VENV:-$ROOT/.venv}
cd "$ROOT"
config=configs/embedded/yolact_R_18_shapes.yaml
if [ "${1:-}" = "--config-file" ]; then config=$2; shift 2; fi
echo "[main] training and evaluating $config"
exec "$VENV/bin/python" tools/train_net.py --config-file "$config" "$@"
