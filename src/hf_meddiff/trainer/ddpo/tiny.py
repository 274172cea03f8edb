"""Tiny, offline building blocks for the DDPO embedded default and the tests.

- `build_tiny_clip_tokenizer`: a `CLIPTokenizer` from a vocabulary and merges written here (no download).
- `build_tiny_stable_diffusion`: a Stable Diffusion pipeline from components, sized like diffusers' own tests.
- `build_tiny_clip_model`: a random `CLIPModel` + processor, for exercising `CLIPScoreReward` offline.
- `record_attributes` / `record_caption`: attribute labels and a caption for a canonical record.
- `build_attribute_classifier` / `train_attribute_classifier`: a small multi-label image classifier
  (transformers `ResNetForImageClassification`) that recognises prompt attributes in MedPhantom
  dermoscopy-like images; trains in well under a minute on CPU and serves as the embedded reward model.
- `pretrain_tiny_vae` / `pretrain_tiny_unet`: short training runs so the tiny VAE decodes to images and the
  tiny UNet draws MedPhantom-like lesions (the embedded default starts from random weights).
- `ClassifierFeatures`: the classifier's pooled backbone features, a domain feature extractor for FID/KID.

Example:

```python
>>> from hf_meddiff.trainer.ddpo.tiny import build_tiny_stable_diffusion
>>> pipe = build_tiny_stable_diffusion(seed=0)
>>> pipe.unet.config.sample_size, pipe.vae_scale_factor
(16, 2)
```
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...constants import MODALITY_NAMES

__all__ = [
    "DEFAULT_PROMPT_WORDS",
    "ClassifierFeatures",
    "build_attribute_classifier",
    "build_tiny_clip_model",
    "build_tiny_clip_tokenizer",
    "build_tiny_stable_diffusion",
    "images_to_tensor",
    "pretrain_tiny_unet",
    "pretrain_tiny_vae",
    "record_attributes",
    "record_caption",
    "train_attribute_classifier",
]

# Words that become single tokens of the tiny tokenizer; any other word falls back to characters.
DEFAULT_PROMPT_WORDS = [
    "dermoscopy",
    "image",
    "of",
    "a",
    "skin",
    "lesion",
    "with",
    "without",
    "and",
    "the",
    "in",
    "on",
    "at",
    "mild",
    "moderate",
    "severe",
    "normal",
    "melanoma",
    "nevus",
    "naevus",
    "keratosis",
    "carcinoma",
    "basal",
    "cell",
    "seborrheic",
    "benign",
    "malignant",
    "lesion",
    "lesions",
    "hair",
    "ruler",
    "marker",
    "bubble",
    "bubbles",
    "artefact",
    "artefacts",
    "artifact",
    "artifacts",
    "pigment",
    "network",
    "dots",
    "globules",
    "streaks",
    "border",
    "irregular",
    "regular",
    "asymmetric",
    "symmetric",
    "dark",
    "light",
    "brown",
    "red",
    "pink",
    "blue",
    "black",
    "white",
    "small",
    "large",
    "round",
    "oval",
    "centre",
    "center",
    "left",
    "right",
    "upper",
    "lower",
    "finding",
    "findings",
    "impression",
    "no",
    "ct",
    "mri",
    "x-ray",
    "xray",
    "ultrasound",
    "fundus",
    "oct",
    "microscopy",
    "scan",
    "photograph",
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_tiny_clip_tokenizer(words: Iterable[str] = DEFAULT_PROMPT_WORDS, model_max_length: int = 32):
    """A byte-level BPE `CLIPTokenizer` whose merges spell out `words` as whole tokens.

    Every byte and every byte + `</w>` is in the vocabulary, so any text tokenises; `words` get one token each.
    `model_max_length` is finite (TRL's DDPO and the SD pipeline pad to it).
    """
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,
        min_frequency=1,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=chars,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator([" ".join(dict.fromkeys(w.lower() for w in words))], trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def build_tiny_stable_diffusion(
    seed: int = 0,
    sample_size: int = 16,
    cross_attention_dim: int = 32,
    words: Iterable[str] = DEFAULT_PROMPT_WORDS,
    model_max_length: int = 32,
):
    """A tiny `StableDiffusionPipeline` built from components (random weights, DDIM scheduler).

    UNet `block_out_channels=(8, 16)`, `AutoencoderKL` `[8, 16]` (downsample 2), a 2-layer `CLIPTextModel`
    of width `cross_attention_dim`. With `sample_size=16` the pipeline makes 32 x 32 images.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer(words, model_max_length=model_max_length)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size * 2,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=cross_attention_dim,
            intermediate_size=2 * cross_attention_dim,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=model_max_length,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_clip_model(seed: int = 0, image_size: int = 32, words: Iterable[str] = DEFAULT_PROMPT_WORDS):
    """A random tiny `CLIPModel` and a matching `CLIPProcessor` (offline), for `CLIPScoreReward` tests/demos."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_tiny_clip_tokenizer(words, model_max_length=32)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": 32,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


# --- attributes of canonical records ------------------------------------------------------------------


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in re.split(r"[;,]", value) if v.strip()]
    out: list[str] = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("label") or item.get("name") or ""
        out.extend(_as_list(item))
    return out


def record_attributes(
    record: dict[str, Any], columns: Sequence[str] = ("findings", "severity", "artefacts", "artifacts")
) -> list[str]:
    """Lower-cased attribute labels of a canonical record: the named columns when present, else box labels.

    `findings` may be a string ("melanoma; hair") or a list of strings / `{label: …}` dicts; `severity` a string.
    """
    attributes: list[str] = []
    for column in columns:
        if column in record:
            attributes.extend(_as_list(record[column]))
    if not attributes:
        attributes.extend(_as_list(record.get("boxes")))
    attributes = [a.lower() for a in attributes if a and a.lower() not in ("none", "normal finding")]
    return list(dict.fromkeys(attributes))


def record_caption(record: dict[str, Any], attributes: Sequence[str] | None = None) -> str:
    """A short text-to-image prompt for a record, e.g. `"dermoscopy image: melanoma, hair"`."""
    attributes = record_attributes(record) if attributes is None else list(attributes)
    modality = MODALITY_NAMES.get(record.get("modality", ""), record.get("modality", "") or "medical")
    return f"{modality} image: {', '.join(attributes) if attributes else 'normal'}"


def images_to_tensor(images: Sequence[Image.Image | np.ndarray | torch.Tensor], size: int) -> torch.Tensor:
    """PIL / HWC arrays / CHW tensors -> float tensor `[B, 3, size, size]` in [0, 1]."""
    out = []
    for image in images:
        if isinstance(image, torch.Tensor):
            tensor = image.float()
            if tensor.max() > 1.5:
                tensor = tensor / 255.0
            if tensor.shape[0] == 1:
                tensor = tensor.expand(3, -1, -1)
        else:
            pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            pil = pil.convert("RGB")
            tensor = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if tensor.shape[-1] != size or tensor.shape[-2] != size:
            tensor = torch.nn.functional.interpolate(
                tensor[None], size=(size, size), mode="bilinear", antialias=True
            )[0]
        out.append(tensor.clamp(0, 1))
    return torch.stack(out)


# --- the embedded attribute classifier --------------------------------------------------------------


def build_attribute_classifier(attributes: Sequence[str], image_size: int = 32, seed: int = 0):
    """A small multi-label `ResNetForImageClassification` whose `id2label` are the attribute names."""
    from transformers import ResNetConfig, ResNetForImageClassification

    if not attributes:
        raise ValueError("build_attribute_classifier needs at least one attribute name.")
    torch.manual_seed(seed)
    config = ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
        id2label=dict(enumerate(attributes)),
        label2id={a: i for i, a in enumerate(attributes)},
        problem_type="multi_label_classification",
    )
    config.image_size = image_size
    return ResNetForImageClassification(config)


def _steps(num_steps: int, progress: str | None):
    """`range(num_steps)`, as a tqdm progress bar titled `progress` when given."""
    if not progress:
        return range(num_steps)
    from tqdm.auto import tqdm

    return tqdm(range(num_steps), desc=progress, unit="step", dynamic_ncols=True, mininterval=1.0)


def _show_loss(steps, loss: float, step: int) -> None:
    if step % 10 == 0 and hasattr(steps, "set_postfix"):
        steps.set_postfix(loss=f"{loss:.4f}", refresh=False)


def train_attribute_classifier(
    model,
    images: torch.Tensor,
    attributes: Sequence[Sequence[str]],
    num_steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
    augment: bool = True,
    progress: str | None = None,
) -> list[float]:
    """Train `model` (see `build_attribute_classifier`) on images `[N, 3, H, W]` in [0, 1] and label sets.

    Returns the per-step losses. Inputs are normalised as `2 * x - 1`; light flips/noise augment. `progress`: the
    title of a progress bar (none when unset).
    """
    label2id = model.config.label2id
    targets = torch.zeros(len(attributes), len(label2id))
    for i, labels in enumerate(attributes):
        for label in labels:
            if label in label2id:
                targets[i, label2id[label]] = 1.0
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_steps)
    model.train()
    losses = []
    steps = _steps(num_steps, progress)
    for step in steps:
        idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=generator)
        x = images[idx]
        if augment:
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = (x + 0.03 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
        loss = model(pixel_values=2 * x - 1, labels=targets[idx]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        _show_loss(steps, losses[-1], step)
    model.eval()
    return losses


def pretrain_tiny_vae(
    vae,
    images: torch.Tensor,
    num_steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    progress: str | None = None,
) -> list[float]:
    """Reconstruction training of a (tiny) `AutoencoderKL` on images `[N, 3, H, W]` in [0, 1]; returns losses.

    Afterwards `vae.config.scaling_factor` is set to 1 / std of the latents, as Stable Diffusion does.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate)
    vae.train()
    losses = []
    steps = _steps(num_steps, progress)
    for step in steps:
        idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=generator)
        x = 2 * images[idx] - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = torch.nn.functional.mse_loss(recon, x) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        _show_loss(steps, losses[-1], step)
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(2 * images[:256] - 1).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std().clamp(min=1e-3)))
    return losses


def pretrain_tiny_unet(
    pipeline,
    images: torch.Tensor,
    captions: Sequence[str],
    num_steps: int = 600,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    caption_dropout: float = 0.1,
    seed: int = 0,
    progress: str | None = None,
) -> list[float]:
    """Full text-to-image training of the pipeline's UNet (the tiny model starts from random weights).

    Images `[N, 3, H, W]` in [0, 1] with one caption each; a caption is replaced by "" with probability
    `caption_dropout` so classifier-free guidance has an unconditional model. Returns the per-step losses.
    """
    from .pipeline import denoising_loss, encode_prompts

    unet = pipeline.unet
    unet.requires_grad_(True)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=learning_rate, weight_decay=1e-4)
    warmup = max(1, num_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / max(num_steps, 1))),
    )
    with torch.no_grad():
        unique = sorted(set(captions)) + [""]
        table = dict(zip(unique, encode_prompts(pipeline, unique)))
    unet.train()
    losses = []
    steps = _steps(num_steps, progress)
    for step in steps:
        idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=generator)
        drop = torch.rand(len(idx), generator=generator) < caption_dropout
        embeds = torch.stack([table["" if d else captions[i]] for i, d in zip(idx.tolist(), drop.tolist())])
        loss = denoising_loss(pipeline, unet, images[idx], embeds, generator)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        _show_loss(steps, losses[-1], step)
    unet.eval()
    unet.requires_grad_(False)
    return losses


class ClassifierFeatures(torch.nn.Module):
    """Pooled backbone features `[B, D]` of an image classifier, for FID/KID with a domain encoder.

    Takes images `[B, 3, H, W]` in [0, 1] (the metric's extractor contract) and feeds `2 * x - 1`.
    """

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        backbone = getattr(self.classifier, self.classifier.base_model_prefix)
        return backbone(pixel_values=2 * images - 1).pooler_output.flatten(1)
