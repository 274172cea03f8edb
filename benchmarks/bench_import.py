"""Benchmark: cold import time of the public entry points, each in a fresh Python process.

For every module the median wall time of `--repeats` fresh `python -c "import <module>"` runs is reported, with
the heavy libraries each import left loaded (torch, transformers, diffusers, datasets, the model code), so a
regression says both how slow and why.

    python benchmarks/bench_import.py --json bench_import.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

MODULES = ("hf_meddiff", "hf_meddiff.rewards", "hf_meddiff.metrics", "hf_meddiff.cli")
HEAVY = (
    "torch",
    "transformers",
    "diffusers",
    "datasets",
    "hf_meddiff.models.meddiff.modeling_meddiff",
    "hf_meddiff.models.meddiff.generation_meddiff",
)
PROBE = (
    "import sys, time, json; t = time.perf_counter(); import {module}; t = time.perf_counter() - t; "
    "print(json.dumps({{'seconds': t, 'heavy': [m for m in {heavy!r} if m in sys.modules]}}))"
)


def cold_import(module: str) -> dict:
    """Seconds (in-process, from the import statement) and heavy modules loaded by one fresh `import module`."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per module (median reported)")
    parser.add_argument("--modules", nargs="*", default=list(MODULES))
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    results = {}
    cold_import(args.modules[0])  # warm the OS file cache, so the first module is not charged for it
    for module in args.modules:
        runs = [cold_import(module) for _ in range(args.repeats)]
        seconds = statistics.median(run["seconds"] for run in runs)
        results[module] = {"median_s": round(seconds, 3), "repeats": args.repeats, "loads": runs[-1]["heavy"]}
        loads = ", ".join(runs[-1]["heavy"]) or "none of them"
        print(f"{module:<22} {seconds:6.2f} s  (heavy modules loaded: {loads})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "imports": results}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
