"""Image tokenizer: `MedDiffImageTokenizer` (a diffusers VQModel as an image <-> token codec) and a
CPU-friendly training routine that fits one to a set of images.

>>> from hf_meddiff.image_tokenizer import MedDiffImageTokenizer, train_image_tokenizer
>>> import numpy as np
>>> images = [np.full((32, 32), v, dtype=np.float32) for v in np.linspace(0, 1, 8)]
>>> tok, stats = train_image_tokenizer(images, preset="tiny", steps=2, batch_size=4, progress=False)
>>> sorted(stats)
['codebook_perplexity', 'codebook_usage', 'mse', 'num_images', 'psnr', 'steps']
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import VQModel
from tqdm.auto import tqdm

from .models.meddiff.image_processing_meddiff import images_to_tensor
from .models.meddiff.image_tokenizer_meddiff import VQ_PRESETS, MedDiffImageTokenizer

__all__ = [
    "TRAINING_DEFAULTS",
    "VQ_PRESETS",
    "MedDiffImageTokenizer",
    "images_to_tensor",
    "train_image_tokenizer",
    "evaluate_image_tokenizer",
]

# Steps, batch size and learning rate `train_image_tokenizer` uses for a preset when they are not given
# (benchmarks/bench_image_tokenizer.py, 64 px MedPhantom, embedded: 150 -> 300 steps of 16 images raised held-out
# PSNR from 16.3 to 18.2 dB, embedded16 from 18.4 to 20.2 dB; at 150 steps lr 2e-3 beat 5e-3 by 0.8 dB).
TRAINING_DEFAULTS: dict[str, dict[str, float]] = {
    "embedded": {"steps": 300, "batch_size": 16, "lr": 2e-3},
    "embedded16": {"steps": 300, "batch_size": 16, "lr": 2e-3},
    "tiny": {"steps": 300, "batch_size": 32, "lr": 2e-3},
}


@torch.no_grad()
def evaluate_image_tokenizer(
    tokenizer: MedDiffImageTokenizer, pixel_values: torch.Tensor, batch_size: int = 128
) -> dict[str, float]:
    """Reconstruction quality and codebook health of `tokenizer` on `pixel_values` [N, 3, S, S] in [-1, 1].

    Returns `mse` (on the [0, 1] pixel scale), `psnr` (dB, peak 1), `codebook_usage` (fraction of codes
    used at least once) and `codebook_perplexity` (exp of the code-distribution entropy).
    """
    was_training = tokenizer.training
    tokenizer.eval()
    squared_error, count = 0.0, 0
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    for i in range(0, pixel_values.shape[0], batch_size):
        batch = pixel_values[i : i + batch_size].to(tokenizer.device)
        ids = tokenizer.encode(batch)
        recon = tokenizer.decode(ids)
        squared_error += float(((recon - batch) / 2).pow(2).sum())
        count += batch.numel()
        counts += torch.bincount(ids.flatten().cpu(), minlength=tokenizer.codebook_size)
    tokenizer.train(was_training)
    mse = squared_error / max(count, 1)
    probs = counts.float() / counts.sum().clamp(min=1)
    entropy = float(-(probs[probs > 0] * probs[probs > 0].log()).sum())
    return {
        "mse": mse,
        "psnr": 10.0 * math.log10(1.0 / max(mse, 1e-12)),
        "codebook_usage": float((counts > 0).float().mean()),
        "codebook_perplexity": math.exp(entropy),
    }


def train_image_tokenizer(
    images: Any,
    *,
    preset: str | None = "embedded",
    vq_config: dict[str, Any] | None = None,
    image_size: int | None = None,
    tokenizer: MedDiffImageTokenizer | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    beta: float = 0.25,
    codebook_update: str = "ema",
    ema_decay: float = 0.9,
    kmeans_init: bool = True,
    dead_code_reset_every: int = 20,
    recon_loss: str = "mse",
    edge_weight: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> tuple[MedDiffImageTokenizer, dict[str, float]]:
    """Fit a VQ image tokenizer to `images`.

    Loss: reconstruction error (`recon_loss`: `"mse"` or `"l1"`, plus `edge_weight` times the L1 error of the
    horizontal and vertical pixel differences) + `beta` * commitment `||z - sg(e)||^2`, with a straight-through
    gradient. The codebook follows the encoder by exponential moving averages of the latents assigned to each
    code (`codebook_update="ema"`, decay `ema_decay`) or by the codebook loss `||sg(z) - e||^2` (`"loss"`).
    It starts from k-means centres of encoder outputs (`kmeans_init`; else random encoder outputs), and codes
    unused for `dead_code_reset_every` steps are re-seeded from random encoder outputs of the current batch
    (until the last fifth of training), which keeps the codebook in use.

    Args:
        images: list of PIL images / arrays / tensors / DICOM or NIfTI paths, a `datasets.Dataset` with an
            `image` column, or a float tensor [N, 3, S, S] in [-1, 1].
        preset: a key of `VQ_PRESETS`: `"embedded"` (64 px, 8x8 tokens), `"embedded16"` (64 px, 16x16 tokens)
            or `"tiny"` (32 px, 4x4 tokens).
        vq_config: a full `diffusers.VQModel` config instead of a preset (with `image_size`).
        tokenizer: continue training an existing tokenizer instead.
        steps, batch_size, lr: optimisation settings (Adam, cosine decay, 5% warm-up); `None` takes the
            preset's measured defaults (`TRAINING_DEFAULTS`, `"embedded"`'s for a custom model).
        seed: seeds the initialisation, the batches and the code restarts (same seed, same tokenizer).

    Returns:
        `(tokenizer, stats)` with `stats` = {`mse`, `psnr`, `codebook_usage`, `codebook_perplexity`,
        `num_images`, `steps`} measured on (up to 1024 of) the training images after training.

    Example:

    ```python
    >>> from hf_meddiff.data import make_phantom_dataset
    >>> cases = make_phantom_dataset(64, seed=0, image_size=64)
    >>> tok, stats = train_image_tokenizer(cases, preset="embedded", steps=3, batch_size=8, progress=False)
    >>> tok.grid_size, tok.codebook_size, 0.0 <= stats["codebook_usage"] <= 1.0
    (8, 256, True)

    ```
    """
    if codebook_update not in ("ema", "loss"):
        raise ValueError(f"codebook_update must be 'ema' or 'loss', got {codebook_update!r}.")
    if recon_loss not in ("mse", "l1"):
        raise ValueError(f"recon_loss must be 'mse' or 'l1', got {recon_loss!r}.")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}.")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if tokenizer is None:
        if vq_config is not None:
            size = int(image_size or vq_config.get("sample_size", 64))
            tokenizer = MedDiffImageTokenizer(VQModel(**{**vq_config, "sample_size": size}), image_size=size)
        elif preset is not None:
            overrides = {"image_size": image_size} if image_size is not None else {}
            tokenizer = MedDiffImageTokenizer.from_config_preset(preset, **overrides)
        else:
            raise ValueError("train_image_tokenizer needs one of `preset`, `vq_config` or `tokenizer`.")
    defaults = TRAINING_DEFAULTS.get(preset or "embedded", TRAINING_DEFAULTS["embedded"])
    steps = int(defaults["steps"] if steps is None else steps)
    batch_size = int(defaults["batch_size"] if batch_size is None else batch_size)
    lr = float(defaults["lr"] if lr is None else lr)
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps, batch_size and lr must be positive, got {steps}, {batch_size}, {lr}.")
    if device is not None:
        tokenizer.to(device)
    data = images_to_tensor(images, tokenizer.image_size)
    num_images = data.shape[0]
    batch_size = min(batch_size, num_images)

    codebook = tokenizer.vq_model.quantize.embedding.weight
    use_ema = codebook_update == "ema"
    params = [p for p in tokenizer.parameters() if not (use_ema and p is codebook)]
    optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * 0.95 + 0.05

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(seed)
    num_codes = tokenizer.codebook_size
    usage = torch.zeros(num_codes, dtype=torch.long)
    tokenizer.train()

    def next_batch(size: int = batch_size) -> torch.Tensor:
        index = torch.randint(0, num_images, (size,), generator=generator)
        return data[index].to(tokenizer.device)

    def flat_latents(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = tokenizer.encode_latents(batch)
        return latents, latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])

    with torch.no_grad():  # data-dependent codebook initialisation
        per_image = tokenizer.num_image_tokens
        sample = flat_latents(next_batch(min(num_images, max(batch_size, -(-4 * num_codes // per_image)))))[1]
        pick = torch.randint(0, sample.shape[0], (num_codes,), generator=generator).to(sample.device)
        centres = sample[pick] + 0.01 * torch.randn(num_codes, sample.shape[1], device=sample.device)
        if kmeans_init:
            centres = _kmeans(sample, centres, iterations=10)
        codebook.data.copy_(centres)
        ema_count = torch.ones(num_codes, device=codebook.device)
        ema_sum = codebook.detach().clone()

    bar = tqdm(range(steps), desc="image tokenizer", disable=not progress)
    for step in bar:
        batch = next_batch()
        latents, flat = flat_latents(batch)
        with torch.no_grad():
            ids = torch.cdist(flat, codebook).argmin(dim=1)
        quantized = codebook[ids]
        commit_loss = F.mse_loss(flat, quantized.detach())
        loss = beta * commit_loss
        if not use_ema:
            codebook_loss = F.mse_loss(quantized, flat.detach())
            loss = loss + codebook_loss
        straight = flat + (quantized - flat).detach()
        z_q = straight.reshape(latents.shape[0], latents.shape[2], latents.shape[3], -1).permute(0, 3, 1, 2)
        recon = tokenizer.decode_latents(z_q)
        error = recon - batch
        pixel_loss = error.pow(2).mean() if recon_loss == "mse" else error.abs().mean()
        loss = loss + pixel_loss
        if edge_weight:
            edge = (error[..., 1:, :] - error[..., :-1, :]).abs().mean()
            loss = loss + edge_weight * (edge + (error[..., 1:] - error[..., :-1]).abs().mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        counts = torch.bincount(ids, minlength=num_codes)
        usage += counts.cpu()
        if use_ema:
            with torch.no_grad():
                sums = torch.zeros_like(ema_sum).index_add_(0, ids, flat.detach())
                ema_count.mul_(ema_decay).add_(counts.float(), alpha=1 - ema_decay)
                ema_sum.mul_(ema_decay).add_(sums, alpha=1 - ema_decay)
                total = ema_count.sum()
                smoothed = (ema_count + 1e-5) / (total + num_codes * 1e-5) * total
                codebook.data.copy_(ema_sum / smoothed.unsqueeze(1))

        if dead_code_reset_every and (step + 1) % dead_code_reset_every == 0:
            if step < int(0.8 * steps):
                dead = (usage == 0).nonzero().flatten()
                if len(dead) > 0:
                    with torch.no_grad():
                        rows = [rng.randrange(flat.shape[0]) for _ in range(len(dead))]
                        fresh = flat.detach()[rows] + 0.01 * torch.randn(
                            len(dead), flat.shape[1], device=flat.device
                        )
                        dead = dead.to(codebook.device)
                        codebook.data[dead] = fresh
                        ema_sum[dead] = fresh
                        ema_count[dead] = 1.0
            usage.zero_()
        if progress and step % 5 == 0:
            bar.set_postfix(recon=f"{pixel_loss.item():.4f}", commit=f"{commit_loss.item():.4f}")
    tokenizer.eval()
    eval_index = torch.from_numpy(np.random.default_rng(seed).permutation(num_images)[:1024])
    stats = evaluate_image_tokenizer(tokenizer, data[eval_index])
    stats.update(num_images=float(num_images), steps=float(steps))
    return tokenizer, stats


def _kmeans(points: torch.Tensor, centres: torch.Tensor, iterations: int) -> torch.Tensor:
    """Lloyd iterations from `centres` [K, D] over `points` [N, D]; an empty cluster keeps its centre."""
    for _ in range(iterations):
        ids = torch.cdist(points, centres).argmin(dim=1)
        counts = torch.bincount(ids, minlength=centres.shape[0]).float()
        sums = torch.zeros_like(centres).index_add_(0, ids, points)
        filled = counts > 0
        centres = torch.where(filled.unsqueeze(1), sums / counts.clamp(min=1).unsqueeze(1), centres)
    return centres
