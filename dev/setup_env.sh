#!/usr/bin/env bash
# Creates (or checks) the project-local virtualenv `.venv` with everything yolact_d2 needs:
#   1. torch + torchvision,
#   2. detectron2 (an importable user build if there is one, else PyPI's pure-Python `sal-detectron2`),
#   3. yolact_d2 itself, editable, with its `dev` extra.
# Idempotent: when all is in place it only checks and returns in seconds.
# Environment: PYTHON (interpreter for a new venv, default python3), YOLACT_VENV (default <repo>/.venv),
#              TORCH_SPEC / TORCHVISION_SPEC (pip requirement strings).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${YOLACT_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.29.1}
D2_DIST=sal-detectron2==0.7.2
D2_DEPS=("fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" pycocotools "omegaconf>=2.1,<2.4" hydra-core yacs
         termcolor tabulate cloudpickle tqdm tensorboard matplotlib Pillow packaging "setuptools<81")

step=""
say() { printf '[setup] %s\n' "$*"; }
trap 'rc=$?; [ $rc -ne 0 ] && printf "[setup] FAILED at step: %s (exit %d)\n" "$step" "$rc" >&2' EXIT

step="virtualenv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

step="torch ($TORCH_SPEC, $TORCHVISION_SPEC)"
if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  say "installing $TORCH_SPEC $TORCHVISION_SPEC (a few minutes the first time)"
  "${PIP[@]}" "$TORCH_SPEC" "$TORCHVISION_SPEC"
fi

step="detectron2"
if ! "$PY" -c "import detectron2" >/dev/null 2>&1; then
  say "no importable detectron2: installing $D2_DIST (pure Python) and its dependencies"
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.10 -d "$tmp" "$D2_DIST"
  # Published only as cp310-none-any; its Python files run on any CPython 3.x, so install it under a py3 tag.
  src=$(ls "$tmp"/sal_detectron2-*.whl)
  cp "$src" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  "${PIP[@]}" "${D2_DEPS[@]}"
  "${PIP[@]}" --no-deps "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  rm -rf "$tmp"
  # The wheel ships a top-level package named `tools` that would shadow this project's tools/ scripts.
  site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  if [ -f "$site/tools/__init__.py" ] && grep -q detectron2 "$site/tools/"*.py 2>/dev/null; then
    say "removing the wheel's top-level 'tools' package (it shadows the project's tools/)"
    rm -rf "$site/tools"
  fi
fi

step="yolact_d2 (editable, with the dev extra)"
stamp="$VENV/.yolact_d2-setup.stamp"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ] || ! "$PY" -c "import yolact_d2" >/dev/null 2>&1; then
  say "installing yolact_d2 (editable) with its dev extra"
  "${PIP[@]}" --no-build-isolation -e "$ROOT[dev]"
  touch "$stamp"
fi

step="environment check"
"$PY" - <<'PYCHECK'
import torch, torchvision, detectron2, yolact_d2
from detectron2.config import get_cfg
get_cfg()
print(f"[setup] ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"detectron2 {detectron2.__version__} ({detectron2.__file__.rsplit('/', 2)[0]}), yolact_d2 {yolact_d2.__version__}")
PYCHECK
step=""
