"""Image judges: small CNN classifiers of an image's modality and finding, trained only on real images, that score
generated images ("modality recognised %", "finding recognised %") and give a domain feature space for FID / KID.

A judge is plain torch (no torchvision): four conv blocks, global average pooling to a `feature_dim` vector (the
domain features), one linear head. It is saved as `config.json` + `model.safetensors` (never pickle) and loaded by
path. `ImageJudges` holds the modality judge and, when the data has finding labels, the finding judge, saved side by
side under one folder with a `judges.json` of how they were trained and how well they do on held-out real images.

Training needs only tensors and label strings, so any labelled image set works; the data layer (for MedPhantom or a
saved canonical dataset) is read by `hf_meddiff.evaluation.judges`, which the `hf-meddiff judges train` command runs.

Example:

```python
>>> import torch
>>> from hf_meddiff.metrics.judges import train_judge
>>> dark, bright = torch.rand(16, 3, 32, 32) * 0.3, 0.7 + torch.rand(16, 3, 32, 32) * 0.3
>>> judge = train_judge(torch.cat([dark, bright]), ["dark"] * 16 + ["bright"] * 16, epochs=8, progress=False)
>>> judge.predict(torch.cat([dark[:2], bright[:2]]))
['dark', 'dark', 'bright', 'bright']

```
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "JUDGES_FILE",
    "NO_FINDING",
    "ImageJudge",
    "ImageJudges",
    "JudgeConfig",
    "JudgeFeatures",
    "finding_label",
    "judge_images",
    "recognition_scores",
    "train_judge",
]

NO_FINDING = "no finding"
"""The finding label of an image without findings."""
JUDGES_FILE = "judges.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def finding_label(findings: Sequence[str] | None) -> str:
    """The finding label a finding judge predicts for one row: its first finding, or `NO_FINDING`.

    >>> finding_label(["cyst", "cyst"]), finding_label([])
    ('cyst', 'no finding')
    """
    return str(findings[0]) if findings else NO_FINDING


@dataclass
class JudgeConfig:
    """What a judge classifies and its size."""

    task: str = "modality"
    labels: list[str] = field(default_factory=list)
    image_size: int = 64
    width: int = 16
    feature_dim: int = 64

    def __post_init__(self) -> None:
        self.labels = [str(label) for label in self.labels]
        if len(self.labels) < 2:
            raise ValueError(f"A {self.task} judge needs at least two labels, got {self.labels!r}.")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"Judge labels must be unique, got {self.labels!r}.")
        if self.image_size < 16:
            raise ValueError(f"Judge image_size must be at least 16 pixels, got {self.image_size}.")


def judge_images(images, image_size: int) -> torch.Tensor:
    """Images (PIL, arrays, a `[B, C, H, W]` tensor in [0, 1], `datasets.Image` values) -> `[B, 3, S, S]` in [0, 1],
    grey replicated to three channels, resized to `image_size`.

    >>> judge_images(torch.zeros(2, 1, 8, 8), 16).shape
    torch.Size([2, 3, 16, 16])
    """
    if isinstance(images, torch.Tensor):
        x = images.float()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = x[:, :3]
        low, high = float(x.min()), float(x.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise ValueError(
                f"Judge images must lie in [0, 1], got values in [{low:.3f}, {high:.3f}]; pass `(x + 1) / 2` for "
                "[-1, 1] images."
            )
        if x.shape[-1] != image_size or x.shape[-2] != image_size:
            x = F.interpolate(
                x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
            )
        return x.clamp(0, 1)
    from ..models.meddiff.image_processing_meddiff import images_to_tensor

    if len(images) == 0:
        raise ValueError("Got no images to judge.")
    return images_to_tensor(list(images), image_size, value_range=(0.0, 1.0)).clamp(0, 1)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ImageJudge(nn.Module):
    """A small CNN classifier: `[B, 3, S, S]` in [0, 1] -> logits `[B, len(labels)]`; `features` gives the pooled
    penultimate vector `[B, feature_dim]` (the domain features of FID / KID)."""

    def __init__(self, config: JudgeConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.stem = _block(3, w, stride=2)
        self.blocks = nn.ModuleList([_block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 4 * w)])
        self.project = nn.Sequential(
            nn.Conv2d(4 * w, config.feature_dim, 1, bias=False), nn.BatchNorm2d(config.feature_dim), nn.ReLU()
        )
        self.head = nn.Linear(config.feature_dim, len(config.labels))
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, 3, S, S]` in [0, 1] -> `[B, feature_dim]`."""
        x = self.blocks[0](self.stem((pixel_values - self.mean) / self.std))
        for block in self.blocks[1:]:
            x = block(F.max_pool2d(x, 2))
        x = self.project(x)
        return x.mean(dim=(2, 3))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))

    @torch.no_grad()
    def predict_proba(self, images, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities `[B, len(labels)]` of any images `judge_images` takes."""
        was_training = self.training
        self.eval()
        x = judge_images(images, self.config.image_size)
        device = next(self.parameters()).device
        out = [self(x[i : i + batch_size].to(device)).softmax(-1).cpu() for i in range(0, len(x), batch_size)]
        self.train(was_training)
        return torch.cat(out)

    def predict(self, images, batch_size: int = 256) -> list[str]:
        """The most likely label of each image."""
        return [self.labels[i] for i in self.predict_proba(images, batch_size).argmax(-1).tolist()]

    def accuracy(self, images, labels: Sequence[str]) -> float:
        """Fraction of `images` whose predicted label equals `labels` (unknown labels count as wrong)."""
        predicted = self.predict(images)
        if len(predicted) != len(labels):
            raise ValueError(f"Got {len(predicted)} images but {len(labels)} labels.")
        return float(np.mean([p == str(t) for p, t in zip(predicted, labels)]))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` and `model.safetensors` to `directory`."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2), encoding="utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt", "task": self.config.task})
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> ImageJudge:
        """Load a judge saved by `save_pretrained` (safetensors only)."""
        from safetensors.torch import load_file

        path = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name} not found: a judge folder holds {CONFIG_FILE} and {WEIGHTS_FILE}; train one with "
                    "`hf-meddiff judges train --data medphantom --output DIR`."
                )
        try:
            config = JudgeConfig(**json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path / CONFIG_FILE} is not a judge config: {error}") from error
        judge = cls(config)
        judge.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        return judge.to(device).eval()


def train_judge(
    images,
    labels: Sequence[str],
    task: str = "modality",
    *,
    image_size: int | None = None,
    width: int = 16,
    feature_dim: int = 64,
    epochs: int = 6,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    weight_decay: float = 1e-4,
    max_seconds: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ImageJudge:
    """Train an `ImageJudge` on real images and their label strings (labels are sorted into the judge's vocabulary).

    Augmentation is label-preserving only: horizontal flips and shifts of up to 1/16 of the side. AdamW with a
    warm-up and cosine schedule; `max_seconds` stops early (the schedule is not stretched).

    Args:
        images: PIL images / arrays, or a float tensor `[N, C, H, W]` in [0, 1].
        labels: one label per image.
        image_size: side the judge sees (default: the images' own size).
    """
    if len(labels) != len(images):
        raise ValueError(f"train_judge got {len(images)} images but {len(labels)} labels.")
    x = judge_images(images, image_size or _side(images))
    y_names = [str(label) for label in labels]
    vocabulary = sorted(set(y_names))
    config = JudgeConfig(
        task=task, labels=vocabulary, image_size=x.shape[-1], width=width, feature_dim=feature_dim
    )
    index = {label: i for i, label in enumerate(vocabulary)}
    y = torch.tensor([index[name] for name in y_names])
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = ImageJudge(config)
    judge.train()
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=learning_rate, weight_decay=weight_decay)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
    )
    shift = max(1, x.shape[-1] // 16)
    bar = _progress(total, f"{task} judge", progress)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            batch_index = order[i : i + batch_size]
            batch = _augment(x[batch_index], shift, generator)
            loss = F.cross_entropy(judge(batch), y[batch_index], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
        else:
            continue
        break
    if bar is not None:
        bar.close()
    return judge.eval()


def _side(images) -> int:
    if isinstance(images, torch.Tensor):
        return int(images.shape[-1])
    from ..models.meddiff.image_processing_meddiff import images_to_tensor

    return int(images_to_tensor([images[0]], None, value_range=(0.0, 1.0)).shape[-1])


def _augment(batch: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(batch), generator=generator) < 0.5
    batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
    dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
    padded = F.pad(batch, (shift, shift, shift, shift), mode="replicate")
    size = batch.shape[-1]
    return padded[..., shift + dy : shift + dy + size, shift + dx : shift + dx + size]


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, leave=False)


class JudgeFeatures(nn.Module):
    """Domain feature extractor for FID / KID: the concatenated penultimate features of one or more judges,
    `[B, 3, H, W]` in [0, 1] -> `[B, sum(feature_dim)]` (resized to each judge's size)."""

    def __init__(self, judges: Sequence[ImageJudge]):
        super().__init__()
        if not judges:
            raise ValueError("JudgeFeatures needs at least one judge.")
        self.judges = nn.ModuleList(judges)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [j.features(judge_images(pixel_values, j.config.image_size)) for j in self.judges], dim=-1
        )


@dataclass
class ImageJudges:
    """The modality judge and (optionally) the finding judge, with what is known about how they were trained."""

    modality: ImageJudge
    finding: ImageJudge | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def feature_extractor(self) -> JudgeFeatures:
        """The domain feature extractor (both judges' penultimate features)."""
        return JudgeFeatures([j for j in (self.modality, self.finding) if j is not None]).eval()

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `modality/`, `finding/` (each `config.json` + `model.safetensors`) and `judges.json`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.modality.save_pretrained(out / "modality")
        if self.finding is not None:
            self.finding.save_pretrained(out / "finding")
        (out / JUDGES_FILE).write_text(json.dumps(self.info, indent=2, default=float), encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> ImageJudges:
        """Load judges saved by `save` (a folder with `modality/` and optionally `finding/`)."""
        path = Path(directory)
        if not (path / "modality").is_dir():
            raise FileNotFoundError(
                f"{path} holds no judges (no modality/ folder). Train them with `hf-meddiff judges train --data "
                f"medphantom --output {path}`."
            )
        finding = (
            ImageJudge.from_pretrained(path / "finding", device) if (path / "finding").is_dir() else None
        )
        info_file = path / JUDGES_FILE
        info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
        return cls(ImageJudge.from_pretrained(path / "modality", device), finding, info)


def recognition_scores(
    judges: ImageJudges,
    generated_images,
    modalities: Sequence[str],
    findings: Sequence[str] | None = None,
    real_images=None,
) -> dict[str, float]:
    """How often the judges recognise the intended modality / finding in generated images, and (with
    `real_images`, the reference images of the same rows) how often they do on the real ones.

    Args:
        generated_images: one image per row, generated from that row's report.
        modalities: the row's modality (what the report describes).
        findings: the row's finding label (`finding_label(row["findings"])`); needs a finding judge.
        real_images: the rows' real images, for the reference accuracies.

    Returns:
        `modality_recognised`, `finding_recognised` (fractions in [0, 1]) and, with `real_images`,
        `modality_accuracy_real`, `finding_accuracy_real` and `finding_recognised_vs_real` (the ratio).
    """
    scores: dict[str, float] = {}
    scores["modality_recognised"] = judges.modality.accuracy(generated_images, modalities)
    if real_images is not None:
        scores["modality_accuracy_real"] = judges.modality.accuracy(real_images, modalities)
    if findings is not None and judges.finding is not None:
        scores["finding_recognised"] = judges.finding.accuracy(generated_images, findings)
        if real_images is not None:
            real = judges.finding.accuracy(real_images, findings)
            scores["finding_accuracy_real"] = real
            if real > 0:
                scores["finding_recognised_vs_real"] = scores["finding_recognised"] / real
    return scores
