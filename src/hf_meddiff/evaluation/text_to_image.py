"""Report-to-image: images generated from reference reports, shown under the reference images, and scored by the image
judges (`hf_meddiff.metrics.judges`, trained on real images only): how often they recognise the report's modality and
finding in the generated image, next to their accuracy on the real images of the same rows and on those images passed
through the model's VQ tokenizer (encode, decode): generation into that tokenizer cannot show what its reconstructions
lose, so the reconstructions are the ceiling of the generated images' scores. With `image_metrics`,
every report row is generated and FID / KID are computed in the judges' feature space beside the real-vs-real floor
(two halves of the held-out real images), and on the model's own VQ features, with pixel MSE to the reference."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from .config import EvaluationConfig
from .inference import batched_images, image_generation_overrides
from .plots import plot_image_grid
from .results import EvaluationResults

__all__ = ["evaluate_text_to_image", "judge_image_metrics", "reconstruct_images", "vq_image_metrics"]


def evaluate_text_to_image(
    pipe, processor, report_rows, config: EvaluationConfig, results: EvaluationResults, out
) -> None:
    """Section `image` and the `t2i_grid.png` of reference images (top) above those generated from their reports
    (bottom); every report row is generated with `config.image_metrics`, else the first `config.grid_size`."""
    import torch

    torch.manual_seed(config.seed)
    count = len(report_rows) if config.image_metrics else min(config.grid_size, len(report_rows))
    prompts = list(report_rows["report"][:count])
    generated = batched_images(
        pipe,
        prompts,
        batch_size=config.batch_size,
        desc="Report-to-image",
        progress=config.progress,
        **image_generation_overrides(config.image_steps),
    )
    n = min(config.grid_size, count)
    real = list(report_rows["image"][:n])
    titles = [textwrap.shorten(p, 70, placeholder="…") for p in prompts[:n]]
    results.files["t2i_grid"] = str(
        plot_image_grid(
            real + list(generated[:n]),
            out / "t2i_grid.png",
            titles=[textwrap.fill(t, 28) for t in titles] + ["generated"] * n,
            columns=n,
            suptitle="report-to-image: reference images (top) and images generated from their reports (bottom)",
        )
    )
    section: dict[str, Any] = {"n": count}
    real_images = list(report_rows["image"][:count])
    tokenizer = getattr(processor, "image_tokenizer", None)
    section.update(
        judge_image_metrics(
            pipe, report_rows.select(range(count)), real_images, generated, config, out, tokenizer
        )
    )
    if config.image_metrics and tokenizer is not None:
        section.update(vq_image_metrics(processor, real_images, generated))
    results.summary["image"] = section


def reconstruct_images(tokenizer, images, batch_size: int = 64):
    """`images` passed through the VQ `tokenizer` (encode to codes, decode), as a `[B, 3, S, S]` tensor in [0, 1]
    at the tokenizer's image size: what the best generator into this tokenizer could show of each image."""
    import torch

    from ..image_tokenizer import images_to_tensor

    pixels = images_to_tensor(list(images), int(tokenizer.image_size))
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start : start + batch_size].to(tokenizer.device, tokenizer.dtype)
            out.append(tokenizer.decode(tokenizer.encode(chunk)).cpu())
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


def judge_image_metrics(
    pipe, rows, real_images, generated_images, config: EvaluationConfig, out, image_tokenizer=None
) -> dict[str, Any]:
    """Judge scores of generated images (row i generated from row i's report): `modality_recognised`,
    `finding_recognised` (fractions) and the judges' accuracy on the rows' real images; with `image_tokenizer`
    (the model's VQ tokenizer; the real images go through it, `reconstruct_images`) also
    `modality_recognised_reconstructed` / `finding_recognised_reconstructed`, the tokenizer's ceiling; with `image_metrics`,
    `fid_judge` / `kid_judge` against the real images and their real-vs-real floors. A `judges` note says where the
    judges came from, or why they were skipped."""
    from ..metrics.image_generation import domain_fid_kid
    from ..metrics.judges import judge_images, recognition_scores
    from .judges import finding_labels, judges_for_evaluation

    model_dir = getattr(getattr(pipe, "model", None), "name_or_path", None) or config.model
    judges, note = judges_for_evaluation(
        config.judges,
        config.judges_data,
        model_dir if model_dir and Path(str(model_dir)).is_dir() else None,
        out,
        train=config.train_judges,
        seed=config.seed,
        progress=config.progress,
    )
    scores: dict[str, Any] = {"judges": note}
    if judges is None:
        return scores
    scores["judges_heldout_accuracy"] = {
        task: judges.info[task]["heldout_accuracy"]
        for task in ("modality", "finding")
        if isinstance(judges.info.get(task), dict) and "heldout_accuracy" in judges.info[task]
    }
    size = max(judge.config.image_size for judge in (judges.modality, judges.finding) if judge is not None)
    generated, real = judge_images(list(generated_images), size), judge_images(list(real_images), size)
    scores.update(recognition_scores(judges, generated, list(rows["modality"]), finding_labels(rows), real))
    if image_tokenizer is not None:
        reconstructed = judge_images(reconstruct_images(image_tokenizer, real_images), size)
        ceiling = recognition_scores(judges, reconstructed, list(rows["modality"]), finding_labels(rows))
        scores.update({f"{key}_reconstructed": value for key, value in ceiling.items()})
    if config.image_metrics and len(real) >= 4:
        domain = domain_fid_kid(real, generated, judges.feature_extractor(), seed=config.seed)
        scores.update(
            fid_judge=domain["fid"],
            fid_judge_floor=domain["fid_floor"],
            kid_judge=domain["kid_mean"],
            kid_judge_floor=domain["kid_floor_mean"],
        )
    return scores


def vq_image_metrics(processor, real_images, generated_images) -> dict[str, float]:
    """FID / KID between reference and generated images with the model's own VQ encoder as feature extractor
    (pooled pre-quantisation latents: offline, no Inception weights needed), plus pixel MSE to the reference."""
    import numpy as np
    import torch

    from ..image_tokenizer import images_to_tensor
    from ..metrics import image_generation_scores

    tokenizer = processor.image_tokenizer
    size = int(tokenizer.image_size)
    encoder = tokenizer.vq_model

    class _VQFeatures(torch.nn.Module):
        def forward(self, x):  # x: [B, C, H, W] in [0, 1]
            x = torch.nn.functional.interpolate(
                x[:, :3] if x.shape[1] >= 3 else x.repeat(1, 3, 1, 1), size=size
            )
            latents = encoder.encode(x * 2 - 1).latents
            return torch.cat([latents.mean(dim=(2, 3)), latents.std(dim=(2, 3))], dim=1)

    real = (images_to_tensor(real_images, size) + 1) / 2
    fake = (images_to_tensor(generated_images, size) + 1) / 2
    with torch.no_grad():
        scores = image_generation_scores(real, fake, feature_extractor=_VQFeatures().eval())
    result = {f"{k}_vq": float(v) for k, v in scores.items() if isinstance(v, (int, float))}
    result["pixel_mse"] = float(np.mean((real.numpy() - fake.numpy()) ** 2))
    return result
