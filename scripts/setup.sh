#!/usr/bin/env bash
# Install hf-meddiff (editable) with the given extras, e.g. `bash scripts/setup.sh test`.
# PyTorch: an existing install is kept (CPU or CUDA). With none, torch==2.13.0 is installed:
# on a CPU-only machine with a local CPU wheel that is what pip picks; elsewhere PyPI's build
# (CUDA on Linux). Set HF_MEDDIFF_TORCH to choose another requirement, e.g. "torch==2.13.0+cpu".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python}"
if ! "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m pip install --quiet "${HF_MEDDIFF_TORCH:-torch==2.13.0}"
fi
if [ -n "$extras" ]; then
    "$py" -m pip install --quiet -e ".[${extras}]"
else
    "$py" -m pip install --quiet -e .
fi
