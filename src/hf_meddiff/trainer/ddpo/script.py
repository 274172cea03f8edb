"""`hf-meddiff ddpo --config trainers/<recipe>.yaml`: build pipeline, data and rewards from a recipe, then run
stage one (supervised LoRA), DDPO, and the before/after evaluation (grids, reward, FID/KID, CLIP score).

A recipe is YAML with these sections (see `trainers/ddpo_embedded.yaml` and `trainers/ddpo_hub.yaml`):

- `pipeline`: `source: embedded` (a tiny Stable Diffusion built from components and trained here on MedPhantom
  images) or a Hub id / local path of any Stable Diffusion pipeline (`source: stabilityai/...`).
- `data`: MedPhantom (`num_cases`, `image_size`, `modalities`, `seed`) or a canonical dataset on disk
  (`path:` a folder saved with `save_to_disk` or a parquet file) - used for stage one, the reward model, the
  prompts and the FID/KID reference set.
- `rewards`: a list of `{type, weight, ...}`: `attribute_classifier` (trained here on the data unless
  `path:` gives a saved one), `clip` (`model:` Hub id/path), `open_clip` (`model:` name), each optionally
  wrapped as `region: true`.
- `ddpo`: `MedDDPOConfig` fields.
- `evaluation`: `num_images_per_prompt`, `seed`, `clip_model` (optional), `fid` (true/false).

Every output goes under `ddpo.output_dir`: `base_pipeline/` (embedded), `attribute_classifier/`, `lora/`,
`grids/<prompt>.png` (rows: before, after), `results.json`.

Example:

```bash
hf-meddiff ddpo --config trainers/ddpo_embedded.yaml ddpo.num_epochs=5
```
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch
import yaml

logger = logging.getLogger("hf_meddiff.ddpo")


def _set(recipe: dict, dotted: str, raw: str) -> None:
    keys: list[Any] = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    node: Any = recipe
    for key in keys[:-1]:
        node = node[key] if isinstance(node, list) else node.setdefault(key, {})
    node[keys[-1]] = yaml.safe_load(raw)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML recipe and apply `section.key=value` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Recipe {path} not found; recipes live in trainers/ (e.g. trainers/ddpo_embedded.yaml)."
        )
    recipe = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like section.key=value (e.g. ddpo.num_epochs=5).")
        key, value = item.split("=", 1)
        _set(recipe, key, value)
    unknown = set(recipe) - {"pipeline", "data", "rewards", "ddpo", "evaluation", "threads"}
    if unknown:
        raise ValueError(
            f"{path}: unknown recipe section(s) {sorted(unknown)}; use pipeline, data, rewards, ddpo, evaluation."
        )
    return recipe


# --------------------------------------------------------------------------------------------- data


def load_records(data: dict[str, Any]):
    """The canonical dataset of a recipe: MedPhantom by default, or `path:` (save_to_disk folder / parquet)."""
    if data.get("path"):
        from datasets import load_dataset, load_from_disk

        path = Path(data["path"])
        ds = (
            load_dataset("parquet", data_files=str(path), split="train")
            if path.suffix == ".parquet"
            else load_from_disk(str(path))
        )
    else:
        from ...data import make_phantom_dataset

        ds = make_phantom_dataset(
            int(data.get("num_cases", 512)),
            seed=int(data.get("seed", 0)),
            image_size=int(data.get("image_size", 32)),
            modalities=tuple(data.get("modalities", ("dermoscopy",))),
        )
    if data.get("split"):
        ds = ds.filter(lambda s: s == data["split"], input_columns="split")
    return ds


def prepare_pairs(ds, image_size: int) -> tuple[torch.Tensor, list[str], list[list[str]]]:
    """Images `[N, 3, S, S]` in [0, 1], captions and attribute lists of a canonical dataset."""
    from .tiny import images_to_tensor, record_attributes, record_caption

    records = [dict(zip(ds.column_names, values)) for values in zip(*(ds[c] for c in ds.column_names))]
    attributes = [record_attributes(r) for r in records]
    captions = [record_caption(r, a) for r, a in zip(records, attributes)]
    return images_to_tensor([r["image"] for r in records], image_size), captions, attributes


# ------------------------------------------------------------------------------------------- builders


def build_pipeline(section: dict[str, Any], images: torch.Tensor, captions: list[str], output_dir: Path):
    """The Stable Diffusion pipeline of a recipe (embedded: built and trained here; else `from_pretrained`)."""
    source = section.get("source", "embedded")
    if source != "embedded":
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline.from_pretrained(source, revision=section.get("revision"))
    from .tiny import build_tiny_stable_diffusion, pretrain_tiny_unet, pretrain_tiny_vae

    seed = int(section.get("seed", 0))
    pipe = build_tiny_stable_diffusion(seed=seed, sample_size=images.shape[-1] // 2)
    t0 = time.perf_counter()
    vae_losses = pretrain_tiny_vae(pipe.vae, images, num_steps=int(section.get("vae_steps", 300)), seed=seed)
    unet_losses = pretrain_tiny_unet(
        pipe,
        images,
        captions,
        num_steps=int(section.get("unet_steps", 600)),
        learning_rate=float(section.get("unet_learning_rate", 2e-3)),
        seed=seed,
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


def build_rewards(specs: list[dict[str, Any]], images, attributes, output_dir: Path):
    """Reward callables and weights of a recipe; returns (funcs, weights, attribute_classifier or None)."""
    from ...rewards.image_rewards import (
        AttributeClassifierReward,
        CLIPScoreReward,
        OpenCLIPScoreReward,
        RegionReward,
    )
    from .tiny import build_attribute_classifier, train_attribute_classifier

    funcs, weights, classifier = [], [], None
    for spec in specs or [{"type": "attribute_classifier"}]:
        spec = dict(spec)
        kind = spec.pop("type")
        weight = float(spec.pop("weight", 1.0))
        region = bool(spec.pop("region", False))
        if kind == "attribute_classifier":
            from transformers import AutoModelForImageClassification

            if spec.get("path"):
                classifier = AutoModelForImageClassification.from_pretrained(spec["path"])
            else:
                names = sorted({a for attrs in attributes for a in attrs})
                classifier = build_attribute_classifier(names, image_size=images.shape[-1])
                t0 = time.perf_counter()
                losses = train_attribute_classifier(
                    classifier, images, attributes, num_steps=int(spec.get("train_steps", 300))
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
                mode=spec.get("mode", "probability"),
                threshold=float(spec.get("threshold", 0.5)),
                exclusive_groups=spec.get("exclusive_groups", ()),
                image_size=images.shape[-1],
            )
        elif kind == "clip":
            func = CLIPScoreReward(spec["model"], scale=float(spec.get("scale", 1.0)))
        elif kind == "open_clip":
            func = OpenCLIPScoreReward(spec["model"], scale=float(spec.get("scale", 1.0)))
        else:
            raise ValueError(f"Unknown reward type {kind!r}; use attribute_classifier, clip or open_clip.")
        funcs.append(RegionReward(func) if region else func)
        weights.append(weight)
    return funcs, weights, classifier


def save_grids(
    before: torch.Tensor, after: torch.Tensor, prompts: list[str], n: int, directory: Path
) -> list[str]:
    """One PNG per prompt: top row the images before RL, bottom row after (same seeds)."""
    from diffusers.utils import make_image_grid
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, prompt in enumerate(prompts):
        rows = torch.cat([before[i * n : (i + 1) * n], after[i * n : (i + 1) * n]])
        pil = [
            Image.fromarray((x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()) for x in rows
        ]
        name = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:80] or f"prompt_{i}"
        path = directory / f"{i:02d}_{name}.png"
        make_image_grid(pil, rows=2, cols=n).save(path)
        paths.append(str(path))
    return paths


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


def run(recipe: dict[str, Any]) -> dict[str, Any]:
    """Run a DDPO recipe end to end; returns (and writes) the results."""
    from .config import MedDDPOConfig
    from .trainer import MedDDPOTrainer

    if recipe.get("threads"):
        torch.set_num_threads(int(recipe["threads"]))
    config = MedDDPOConfig.from_dict(recipe.get("ddpo", {}))
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = recipe.get("data", {})
    pipe_section = recipe.get("pipeline", {"source": "embedded"})
    t_start = time.perf_counter()

    ds = load_records(data)
    resolution = (
        int(data.get("image_size", 32))
        if pipe_section.get("source", "embedded") == "embedded"
        else int(data.get("resolution", 512))
    )
    images, captions, attributes = prepare_pairs(ds, resolution)
    pipe = build_pipeline(pipe_section, images, captions, output_dir)
    funcs, weights, classifier = build_rewards(recipe.get("rewards", []), images, attributes, output_dir)

    first_attrs = {c: a for c, a in zip(reversed(captions), reversed(attributes))}
    # Prompts that name no attribute (e.g. "… image: normal") carry no reward signal for attribute rewards.
    unique = sorted(c for c in set(captions) if first_attrs[c]) or sorted(set(captions))
    prompts = [{"prompt": c, "attributes": first_attrs[c]} for c in unique]
    trainer = MedDDPOTrainer(config, pipe, funcs, prompts=prompts, reward_weights=weights)

    def reward_of(imgs, ps):
        attrs = [first_attrs.get(p, []) for p in ps]
        return trainer.compute_rewards(imgs, ps, {"attributes": attrs})

    evaluation = recipe.get("evaluation", {})
    n, seed = int(evaluation.get("num_images_per_prompt", 4)), int(evaluation.get("seed", 1234))
    reference = images[: int(evaluation.get("num_reference", 256))] if evaluation.get("fid", True) else None
    results: dict[str, Any] = {"config": config.to_dict(), "prompts": unique}

    if config.sft_num_steps and not config.resume_from_checkpoint:
        t0 = time.perf_counter()
        losses = trainer.train_supervised(images, captions)
        results["sft"] = {
            "loss_first": losses[0],
            "loss_last10": sum(losses[-10:]) / len(losses[-10:]),
            "time_s": time.perf_counter() - t0,
        }
    results["before"], before = evaluate(
        trainer, unique, n, seed, reward_of, reference, classifier, evaluation.get("clip_model")
    )
    t0 = time.perf_counter()
    history = trainer.train()
    results["ddpo_time_s"] = time.perf_counter() - t0
    results["history"] = history
    results["after"], after = evaluate(
        trainer, unique, n, seed, reward_of, reference, classifier, evaluation.get("clip_model")
    )
    results["grids"] = save_grids(before, after, unique, n, output_dir / "grids")
    trainer.save_pretrained(output_dir / "lora")
    results["total_time_s"] = time.perf_counter() - t_start
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of `hf-meddiff ddpo`."""
    parser = argparse.ArgumentParser(
        prog="hf-meddiff ddpo", description="DDPO for text-to-image medical synthesis."
    )
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. trainers/ddpo_embedded.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. ddpo.num_epochs=5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = run(load_recipe(args.config, args.overrides))
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
