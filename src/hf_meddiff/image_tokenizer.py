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
    "VQ_PRESETS",
    "MedDiffImageTokenizer",
    "images_to_tensor",
    "train_image_tokenizer",
    "evaluate_image_tokenizer",
]


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
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 2e-3,
    beta: float = 0.25,
    dead_code_reset_every: int = 20,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> tuple[MedDiffImageTokenizer, dict[str, float]]:
    """Fit a VQ image tokenizer to `images`.

    Loss: reconstruction MSE + codebook loss `||sg(z) - e||^2` + `beta` * commitment `||z - sg(e)||^2`
    (straight-through gradient). The codebook starts from encoder outputs and codes that went unused for
    `dead_code_reset_every` steps are re-seeded from random encoder outputs of the current batch (until the
    last fifth of training), which keeps most of the codebook alive.

    Args:
        images: list of PIL images / arrays / tensors / DICOM or NIfTI paths, a `datasets.Dataset` with an
            `image` column, or a float tensor [N, 3, S, S] in [-1, 1].
        preset: `"embedded"` (64 px, 8x8 tokens, 256 codes) or `"tiny"` (32 px, 4x4 tokens, 64 codes).
        vq_config: a full `diffusers.VQModel` config instead of a preset (with `image_size`).
        tokenizer: continue training an existing tokenizer instead.
        steps, batch_size, lr, seed: optimisation settings (Adam, cosine decay, 5% warm-up).

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
    if device is not None:
        tokenizer.to(device)
    data = images_to_tensor(images, tokenizer.image_size)
    num_images = data.shape[0]
    batch_size = min(batch_size, num_images)

    codebook = tokenizer.vq_model.quantize.embedding.weight
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=lr, betas=(0.9, 0.99))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * 0.95 + 0.05

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(seed)
    usage = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    tokenizer.train()

    def next_batch() -> torch.Tensor:
        index = torch.randint(0, num_images, (batch_size,), generator=generator)
        return data[index].to(tokenizer.device)

    with torch.no_grad():  # data-dependent codebook initialisation
        latents = tokenizer.encode_latents(next_batch())
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        pick = torch.randint(0, flat.shape[0], (tokenizer.codebook_size,), generator=generator)
        codebook.data.copy_(flat[pick.to(flat.device)] + 0.01 * torch.randn_like(codebook))

    bar = tqdm(range(steps), desc="image tokenizer", disable=not progress)
    for step in bar:
        batch = next_batch()
        latents = tokenizer.encode_latents(batch)
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        with torch.no_grad():
            ids = torch.cdist(flat, codebook).argmin(dim=1)
        quantized = codebook[ids]
        codebook_loss = F.mse_loss(quantized, flat.detach())
        commit_loss = F.mse_loss(flat, quantized.detach())
        straight = flat + (quantized - flat).detach()
        z_q = straight.reshape(latents.shape[0], latents.shape[2], latents.shape[3], -1).permute(0, 3, 1, 2)
        recon = tokenizer.decode_latents(z_q)
        recon_loss = F.mse_loss(recon, batch)
        loss = recon_loss + codebook_loss + beta * commit_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        usage += torch.bincount(ids.cpu(), minlength=tokenizer.codebook_size)

        if dead_code_reset_every and (step + 1) % dead_code_reset_every == 0:
            if step < int(0.8 * steps):
                dead = (usage == 0).nonzero().flatten()
                if len(dead) > 0:
                    with torch.no_grad():
                        rows = [rng.randrange(flat.shape[0]) for _ in range(len(dead))]
                        codebook.data[dead.to(codebook.device)] = flat.detach()[rows] + 0.01 * torch.randn(
                            len(dead), flat.shape[1], device=flat.device
                        )
            usage.zero_()
        if progress and step % 5 == 0:
            bar.set_postfix(recon=f"{recon_loss.item():.4f}", vq=f"{codebook_loss.item():.4f}")
    tokenizer.eval()
    eval_index = torch.from_numpy(np.random.default_rng(seed).permutation(num_images)[:1024])
    stats = evaluate_image_tokenizer(tokenizer, data[eval_index])
    stats.update(num_images=float(num_images), steps=float(steps))
    return tokenizer, stats
