"""Image-generation metrics: FID and KID (torchmetrics) with a pluggable feature extractor, and CLIP score with any
transformers CLIP model.

Feature extractors:

- any `torch.nn.Module` mapping a float image batch `[B, C, H, W]` in [0, 1] to features `[B, D]` (a domain encoder,
  a tiny test network, the vision tower of a medical CLIP, ...);
- `"inception"`: torchmetrics' Inception-v3 (the FID standard), built from weights the user already has, given as
  `inception_weights="/path/to/pt_inception-2015-12-05-6726825d.pth"`. Nothing is ever downloaded; without the weights
  (or without `torch-fidelity`) the call stops with instructions.

`domain_fid_kid` scores generated images against held-out real ones with a domain feature extractor (the judges'
features, `hf_meddiff.metrics.judges.JudgeFeatures`) and states the real-vs-real floor next to them: two halves of the
real set compared with each other, and each half of the generated set compared with the other half of the real set
(same sample sizes, so the floor and the score share their small-sample bias).

CLIP score is `100 * max(cos(image_embedding, text_embedding), 0)` averaged over pairs (as torchmetrics defines it),
computed with a `transformers` `CLIPModel` and its processor.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "clip_score",
    "domain_fid_kid",
    "extract_features",
    "frechet_distance",
    "image_generation_scores",
    "images_to_tensor",
    "kernel_distance",
]

INCEPTION_WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


def images_to_tensor(images, channels: int = 3) -> torch.Tensor:
    """PIL images / numpy arrays (HWC, uint8 or float in [0, 1]) / a tensor -> float tensor `[B, channels, H, W]` in
    [0, 1]. Grey-scale is repeated to `channels`; all images must share one size. Lists are decoded by the library's
    one converter (`hf_meddiff.models.meddiff.image_processing_meddiff.images_to_tensor`, no resizing); float
    values are checked, never rescaled, so a [-1, 1] or 0..255 float image is an error, not a silent mistake."""
    if isinstance(images, torch.Tensor):
        tensor = images
        if tensor.dtype == torch.uint8:
            tensor = tensor.float() / 255.0
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(1)
    else:
        if len(images) == 0:
            raise ValueError("Got an empty list of images.")
        from ..models.meddiff.image_processing_meddiff import images_to_tensor as decode

        for image in images:
            array = image if isinstance(image, np.ndarray) else None
            if array is not None and np.issubdtype(array.dtype, np.floating):
                _check_unit_range(torch.from_numpy(np.asarray(array, dtype=np.float32)))
        tensor = decode(list(images), None, value_range=(0.0, 1.0))
        if channels == 1:
            tensor = tensor[:, :1]
    tensor = tensor.float()
    _check_unit_range(tensor)
    if tensor.shape[1] == 1 and channels != 1:
        tensor = tensor.repeat(1, channels, 1, 1)
    return tensor.clamp(0.0, 1.0)


def _check_unit_range(tensor: torch.Tensor) -> None:
    if not torch.isfinite(tensor).all():
        raise ValueError("Images contain NaN or inf values.")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"Float images must lie in [0, 1], got values in [{low:.3f}, {high:.3f}]; for [-1, 1] images pass "
            "`(x + 1) / 2`, for 0..255 floats pass `x / 255` (or uint8)."
        )


class _UInt8ToFloat(nn.Module):
    """Adapter so a float-input module can sit behind torchmetrics' uint8 / float call convention."""

    def __init__(self, module: nn.Module, num_features: int):
        super().__init__()
        self.module = module
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        features = self.module(x)
        if not isinstance(features, torch.Tensor):
            pooled = getattr(features, "pooler_output", None)
            features = pooled if pooled is not None else features[0]
        return features.reshape(features.shape[0], -1).double()


def _inception(weights: str | None) -> nn.Module:
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as error:  # pragma: no cover
        raise ImportError("The Inception feature extractor needs `torchmetrics`.") from error
    if not _TORCH_FIDELITY_AVAILABLE:
        raise ImportError(
            "feature_extractor='inception' needs `torch-fidelity` (`pip install torch-fidelity`) and the Inception "
            f"weights file, downloaded once by you from {INCEPTION_WEIGHTS_URL} and passed as "
            "`inception_weights=path`. Or pass any torch.nn.Module as `feature_extractor`."
        )
    if weights is None or not os.path.isfile(weights):
        raise FileNotFoundError(
            f"Inception weights not found (inception_weights={weights!r}). hf-meddiff never downloads them: fetch "
            f"{INCEPTION_WEIGHTS_URL} yourself and pass `inception_weights='/path/to/file.pth'`, or pass any "
            "torch.nn.Module as `feature_extractor`."
        )
    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights
    )


@torch.no_grad()
def clip_score(
    images, texts: Sequence[str], clip_model: nn.Module, clip_processor, batch_size: int = 32
) -> tuple[float, list[float]]:
    """CLIP score of image/text pairs: `100 * max(cos, 0)` per pair; returns `(mean, per_pair)`.

    `clip_model` is a `transformers.CLIPModel` (or anything with `get_image_features` / `get_text_features`);
    `clip_processor` a `CLIPProcessor` (images as PIL / numpy / tensors in [0, 1]).
    """
    texts = list(texts)
    images = list(images) if not isinstance(images, torch.Tensor) else list(images.unbind(0))
    if len(images) != len(texts):
        raise ValueError(
            f"Got {len(images)} images but {len(texts)} texts; CLIP score needs one text per image."
        )
    device = next(clip_model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch_images = images[start : start + batch_size]
        if batch_images and isinstance(batch_images[0], torch.Tensor):
            batch_images = [
                (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy() for img in batch_images
            ]
        inputs = clip_processor(
            text=texts[start : start + batch_size],
            images=batch_images,
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        image_features = _features(
            clip_model.get_image_features(pixel_values=inputs["pixel_values"].to(device))
        )
        text_features = _features(
            clip_model.get_text_features(
                input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device)
            )
        )
        cosine = torch.nn.functional.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
        scores.extend((100.0 * cosine.clamp(min=0)).tolist())
    return sum(scores) / len(scores), scores


def _features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def image_generation_scores(
    real_images=None,
    generated_images=None,
    prompts: Sequence[str] | None = None,
    feature_extractor: nn.Module | str | None = None,
    inception_weights: str | None = None,
    clip_model: nn.Module | None = None,
    clip_processor=None,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    batch_size: int = 32,
) -> dict[str, float]:
    """FID / KID between real and generated images, and CLIP score of generated images against their prompts.

    Args:
        real_images / generated_images: lists of PIL images or arrays (HxW or HxWxC), or float tensors
            `[B, C, H, W]` in [0, 1]. Each set is one size.
        prompts: one text per generated image, for the CLIP score.
        feature_extractor: an `nn.Module` (float images in [0, 1] -> features `[B, D]`) or `"inception"` (needs
            `inception_weights`). FID/KID are computed only when it and both image sets are given.
        inception_weights: path of the torch-fidelity Inception weights you already have.
        clip_model / clip_processor: a transformers CLIP model and processor, for `clip_score`.
        kid_subset_size: KID subset size (defaults to min(1000, number of images)); `kid_subsets` subsets.

    Returns:
        `dict` with `fid`, `kid_mean`, `kid_std` and/or `clip_score`.

    Example:
    ```python
    >>> import torch
    >>> from hf_meddiff.metrics import image_generation_scores
    >>> encoder = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # 12 features
    >>> real, fake = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    >>> sorted(image_generation_scores(real, fake, feature_extractor=encoder))
    ['fid', 'kid_mean', 'kid_std']

    ```
    """
    scores: dict[str, float] = {}
    if feature_extractor is not None:
        if real_images is None or generated_images is None:
            raise ValueError("FID/KID need both `real_images` and `generated_images`.")
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        real, fake = images_to_tensor(real_images), images_to_tensor(generated_images)
        if len(real) < 2 or len(fake) < 2:
            raise ValueError(
                f"FID/KID need at least 2 images per set, got {len(real)} real and {len(fake)} generated."
            )
        if feature_extractor == "inception":
            module = _inception(inception_weights)
        elif isinstance(feature_extractor, nn.Module):
            was_training = feature_extractor.training
            feature_extractor.eval()
            num_features = _UInt8ToFloat(feature_extractor, 0)(real[:1].to(_device(feature_extractor))).shape[
                -1
            ]
            module = _UInt8ToFloat(feature_extractor, num_features)
        else:
            raise TypeError(
                f"feature_extractor must be a torch.nn.Module or 'inception', got {type(feature_extractor).__name__}."
            )
        device = _device(module)
        fid = FrechetInceptionDistance(feature=module, normalize=True).to(device)
        subset = kid_subset_size or min(1000, len(real), len(fake))
        kid = KernelInceptionDistance(
            feature=module, normalize=True, subset_size=subset, subsets=kid_subsets
        ).to(device)
        for images, is_real in ((real, True), (fake, False)):
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size].to(device)
                fid.update(batch, real=is_real)
                kid.update(batch, real=is_real)
        scores["fid"] = float(fid.compute())
        kid_mean, kid_std = kid.compute()
        scores["kid_mean"], scores["kid_std"] = float(kid_mean), float(kid_std)
        if isinstance(feature_extractor, nn.Module):
            feature_extractor.train(was_training)
    if clip_model is not None:
        if clip_processor is None or prompts is None or generated_images is None:
            raise ValueError(
                "CLIP score needs `clip_model`, `clip_processor`, `prompts` and `generated_images`."
            )
        scores["clip_score"], _ = clip_score(
            generated_images, prompts, clip_model, clip_processor, batch_size
        )
    if not scores:
        raise ValueError(
            "Nothing to compute: pass `feature_extractor` (FID/KID) and/or `clip_model` (CLIP score)."
        )
    return scores


def _device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def extract_features(images, feature_extractor: nn.Module, batch_size: int = 128) -> np.ndarray:
    """Features `[N, D]` (float64) of images (anything `images_to_tensor` takes) under `feature_extractor`, a module
    mapping `[B, 3, H, W]` in [0, 1] to `[B, D]`."""
    x = images_to_tensor(images)
    was_training = feature_extractor.training
    feature_extractor.eval()
    device = _device(feature_extractor)
    parts = [
        feature_extractor(x[i : i + batch_size].to(device))
        .reshape(min(batch_size, len(x) - i), -1)
        .double()
        .cpu()
        for i in range(0, len(x), batch_size)
    ]
    feature_extractor.train(was_training)
    return torch.cat(parts).numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets `[N, D]` and `[M, D]` (the FID formula:
    `|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`).

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(500, 4)), rng.normal(size=(500, 4))
    >>> frechet_distance(a, b) < 0.2 < frechet_distance(a, b + 1.0)
    True
    """
    from scipy import linalg

    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"The Fréchet distance needs at least 2 samples per set, got {len(a)} and {len(b)}.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # small sets give singular covariances; the square root is still fine
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        eps = 1e-6 * np.eye(len(cov_a))
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(value, 0.0)


def kernel_distance(
    features_a: np.ndarray, features_b: np.ndarray, subset_size: int = 100, subsets: int = 50, seed: int = 0
) -> tuple[float, float]:
    """Kernel distance (KID): unbiased MMD^2 with the cubic polynomial kernel `(x.y / D + 1)^3`, averaged over
    `subsets` random subsets of `min(subset_size, N, M)` samples; returns `(mean, std)`.

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    >>> abs(kernel_distance(a, b)[0]) < 0.05 < kernel_distance(a, b + 1.0)[0]
    True
    """
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"The kernel distance needs at least 2 samples per set, got {len(a)} and {len(b)}.")
    rng = np.random.default_rng(seed)
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = ((x @ x.T) / dim + 1) ** 3, ((y @ y.T) / dim + 1) ** 3, ((x @ y.T) / dim + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values.append(within - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def domain_fid_kid(
    real_images,
    generated_images,
    feature_extractor: nn.Module,
    *,
    seed: int = 0,
    kid_subset_size: int = 100,
    kid_subsets: int = 50,
    batch_size: int = 128,
) -> dict[str, float]:
    """FID / KID of generated images against held-out real ones in a domain feature space, beside the real-vs-real
    floor.

    The real set is split at random into halves A and B (the same split is applied to the generated set, so when
    generated image i comes from the report of real image i, each generated half is compared with the real half
    whose reports it did not see). `fid_floor` = FID(real A, real B); `fid` = the mean of FID(generated A, real B)
    and FID(generated B, real A); KID likewise. Both use half-size sets, so they are directly comparable: the floor
    is what a perfect generator would score with this many images.

    Args:
        real_images / generated_images: anything `images_to_tensor` takes (at least 4 each), in [0, 1].
        feature_extractor: `[B, 3, H, W]` in [0, 1] -> `[B, D]`, e.g. `ImageJudges.feature_extractor()`.

    Returns:
        `fid`, `fid_floor`, `kid_mean`, `kid_std`, `kid_floor_mean`, `kid_floor_std`, `n_real`, `n_generated`.

    Example:
    ```python
    >>> import torch
    >>> encoder = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # 12 features
    >>> real, noise = torch.rand(40, 3, 16, 16) * 0.5, torch.rand(40, 3, 16, 16)
    >>> scores = domain_fid_kid(real, noise, encoder)
    >>> scores["fid_floor"] < scores["fid"]
    True

    ```
    """
    real = extract_features(real_images, feature_extractor, batch_size)
    fake = extract_features(generated_images, feature_extractor, batch_size)
    if len(real) < 4 or len(fake) < 4:
        raise ValueError(
            f"domain_fid_kid needs at least 4 real and 4 generated images (two halves of 2), got {len(real)} real "
            f"and {len(fake)} generated."
        )
    order = np.random.default_rng(seed).permutation(len(real))
    real_a, real_b = real[order[: len(real) // 2]], real[order[len(real) // 2 :]]
    if len(fake) == len(real):
        fake_a, fake_b = fake[order[: len(fake) // 2]], fake[order[len(fake) // 2 :]]
    else:
        fake_order = np.random.default_rng(seed + 1).permutation(len(fake))
        fake_a, fake_b = fake[fake_order[: len(fake) // 2]], fake[fake_order[len(fake) // 2 :]]

    def kid(x, y):
        return kernel_distance(x, y, kid_subset_size, kid_subsets, seed)

    kid_ab, kid_ba, kid_floor = kid(fake_a, real_b), kid(fake_b, real_a), kid(real_a, real_b)
    return {
        "fid": (frechet_distance(fake_a, real_b) + frechet_distance(fake_b, real_a)) / 2,
        "fid_floor": frechet_distance(real_a, real_b),
        "kid_mean": (kid_ab[0] + kid_ba[0]) / 2,
        "kid_std": (kid_ab[1] + kid_ba[1]) / 2,
        "kid_floor_mean": kid_floor[0],
        "kid_floor_std": kid_floor[1],
        "n_real": len(real),
        "n_generated": len(fake),
    }
