"""Peak RAM of converting a sharded LLaDA-layout checkpoint (`hf-meddiff convert llada`), measured in a fresh process.

    python benchmarks/convert_peak_ram.py --d-model 1024 --layers 6 --shards 6

Builds a synthetic checkpoint (LLaDA key names and config fields, random float32 weights, sharded safetensors +
index), converts it, and prints the checkpoint size, the largest shard and tensor, and the process's peak resident
memory (Linux VmHWM, reset after the imports) above the resident memory before the conversion, as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from hf_meddiff.models.meddiff.convert_llada_meddiff import convert_llada
import transformers, tokenizers  # imported before the baseline
import hf_meddiff.models.meddiff.processing_meddiff  # (diffusers, PIL) for the processor it saves

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

open("/proc/self/clear_refs", "w").write("5")  # Linux: reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
start = time.perf_counter()
convert_llada(sys.argv[1], sys.argv[2], image_codebook_size=8192, image_grid_size=16)
print(json.dumps({"rss_before": before, "peak_rss": status("VmHWM"), "seconds": time.perf_counter() - start}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--shards", type=int, default=6)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from convert_fixtures import build_llada, save_sharded

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        _, weights = build_llada(src, d_model=args.d_model, mlp_hidden_size=4 * args.d_model, n_layers=args.layers,
                                 n_heads=8, n_kv_heads=8)  # fmt: skip
        for shard in src.glob("model-*.safetensors"):
            shard.unlink()
        save_sharded(weights, src, num_shards=args.shards)
        largest_tensor = max(t.numel() * t.element_size() for t in weights.values())
        del weights
        shards = sorted(src.glob("model-*.safetensors"))
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(src), str(Path(tmp) / "dst")], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        report = {
            "checkpoint_bytes": sum(p.stat().st_size for p in shards),
            "num_shards": len(shards),
            "largest_shard_bytes": max(p.stat().st_size for p in shards),
            "largest_tensor_bytes": largest_tensor,
            **measured,
            "conversion_peak_minus_baseline": measured["peak_rss"] - measured["rss_before"],
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
