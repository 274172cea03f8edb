"""Fit the tokenizers of a MedDiff model on a canonical dataset: the VQ image tokenizer (and the text tokenizer).

`fit_tokenizers` is what `hf-meddiff tokenizer` and the demo's tokenizer stage run; it writes

```
image_tokenizer/          the fitted `MedDiffImageTokenizer`
text_tokenizer/           the text tokenizer (with `text=True`)
reconstructions.png       held-out originals above their VQ reconstructions
tokenizer_report.json     train / held-out reconstruction error and codebook health
```

Torch, diffusers and matplotlib load when a function runs, not on import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_TEXT_VOCAB_SIZE = 1024  # the `embedded` MedDiff preset's text vocabulary

__all__ = ["DEFAULT_TEXT_VOCAB_SIZE", "fit_tokenizers", "save_reconstruction_grid"]


def fit_tokenizers(
    ds,
    output_dir: str | os.PathLike,
    *,
    image_size: int | None = None,
    codebook_size: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    preset: str = "embedded",
    text: bool = False,
    text_vocab_size: int | None = None,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the VQ image tokenizer on `ds`'s images (and the text tokenizer when `text=True`).

    Writes `<output_dir>/image_tokenizer/`, `<output_dir>/text_tokenizer/` (with `text`),
    `<output_dir>/reconstructions.png` (held-out originals above their reconstructions) and
    `<output_dir>/tokenizer_report.json`. The reconstruction error is measured on a held-out
    `holdout_fraction` of the images (at least one image; the training images when there are fewer than 10).

    Returns:
        the report dict: `{"image_tokenizer": {"train": stats, "heldout": stats, "path": …}, "text_tokenizer": …}`.
    """
    from .image_tokenizer import evaluate_image_tokenizer, images_to_tensor, train_image_tokenizer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(ds)
    num_heldout = int(n * holdout_fraction) if n >= 10 else 0
    train_ds = ds.select(range(n - num_heldout)) if num_heldout else ds
    heldout_ds = ds.select(range(n - num_heldout, n)) if num_heldout else ds

    kwargs: dict[str, Any] = {"preset": preset, "seed": seed, "progress": progress}
    if image_size is not None:
        kwargs["image_size"] = image_size
    if max_steps is not None:
        kwargs["steps"] = max_steps
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if learning_rate is not None:
        kwargs["lr"] = learning_rate
    if codebook_size is not None:
        from .image_tokenizer import MedDiffImageTokenizer

        overrides = {"num_vq_embeddings": codebook_size}
        if image_size is not None:
            overrides["image_size"] = image_size
        kwargs["tokenizer"] = MedDiffImageTokenizer.from_config_preset(preset, **overrides)
        kwargs.pop("image_size", None)
    image_tokenizer, train_stats = train_image_tokenizer(train_ds, **kwargs)
    heldout_pixels = images_to_tensor(heldout_ds, image_tokenizer.image_size)
    heldout_stats = evaluate_image_tokenizer(image_tokenizer, heldout_pixels)
    image_tokenizer.save_pretrained(out / "image_tokenizer")
    save_reconstruction_grid(image_tokenizer, heldout_pixels[:8], out / "reconstructions.png")
    report: dict[str, Any] = {
        "image_tokenizer": {
            "path": str(out / "image_tokenizer"),
            "codebook_size": int(image_tokenizer.codebook_size),
            "image_size": int(image_tokenizer.image_size),
            "train": _floats(train_stats),
            "heldout": {**_floats(heldout_stats), "num_images": int(heldout_pixels.shape[0])},
        }
    }
    if text:
        from .text_tokenizer import train_text_tokenizer

        tokenizer = train_text_tokenizer(ds, vocab_size=text_vocab_size or DEFAULT_TEXT_VOCAB_SIZE)
        tokenizer.save_pretrained(str(out / "text_tokenizer"))
        report["text_tokenizer"] = {"path": str(out / "text_tokenizer"), "vocab_size": len(tokenizer)}
    (out / "tokenizer_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def _floats(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in stats.items()}


def save_reconstruction_grid(image_tokenizer, pixel_values, path: str | os.PathLike) -> Path:
    """Save originals (top row) above their VQ reconstructions (bottom row); `pixel_values` [N, 3, S, S]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    with torch.no_grad():
        recon = image_tokenizer.decode(image_tokenizer.encode(pixel_values.to(image_tokenizer.device))).cpu()
    n = pixel_values.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        for row, batch in enumerate((pixel_values, recon)):
            img = ((batch[i].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            axes[row][i].imshow(img)
            axes[row][i].axis("off")
    axes[0][0].set_title("original", fontsize=8, loc="left")
    axes[1][0].set_title("reconstruction", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
