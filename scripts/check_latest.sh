#!/usr/bin/env bash
# Canary for the next upstream break: installs the newest version of every dependency that pyproject.toml
# allows (no constraints file) into a scratch virtual environment, runs the model / processor / generation /
# rewards / TRL-seam tests there, and ends with one line naming each package whose newest version differs
# from constraints.txt and whether the tests passed.
#
#   bash scripts/check_latest.sh [SCRATCH_DIR]     # without SCRATCH_DIR: a temporary folder, removed at the end
#
# Exit status: 0 when the tests pass, 1 when they fail. `.ci/run` runs it after the real test command and
# reports a failure loudly without blocking (a new release is seen the day it appears and fixed in a follow-up).
# torch is not upgraded: the scratch environment gets torch==2.13.0 (or HF_MEDDIFF_TORCH), as setup.sh does.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ge 1 ]]; then
    scratch="$1"  # kept: the caller chose it
else
    scratch="$(mktemp -d -t meddiff-canary-XXXX)"
    trap 'rm -rf "$scratch"' EXIT  # a scratch environment takes several GB; never leave one behind
fi
py="${PYTHON:-python}"
tests=(tests/test_modeling.py tests/test_processor.py tests/test_generation.py tests/test_pipeline.py
       tests/test_rewards.py tests/test_rewards_properties.py tests/test_trl_seams.py)

echo "[canary] scratch environment: $scratch/venv"
"$py" -m venv "$scratch/venv" || { echo "CANARY: could not create a virtual environment in $scratch"; exit 1; }
venv_py="$scratch/venv/bin/python"
if ! "$venv_py" -m pip install --quiet "${HF_MEDDIFF_TORCH:-torch==2.13.0}" \
   || ! "$venv_py" -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]"; then
    echo "CANARY: FAILED to install the newest allowed versions (see pip's message above)"
    exit 1
fi

changed=$("$venv_py" - <<'PY'
import re
from importlib.metadata import PackageNotFoundError, version

diffs = []
for line in open("constraints.txt"):
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)==(\S+)", line)
    if not match:
        continue
    name, pinned = match.groups()
    try:
        newest = version(name)
    except PackageNotFoundError:
        continue
    if newest != pinned:
        diffs.append(f"{name} {pinned} -> {newest}")
print(", ".join(diffs) if diffs else "none (the constraints are the newest allowed)")
PY
)

echo "[canary] running ${tests[*]}"
if "$venv_py" -m pytest -q -p no:cacheprovider "${tests[@]}"; then
    echo "CANARY: tests PASSED with the newest allowed versions; differing from constraints.txt: $changed"
    exit 0
fi
echo "CANARY: tests FAILED with the newest allowed versions; differing from constraints.txt: $changed"
exit 1
