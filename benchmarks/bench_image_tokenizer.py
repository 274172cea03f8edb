"""Benchmark: VQ image tokenizers on MedPhantom: held-out reconstruction per CPU-second of fitting.

Each configuration is fitted with `train_image_tokenizer` on the train split of
`make_phantom_dataset(num_cases, seed=0, image_size=64)` and measured on its test split (held out):

- `heldout_psnr`: PSNR (dB, peak 1 on the [0, 1] scale) of the reconstructions against the held-out images, from the
  mean squared error over all held-out pixels (what `fit_tokenizers` reports), and per modality;
- `clean_psnr` (with `--noise-floor`): the same reconstructions against the held-out images rendered without their
  pixel noise (MedPhantom's Gaussian, Rician and speckle noise), i.e. how well the structure is kept;
- `codebook_usage` (fraction of codes used on the held-out images) and `codebook_perplexity`;
- `fit_cpu_s` (`time.process_time` of the fitting process, all its threads) and `fit_wall_s`.

With `--noise-floor` the script also prints the ceiling: the noise-free images scored against the noisy ones. A
tokenizer cannot store per-pixel noise in 64 or 256 codes, so no deterministic reconstruction is expected to beat it.
(The noise-free images are drawn by the same renderer with its per-pixel noise draws replaced by their means; the
random stream is consumed as usual, so geometry and findings are identical.)

On a shared machine the wall time depends on the other jobs; the CPU time much less so (threads that wait for each
other still count, so `--threads 1` gives the cleanest CPU figure).

    nice -n 10 python benchmarks/bench_image_tokenizer.py --noise-floor --json bench_image_tokenizer.json --grids grids/
    nice -n 10 python benchmarks/bench_image_tokenizer.py --configs embedded embedded16 --steps 150 --batch-size 16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import numpy as np
import torch

# name -> preset, VQModel overrides, train_image_tokenizer arguments (missing ones: the preset's defaults)
CONFIGS: dict[str, dict[str, Any]] = {
    # the tokenizer the demo fitted before this benchmark existed: codebook loss, random-sample init, 150 x 16
    "embedded-v1": {
        "preset": "embedded",
        "vq": {"block_out_channels": [16, 32, 32, 64], "latent_channels": 16, "num_vq_embeddings": 256},
        "train": {
            "steps": 150,
            "batch_size": 16,
            "lr": 2e-3,
            "codebook_update": "loss",
            "kmeans_init": False,
        },
    },
    "embedded": {"preset": "embedded", "vq": {}, "train": {}},
    # 4-dimensional codes instead of 16 (the codebook lookup in a lower-dimensional space)
    "embedded-lat4": {"preset": "embedded", "vq": {"latent_channels": 4}, "train": {}},
    "embedded16": {"preset": "embedded16", "vq": {}, "train": {}},
}


def phantom_splits(num_cases: int, image_size: int, seed: int, noise_free: bool = False):
    """(train images, test images, test modalities) of a MedPhantom set as [-1, 1] tensors."""
    from hf_meddiff.data import make_phantom_dataset
    from hf_meddiff.image_tokenizer import images_to_tensor

    if noise_free:
        ds = _noise_free_phantom(num_cases, image_size, seed)
    else:
        ds = make_phantom_dataset(num_cases, seed=seed, image_size=image_size)
    split = np.asarray(ds["split"])
    train = images_to_tensor(ds.select(np.flatnonzero(split == "train")), image_size)
    test_ds = ds.select(np.flatnonzero(split == "test"))
    return train, images_to_tensor(test_ds, image_size), np.asarray(test_ds["modality"])


class _MeanNoise:
    """A numpy Generator whose per-pixel noise draws (gamma speckle, image-sized normals) return their means."""

    def __init__(self, rng: np.random.Generator, size: int):
        self._rng, self._size = rng, size

    def __getattr__(self, name: str):
        return getattr(self._rng, name)

    def gamma(self, shape, scale=1.0, size=None):
        draw = self._rng.gamma(shape, scale, size)
        return np.full_like(draw, shape * scale)

    def standard_normal(self, size=None, *args, **kwargs):
        draw = self._rng.standard_normal(size, *args, **kwargs)
        image_sized = size is not None and len(size) >= 3 and size[1] == size[2] == self._size
        return np.zeros_like(draw) if image_sized else draw


def _noise_free_phantom(num_cases: int, image_size: int, seed: int):
    import hf_meddiff.data.phantom.dataset as phantom_dataset
    from hf_meddiff.data import make_phantom_dataset

    render = phantom_dataset.render_phantom_images
    phantom_dataset.render_phantom_images = lambda cases, spec, rng, size: render(
        cases, spec, _MeanNoise(rng, size), size
    )
    try:
        return make_phantom_dataset(num_cases, seed=seed, image_size=image_size)
    finally:
        phantom_dataset.render_phantom_images = render


def _psnr(mse: float) -> float:
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def measure(
    tokenizer, test: torch.Tensor, modalities: np.ndarray, clean: torch.Tensor | None
) -> dict[str, Any]:
    from hf_meddiff.image_tokenizer import evaluate_image_tokenizer

    stats = evaluate_image_tokenizer(tokenizer, test)
    recon = torch.cat(
        [tokenizer.decode(tokenizer.encode(test[i : i + 128])) for i in range(0, len(test), 128)]
    )
    per_image = ((recon - test) / 2).pow(2).flatten(1).mean(1).numpy()
    out = {
        "heldout_psnr": round(stats["psnr"], 2),
        "codebook_usage": round(stats["codebook_usage"], 3),
        "codebook_perplexity": round(stats["codebook_perplexity"], 1),
        "psnr_per_modality": {
            str(m): round(_psnr(float(per_image[modalities == m].mean())), 1) for m in sorted(set(modalities))
        },
    }
    if clean is not None:
        out["clean_psnr"] = round(_psnr(float(((recon - clean) / 2).pow(2).mean())), 2)
    return out


def run_config(spec: dict[str, Any], train: torch.Tensor, seed: int, overrides: dict[str, int]) -> tuple:
    from hf_meddiff.image_tokenizer import MedDiffImageTokenizer, train_image_tokenizer

    kwargs = {**spec["train"], **overrides}
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    tokenizer = MedDiffImageTokenizer.from_config_preset(spec["preset"], **spec["vq"])
    tokenizer, train_stats = train_image_tokenizer(
        train, preset=spec["preset"], tokenizer=tokenizer, seed=seed, progress=True, **kwargs
    )
    fit = {
        "fit_cpu_s": round(time.process_time() - start_cpu, 1),
        "fit_wall_s": round(time.perf_counter() - start_wall, 1),
    }
    return tokenizer, train_stats, fit


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--num-cases", type=int, default=3000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override every configuration's steps")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="override every configuration's batch size"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--noise-floor", action="store_true", help="also score against noise-free images")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument(
        "--grids", default=None, help="folder for <config>.png: held-out images above reconstructions"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from hf_meddiff.image_tokenizer import TRAINING_DEFAULTS

    train, test, modalities = phantom_splits(args.num_cases, args.image_size, args.seed)
    clean = None
    results: dict[str, Any] = {
        "data": {
            "num_cases": args.num_cases,
            "image_size": args.image_size,
            "train_images": len(train),
            "heldout_images": len(test),
        },
        "threads": torch.get_num_threads(),
        "configs": {},
    }
    if args.noise_floor:
        clean = phantom_splits(args.num_cases, args.image_size, args.seed, noise_free=True)[1]
        per_image = ((clean - test) / 2).pow(2).flatten(1).mean(1).numpy()
        results["noise_floor"] = {
            "heldout_psnr": round(_psnr(float(per_image.mean())), 2),
            "psnr_per_modality": {
                str(m): round(_psnr(float(per_image[modalities == m].mean())), 1)
                for m in sorted(set(modalities))
            },
        }
        print(f"noise-free held-out images vs the noisy ones (the ceiling): {results['noise_floor']}")

    header = f"{'config':<14}{'grid':>6}{'codes':>7}{'steps':>7}{'batch':>7}{'cpu s':>8}{'wall s':>8}"
    header += f"{'PSNR':>7}{'clean':>7}{'usage':>7}"
    rows = []
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None}
    for name in args.configs:
        spec = CONFIGS[name]
        tokenizer, train_stats, fit = run_config(spec, train, args.seed, overrides)
        defaults = TRAINING_DEFAULTS.get(spec["preset"], TRAINING_DEFAULTS["embedded"])
        settings = {**defaults, **spec["train"], **overrides}
        entry = {
            "preset": spec["preset"],
            "vq_overrides": spec["vq"],
            "train": settings,
            "grid": tokenizer.grid_size,
            "codebook_size": tokenizer.codebook_size,
            **fit,
            **measure(tokenizer, test, modalities, clean),
            "train_psnr": round(train_stats["psnr"], 2),
        }
        results["configs"][name] = entry
        if args.grids:
            from hf_meddiff.evaluation import save_reconstruction_grid

            os.makedirs(args.grids, exist_ok=True)
            picks = [int(np.flatnonzero(modalities == m)[0]) for m in sorted(set(modalities))]
            save_reconstruction_grid(tokenizer, test[picks], os.path.join(args.grids, f"{name}.png"))
        rows.append(
            f"{name:<14}{entry['grid']:>6}{entry['codebook_size']:>7}{int(settings['steps']):>7}"
            f"{int(settings['batch_size']):>7}{entry['fit_cpu_s']:>8.0f}{entry['fit_wall_s']:>8.0f}"
            f"{entry['heldout_psnr']:>7.2f}{entry.get('clean_psnr', float('nan')):>7.2f}"
            f"{entry['codebook_usage']:>7.2f}"
        )
        print(f"{name}: {json.dumps(entry)}")
    print(header)
    print("\n".join(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
