#!/usr/bin/env bash
# Install hf-meddiff (editable) with the given extras, e.g. `bash scripts/setup.sh test`.
#
# Versions: by default every dependency is installed at the version in `constraints.txt`, the set the test
# suite was last run with, so a new user gets a tested combination whatever the registry holds today.
# Set HF_MEDDIFF_CONSTRAINTS=none to take the newest versions pyproject.toml allows instead (untested; see
# scripts/check_latest.sh), or to another file to use that one.
#
# PyTorch: an existing install is kept (CPU or CUDA). With none, torch==2.13.0 is installed: on a CPU-only
# machine with a local CPU wheel that is what pip picks; elsewhere PyPI's build (CUDA on Linux). Set
# HF_MEDDIFF_TORCH to choose another requirement, e.g. "torch==2.13.0+cpu".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-python}"
constraints="${HF_MEDDIFF_CONSTRAINTS:-constraints.txt}"
if ! "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m pip install --quiet "${HF_MEDDIFF_TORCH:-torch==2.13.0}"
fi
target="."
[ -n "$extras" ] && target=".[${extras}]"
if [ "$constraints" = "none" ]; then
    echo "setup.sh: HF_MEDDIFF_CONSTRAINTS=none: installing the newest versions pyproject.toml allows (untested)" >&2
    "$py" -m pip install --quiet -e "$target"
else
    if [ ! -f "$constraints" ]; then
        echo "setup.sh: constraints file '$constraints' not found (set HF_MEDDIFF_CONSTRAINTS=none to skip it)" >&2
        exit 2
    fi
    "$py" -m pip install --quiet -c "$constraints" -e "$target"
fi
# CI only: the review app's browser test (tests/test_review_browser.py) needs Chromium and its driver.
case ",$extras," in *,test,*)
    if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1; then
        sudo_cmd=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq chromium chromium-driver
    fi
    ;;
esac
