# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""DDPO of a Stable Diffusion pipeline from a YAML recipe (open-r1 style): build pipeline, data and rewards, then
run stage one (supervised LoRA), DDPO, and the before/after evaluation (grids, reward, FID/KID, CLIP score).

```bash
hf-meddiff ddpo --config trainers/ddpo_embedded.yaml [--key value ...]     # e.g. --num_epochs 5
python -m hf_meddiff.trainer.ddpo.script --config trainers/ddpo_embedded.yaml --num_epochs 5
accelerate launch -m hf_meddiff.trainer.ddpo.script --config trainers/ddpo_hub.yaml
```

The recipe sets the fields of two dataclasses: `DDPOScriptArguments` (pipeline, data, rewards, evaluation) and
`MedDDPOConfig` (DDPO and stage one). The pipeline is `pretrained_model` (a Hub id / local path of any Stable
Diffusion pipeline) or, when unset, the embedded default: a tiny Stable Diffusion built from components and
trained here on the data's images. The data (MedPhantom, or a canonical dataset at `dataset_path`) feeds stage
one, the attribute classifier, the prompts and the FID/KID reference set.

Every output goes under `output_dir`: `base_pipeline/` (embedded), `attribute_classifier/`, `lora/`,
`grids/<prompt>.png` (the prompt as title; rows labelled "before RL" and "after RL"), `results.json`. Each stage
announces itself (`[k/7] ...`) and long ones show a progress bar; log lines are written above the bars.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..common import (
    MissingInputError,
    UsageError,
    check_model_path,
    check_output_dir,
    check_positive,
    parse_recipe,
    run_command,
)
from .config import MedDDPOConfig

logger = logging.getLogger("hf_meddiff.ddpo")

REWARDS = ("attribute_classifier", "clip", "open_clip")


@dataclass
class DDPOScriptArguments:
    r"""
    Pipeline, data, reward and evaluation arguments of the DDPO script (the training fields are
    [`MedDDPOConfig`]'s; its `pretrained_model` names the pipeline).

    Parameters:
        > Embedded pipeline (when `pretrained_model` is unset)

        pipeline_seed (`int`, defaults to `0`), vae_steps (`int`, defaults to `300`), unet_steps (`int`, defaults to
            `600`), unet_learning_rate (`float`, defaults to `2e-3`): the tiny VAE's reconstruction training and the
            tiny UNet's text-to-image training, from random weights.

        > Data

        dataset_path (`str`, *optional*): a canonical dataset (`save_to_disk` folder or `.parquet`) instead of
            MedPhantom; dataset_split (`str`, *optional*) keeps the rows of one `split`.
        medphantom_num_cases / medphantom_image_size / medphantom_modalities / medphantom_seed: the generated
            MedPhantom cases; the embedded pipeline works at `medphantom_image_size`.
        resolution (`int`, defaults to `512`): image side of a Hub pipeline (stage one's images are resized to it).

        > Rewards

        rewards (`list[str]`, defaults to `["attribute_classifier"]`): among `REWARDS`; reward_weights (`list[float]`,
            *optional*) weighs them in this order (1 each by default); region_rewards (`list[str]`) names those
            scored on the crops of the boxes a prompt names (`RegionReward`).
        classifier_*: the attribute classifier (trained here on the data unless `classifier_path` names a saved
            one); clip_model / clip_scale: a transformers CLIP; open_clip_model / open_clip_scale: an open_clip
            model (e.g. BiomedCLIP).

        > Evaluation

        eval_num_images_per_prompt, eval_seed, eval_fid, eval_num_reference, eval_clip_model: images per prompt
            before and after RL (fixed seeds), FID/KID against `eval_num_reference` real images (features of the
            attribute classifier's backbone) and CLIP score with `eval_clip_model`.
    """

    # > Embedded pipeline
    pipeline_seed: int = field(
        default=0, metadata={"help": "Seed of the embedded tiny pipeline's weights and pretraining."}
    )
    vae_steps: int = field(default=300, metadata={"help": "Reconstruction training steps of the tiny VAE."})
    unet_steps: int = field(default=600, metadata={"help": "Text-to-image training steps of the tiny UNet."})
    unet_learning_rate: float = field(default=2e-3, metadata={"help": "Learning rate of the tiny UNet."})

    # > Data
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "A canonical dataset (save_to_disk folder or .parquet) instead of MedPhantom."},
    )
    dataset_split: str | None = field(
        default=None, metadata={"help": "Keep only the rows with this `split` value (default: every row)."}
    )
    medphantom_num_cases: int = field(default=512, metadata={"help": "MedPhantom cases to generate."})
    medphantom_image_size: int = field(
        default=32, metadata={"help": "MedPhantom image side in pixels (the embedded pipeline's resolution)."}
    )
    medphantom_modalities: list[str] = field(
        default_factory=lambda: ["dermoscopy"], metadata={"help": "MedPhantom modalities to generate."}
    )
    medphantom_seed: int = field(default=0, metadata={"help": "MedPhantom generator seed."})
    resolution: int = field(
        default=512, metadata={"help": "Image side of a Hub pipeline (stage one's images are resized to it)."}
    )

    # > Rewards
    rewards: list[str] = field(
        default_factory=lambda: ["attribute_classifier"],
        metadata={"help": f"Reward functions, among {REWARDS}."},
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per reward, in the order of `rewards` (default 1 each)."}
    )
    region_rewards: list[str] = field(
        default_factory=list,
        metadata={"help": "Rewards scored on the crops of the boxes a prompt names (RegionReward)."},
    )
    classifier_path: str | None = field(
        default=None, metadata={"help": "A saved attribute classifier (default: trained here on the data)."}
    )
    classifier_train_steps: int = field(
        default=300, metadata={"help": "Training steps of an attribute classifier trained here."}
    )
    classifier_mode: str = field(
        default="probability",
        metadata={
            "help": "'probability' (mean probability of the prompt's attributes) or 'fraction' (thresholded)."
        },
    )
    classifier_threshold: float = field(default=0.5, metadata={"help": "Threshold of the 'fraction' mode."})
    classifier_exclusive_groups: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Groups of mutually exclusive attributes, each comma-separated, e.g. 'nevus,melanoma'."
        },
    )
    clip_model: str | None = field(
        default=None, metadata={"help": "Hub id / path of the `clip` reward's model."}
    )
    clip_scale: float = field(default=1.0, metadata={"help": "Multiplies the `clip` reward's cosine."})
    open_clip_model: str | None = field(
        default=None, metadata={"help": "open_clip name / hf-hub: id of the `open_clip` reward's model."}
    )
    open_clip_scale: float = field(
        default=1.0, metadata={"help": "Multiplies the `open_clip` reward's cosine."}
    )

    # > Evaluation
    eval_num_images_per_prompt: int = field(
        default=4, metadata={"help": "Images per prompt before and after RL (same seeds)."}
    )
    eval_seed: int = field(default=1234, metadata={"help": "Seed of the evaluation images."})
    eval_fid: bool = field(
        default=True,
        metadata={"help": "FID/KID with the attribute classifier's backbone as feature extractor."},
    )
    eval_num_reference: int = field(
        default=256, metadata={"help": "Real images of the FID/KID reference set."}
    )
    eval_clip_model: str | None = field(
        default=None, metadata={"help": "Hub id / path of a CLIP model for the CLIP score (default: none)."}
    )

    # > Run
    threads: int | None = field(
        default=None, metadata={"help": "torch intra-op threads (tiny models: 1 is fastest on shared cores)."}
    )

    def __post_init__(self):
        unknown = sorted(set(self.rewards) - set(REWARDS)) + sorted(
            set(self.region_rewards) - set(self.rewards)
        )
        if unknown or not self.rewards:
            raise ValueError(
                f"rewards must be a non-empty list among {REWARDS} and region_rewards a subset of it; got "
                f"rewards={self.rewards}, region_rewards={self.region_rewards}."
            )
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} weights for {len(self.rewards)} rewards {self.rewards}."
            )
        # a YAML list of lists, or comma-separated groups from the command line
        self.classifier_exclusive_groups = [
            list(group)
            if isinstance(group, (list, tuple))
            else [a.strip() for a in group.split(",") if a.strip()]
            for group in self.classifier_exclusive_groups
        ]

    @property
    def weights(self) -> list[float]:
        return [float(w) for w in self.reward_weights] if self.reward_weights else [1.0] * len(self.rewards)


# --------------------------------------------------------------------------------------------- data


def load_records(args: DDPOScriptArguments):
    """The canonical dataset of a recipe: MedPhantom by default, or `dataset_path` (save_to_disk folder / parquet)."""
    if args.dataset_path:
        from datasets import load_dataset, load_from_disk

        path = Path(args.dataset_path)
        ds = (
            load_dataset("parquet", data_files=str(path), split="train")
            if path.suffix == ".parquet"
            else load_from_disk(str(path))
        )
    else:
        from ...data import make_phantom_dataset

        ds = make_phantom_dataset(
            args.medphantom_num_cases,
            seed=args.medphantom_seed,
            image_size=args.medphantom_image_size,
            modalities=tuple(args.medphantom_modalities),
        )
    if args.dataset_split:
        ds = ds.filter(lambda s: s == args.dataset_split, input_columns="split")
    return ds


def prepare_pairs(ds, image_size: int) -> tuple[torch.Tensor, list[str], list[list[str]]]:
    """Images `[N, 3, S, S]` in [0, 1], captions and attribute lists of a canonical dataset."""
    from .tiny import images_to_tensor, record_attributes, record_caption

    records = [dict(zip(ds.column_names, values)) for values in zip(*(ds[c] for c in ds.column_names))]
    attributes = [record_attributes(r) for r in records]
    captions = [record_caption(r, a) for r, a in zip(records, attributes)]
    return images_to_tensor([r["image"] for r in records], image_size), captions, attributes


# ------------------------------------------------------------------------------------------- builders


def is_embedded(config: MedDDPOConfig) -> bool:
    return config.pretrained_model in (None, "", "embedded")


def build_pipeline(
    args: DDPOScriptArguments,
    config: MedDDPOConfig,
    images: torch.Tensor,
    captions: list[str],
    output_dir: Path,
):
    """The Stable Diffusion pipeline of a recipe (embedded: built and trained here; else `from_pretrained`)."""
    if not is_embedded(config):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline.from_pretrained(
            config.pretrained_model, revision=config.pretrained_revision
        )
    from .tiny import build_tiny_stable_diffusion, pretrain_tiny_unet, pretrain_tiny_vae

    seed = args.pipeline_seed
    pipe = build_tiny_stable_diffusion(seed=seed, sample_size=images.shape[-1] // 2)
    t0 = time.perf_counter()
    vae_losses = pretrain_tiny_vae(
        pipe.vae, images, num_steps=args.vae_steps, seed=seed, progress="Embedded pipeline: VAE"
    )
    unet_losses = pretrain_tiny_unet(
        pipe,
        images,
        captions,
        num_steps=args.unet_steps,
        learning_rate=args.unet_learning_rate,
        seed=seed,
        progress="Embedded pipeline: UNet",
    )
    logger.info(
        "embedded pipeline: VAE loss %.4f -> %.4f, UNet loss %.4f -> %.4f (%.0f s)",
        vae_losses[0],
        vae_losses[-1],
        unet_losses[0],
        unet_losses[-1],
        time.perf_counter() - t0,
    )
    pipe.save_pretrained(output_dir / "base_pipeline")
    return pipe


def build_rewards(args: DDPOScriptArguments, images, attributes, output_dir: Path):
    """Reward callables and weights of a recipe; returns (funcs, weights, attribute_classifier or None)."""
    from ...rewards.image_rewards import (
        AttributeClassifierReward,
        CLIPScoreReward,
        OpenCLIPScoreReward,
        RegionReward,
    )
    from .tiny import build_attribute_classifier, train_attribute_classifier

    funcs, classifier = [], None
    for kind in args.rewards:
        if kind == "attribute_classifier":
            from transformers import AutoModelForImageClassification

            if args.classifier_path:
                classifier = AutoModelForImageClassification.from_pretrained(args.classifier_path)
            else:
                names = sorted({a for attrs in attributes for a in attrs})
                classifier = build_attribute_classifier(names, image_size=images.shape[-1])
                t0 = time.perf_counter()
                losses = train_attribute_classifier(
                    classifier,
                    images,
                    attributes,
                    num_steps=args.classifier_train_steps,
                    progress="Attribute classifier",
                )
                logger.info(
                    "attribute classifier: loss %.3f -> %.3f (%.0f s)",
                    losses[0],
                    losses[-1],
                    time.perf_counter() - t0,
                )
                classifier.save_pretrained(output_dir / "attribute_classifier")
            func = AttributeClassifierReward(
                classifier,
                mode=args.classifier_mode,
                threshold=args.classifier_threshold,
                exclusive_groups=args.classifier_exclusive_groups,
                image_size=images.shape[-1],
            )
        elif kind == "clip":
            if not args.clip_model:
                raise ValueError("The `clip` reward needs clip_model (a Hub id or path of a CLIP model).")
            func = CLIPScoreReward(args.clip_model, scale=args.clip_scale)
        else:
            if not args.open_clip_model:
                raise ValueError(
                    "The `open_clip` reward needs open_clip_model (an open_clip name or hf-hub: id)."
                )
            func = OpenCLIPScoreReward(args.open_clip_model, scale=args.open_clip_scale)
        funcs.append(RegionReward(func) if kind in args.region_rewards else func)
    return funcs, args.weights, classifier


def save_grids(
    before: torch.Tensor, after: torch.Tensor, prompts: list[str], n: int, directory: Path
) -> list[str]:
    """One PNG per prompt: the prompt as a title, then the images before RL (row "before RL") and after RL (row
    "after RL"), same seeds per column; small images are enlarged (nearest neighbour) so the labels stay readable."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, prompt in enumerate(prompts):
        rows = [before[i * n : (i + 1) * n], after[i * n : (i + 1) * n]]
        name = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:80] or f"prompt_{i}"
        path = directory / f"{i:02d}_{name}.png"
        labelled_grid(rows, ["before RL", "after RL"], prompt).save(path)
        paths.append(str(path))
    return paths


def labelled_grid(rows: list[torch.Tensor], row_labels: list[str], title: str, min_side: int = 96):
    """A PIL image: `title` on top, then one row per `[k, 3, H, W]` tensor in [0, 1], each named on its left."""
    import math
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    side = int(rows[0].shape[-1])
    scale = max(1, math.ceil(min_side / side))
    cell = side * scale
    columns = max(len(r) for r in rows)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max(int(probe.textlength(label, font=font)) for label in row_labels) + 12
    width = left + columns * cell
    char_width = max(1, int(probe.textlength("M", font=font)))
    lines = textwrap.wrap(title, max(8, width // char_width - 1)) or [""]
    line_height = 14
    top = 6 + line_height * len(lines)
    canvas = Image.new("RGB", (width, top + len(rows) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((4, 3 + k * line_height), line, fill="black", font=font)
    for r, (row, label) in enumerate(zip(rows, row_labels)):
        y = top + r * cell
        draw.text((4, y + cell // 2 - 6), label, fill="black", font=font)
        for c, image in enumerate(row):
            array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            tile = Image.fromarray(array).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (left + c * cell, y))
    return canvas


def evaluate(
    trainer, prompts, n, seed, rewards_fn, reference, classifier, clip_model=None
) -> tuple[dict, torch.Tensor]:
    """Images for every prompt (n each, fixed seeds) and their mean reward, FID/KID and CLIP score."""
    from .tiny import ClassifierFeatures

    expanded = [p for p in prompts for _ in range(n)]
    images = torch.cat(
        [trainer.generate(expanded[i : i + 32], seed=seed + i) for i in range(0, len(expanded), 32)]
    )
    metrics: dict[str, float] = {"reward_mean": float(rewards_fn(images, expanded).mean())}
    try:
        from ...metrics import image_generation_scores
    except ImportError as err:  # pragma: no cover - the metrics part ships with the library
        logger.warning("image metrics unavailable (%s)", err)
        return metrics, images
    kwargs: dict[str, Any] = {}
    if classifier is not None and reference is not None:
        kwargs.update(real_images=reference, feature_extractor=ClassifierFeatures(classifier).eval())
    if clip_model:
        from transformers import CLIPModel, CLIPProcessor

        kwargs.update(
            clip_model=CLIPModel.from_pretrained(clip_model),
            clip_processor=CLIPProcessor.from_pretrained(clip_model),
            prompts=expanded,
        )
    if kwargs:
        metrics.update(image_generation_scores(generated_images=images, kid_subsets=20, **kwargs))
    return metrics, images


# -------------------------------------------------------------------------------------------- driver


def run(args: DDPOScriptArguments, config: MedDDPOConfig) -> dict[str, Any]:
    """Run a DDPO recipe end to end; returns (and writes) the results."""
    from .trainer import MedDDPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    total = 7
    stage(
        1,
        total,
        "Loading the data"
        + ("" if args.dataset_path else f" ({args.medphantom_num_cases} MedPhantom cases)"),
    )
    ds = load_records(args)
    resolution = args.medphantom_image_size if is_embedded(config) else args.resolution
    images, captions, attributes = prepare_pairs(ds, resolution)
    if is_embedded(config):
        stage(
            2,
            total,
            f"Building the embedded Stable Diffusion and pretraining it on {len(images)} images "
            f"(VAE {args.vae_steps} steps, UNet {args.unet_steps} steps)",
        )
    else:
        stage(2, total, f"Loading the pipeline {config.pretrained_model}")
    pipe = build_pipeline(args, config, images, captions, output_dir)
    stage(3, total, f"Building the rewards {args.rewards}")
    funcs, weights, classifier = build_rewards(args, images, attributes, output_dir)

    first_attrs = {c: a for c, a in zip(reversed(captions), reversed(attributes))}
    # Prompts that name no attribute (e.g. "… image: normal") carry no reward signal for attribute rewards.
    unique = sorted(c for c in set(captions) if first_attrs[c]) or sorted(set(captions))
    prompts = [{"prompt": c, "attributes": first_attrs[c]} for c in unique]
    trainer = MedDDPOTrainer(config, pipe, funcs, prompts=prompts, reward_weights=weights)

    def reward_of(imgs, ps):
        attrs = [first_attrs.get(p, []) for p in ps]
        return trainer.compute_rewards(imgs, ps, {"attributes": attrs})

    n, seed = args.eval_num_images_per_prompt, args.eval_seed
    reference = images[: args.eval_num_reference] if args.eval_fid else None
    results: dict[str, Any] = {"config": config.to_dict(), "script": asdict(args), "prompts": unique}

    if config.sft_num_steps and not config.resume_from_checkpoint:
        t0 = stage(4, total, f"Stage one: supervised LoRA fine-tuning, {config.sft_num_steps} steps")
        losses = trainer.train_supervised(images, captions, progress=True)
        results["sft"] = {
            "loss_first": losses[0],
            "loss_last10": sum(losses[-10:]) / len(losses[-10:]),
            "time_s": time.perf_counter() - t0,
        }
    else:
        stage(4, total, "Stage one: skipped (sft_num_steps 0 or resuming)")
    stage(5, total, f"Evaluating before RL: {n} images for each of {len(unique)} prompts")
    results["before"], before = evaluate(
        trainer, unique, n, seed, reward_of, reference, classifier, args.eval_clip_model
    )
    logger.info("before RL: %s", _short(results["before"]))
    t0 = stage(6, total, f"DDPO: {config.num_epochs} epochs (Ctrl-C saves a checkpoint and stops)")
    history = trainer.train()
    results["ddpo_time_s"] = time.perf_counter() - t0
    results["history"] = history
    if trainer.stopped_by_signal:
        results["stopped_by_signal"] = trainer.stopped_by_signal
        results["total_time_s"] = time.perf_counter() - t_start
        (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
        return results
    stage(7, total, "Evaluating after RL, saving the grids, the LoRA weights and results.json")
    results["after"], after = evaluate(
        trainer, unique, n, seed, reward_of, reference, classifier, args.eval_clip_model
    )
    logger.info("after RL: %s", _short(results["after"]))
    results["grids"] = save_grids(before, after, unique, n, output_dir / "grids")
    trainer.save_pretrained(output_dir / "lora")
    results["total_time_s"] = time.perf_counter() - t_start
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    logger.info("done in %.0f s: %s", results["total_time_s"], output_dir)
    return results


def _short(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def make_parser():
    from trl import TrlParser

    return TrlParser(
        (DDPOScriptArguments, MedDDPOConfig),
        prog="hf-meddiff ddpo",
        description="DDPO for text-to-image medical synthesis on a Stable Diffusion pipeline.",
        epilog="Options come from `--config recipe.yaml` (keys: the option names) and from flags, which win.",
    )


def parse_args(argv: list[str]) -> tuple[DDPOScriptArguments, MedDDPOConfig]:
    """`(script arguments, MedDDPOConfig)` from `--config recipe.yaml` and `--key value` flags; a problem with the
    recipe or a value is a `UsageError` (a `ValueError`) that names it."""
    return parse_recipe(make_parser(), argv)


def validate(args: DDPOScriptArguments, config: MedDDPOConfig) -> None:
    """Check what can be checked before any work starts: epochs and steps, paths that must exist, and that
    `output_dir` is writable. Raises `UsageError` naming the option."""
    if config.num_epochs < 1:
        raise UsageError(f"num_epochs={config.num_epochs}: `hf-meddiff ddpo` needs at least one DDPO epoch.")
    check_positive(
        args,
        ("medphantom_num_cases", "medphantom_image_size", "resolution", "eval_num_images_per_prompt"),
    )
    if is_embedded(config):
        check_positive(args, ("vae_steps", "unet_steps"))
    if "attribute_classifier" in args.rewards and not args.classifier_path:
        check_positive(args, ("classifier_train_steps",))
    if not is_embedded(config):
        check_model_path(config.pretrained_model, "pretrained_model", what="a Stable Diffusion pipeline")
    check_model_path(args.classifier_path, "classifier_path", what="a saved attribute classifier")
    check_model_path(args.dataset_path, "dataset_path", what="a canonical dataset")
    if args.dataset_path and not os.path.exists(args.dataset_path):
        raise MissingInputError(f"dataset_path {args.dataset_path!r}: no such file or folder.")
    resume = config.resume_from_checkpoint
    if resume and resume != "latest" and not os.path.isdir(resume):
        raise MissingInputError(f"resume_from_checkpoint {resume!r}: no such checkpoint folder.")
    check_output_dir(config.output_dir)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `hf-meddiff ddpo`: 0 when done, 2 for a problem with the inputs (one line on stderr), and
    `128 + signal` when SIGTERM or Ctrl-C stopped training (after saving a checkpoint)."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        args, config = parse_args(argv)
        validate(args, config)
        setup_logging()
        results = run(args, config)
        if results.get("stopped_by_signal"):
            return 128 + int(results["stopped_by_signal"])
        hist = results["history"]
        print(
            json.dumps(
                {
                    "reward_first_epoch": hist[0]["reward_mean"] if hist else None,
                    "reward_last_epoch": hist[-1]["reward_mean"] if hist else None,
                    "eval_before": results["before"],
                    "eval_after": results["after"],
                    "ddpo_time_s": round(results["ddpo_time_s"], 1),
                    "total_time_s": round(results["total_time_s"], 1),
                    "output_dir": results["config"]["output_dir"],
                },
                indent=2,
            )
        )
        return 0

    return run_command("ddpo", body)


def setup_logging() -> None:
    """INFO log lines of the DDPO script and trainer, written through tqdm so that they do not break a progress
    bar."""
    from tqdm.auto import tqdm

    class TqdmHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                tqdm.write(self.format(record), file=sys.stderr)
            except Exception:  # noqa: BLE001 - logging must never fail the run
                self.handleError(record)

    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in ("hf_meddiff.ddpo", "hf_meddiff.trainer.ddpo"):
        log = logging.getLogger(name)
        if not any(isinstance(h, TqdmHandler) for h in log.handlers):
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def stage(number: int, total: int, text: str) -> float:
    """Announce stage `number` of `total` (one line, at once) and return its start time."""
    logger.info("[%d/%d] %s", number, total, text)
    return time.perf_counter()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
