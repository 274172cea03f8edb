"""Subgroup augmentation: do synthetic images of an under-represented subgroup help a downstream classifier?

1. MedPhantom dermoscopy cases; the task is the diagnosis (nevus / melanoma / angioma). In the training split
   the `--rare` diagnosis is kept at `--keep-fraction` (an under-represented subgroup); the test split is not
   touched.
2. A text-to-image generator trained only on that imbalanced training split: the tiny Stable Diffusion of the
   embedded default, stage-one LoRA, then `--ddpo-epochs` of DDPO with an attribute-classifier reward (trained on
   the same split). Or pass `--generator DIR` (a `hf-meddiff ddpo` output folder with `base_pipeline/` and
   `lora/`) to use an existing one.
3. `--synthetic` images per severity of the rare diagnosis ("dermoscopy image: melanoma, mild", …).
4. The same small classifier trained twice, with and without the synthetic images (same seed and steps).
5. Accuracy per subgroup (diagnosis / severity) on the test split, printed and written to `results.json`.

    python examples/subgroup_augmentation.py --out outputs/subgroup-augmentation
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from hf_meddiff import MedDDPOConfig, MedDDPOTrainer
from hf_meddiff.data import make_phantom_dataset
from hf_meddiff.rewards.image_rewards import AttributeClassifierReward
from hf_meddiff.trainer.ddpo.tiny import (
    build_attribute_classifier,
    build_tiny_stable_diffusion,
    images_to_tensor,
    pretrain_tiny_unet,
    pretrain_tiny_vae,
    record_attributes,
    record_caption,
    train_attribute_classifier,
)

DIAGNOSES = ("nevus", "melanoma", "angioma")
SEVERITIES = ("mild", "moderate", "severe")


def load_cases(num_cases: int, seed: int):
    ds = make_phantom_dataset(num_cases, seed=seed, image_size=32, modalities=("dermoscopy",))
    cases = []
    for i in range(len(ds)):
        record = ds[i]
        if not record["findings"]:
            continue
        cases.append(
            {
                "image": record["image"],
                "diagnosis": record["findings"][0],
                "severity": record["severity"],
                "split": "train" if record["split"] == "train" else "test",
                "attributes": record_attributes(record),
                "caption": record_caption(record),
            }
        )
    return cases


def build_generator(train, args):
    images = images_to_tensor([c["image"] for c in train], 32)
    captions = [c["caption"] for c in train]
    attributes = [c["attributes"] for c in train]
    if args.generator:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(Path(args.generator) / "base_pipeline")
        config = MedDDPOConfig(output_dir=str(Path(args.out) / "generator"), num_epochs=0, use_lora=False)
        trainer = MedDDPOTrainer(
            config, pipe, lambda images, prompts, **kw: [0.0] * len(prompts), prompts=captions
        )
        pipe.load_lora_weights(Path(args.generator) / "lora")
        return trainer
    pipe = build_tiny_stable_diffusion(seed=args.seed)
    pretrain_tiny_vae(pipe.vae, images, num_steps=args.pretrain_steps // 2, seed=args.seed)
    pretrain_tiny_unet(pipe, images, captions, num_steps=args.pretrain_steps, seed=args.seed)
    names = sorted({a for attrs in attributes for a in attrs})
    classifier = build_attribute_classifier(names, image_size=32)
    train_attribute_classifier(classifier, images, attributes, num_steps=200, seed=args.seed)
    reward = AttributeClassifierReward(classifier, exclusive_groups=[list(DIAGNOSES), list(SEVERITIES)])
    config = MedDDPOConfig(
        output_dir=str(Path(args.out) / "generator"),
        seed=args.seed,
        num_epochs=args.ddpo_epochs,
        sample_num_steps=10,
        sample_guidance_scale=3.0,
        sample_batch_size=16,
        sample_num_batches_per_epoch=2,
        train_batch_size=16,
        train_learning_rate=1e-3,
        lora_rank=8,
        lora_alpha=8,
        per_prompt_stat_tracking_min_count=8,
        sft_num_steps=100,
        sft_batch_size=32,
    )
    rare_prompts = [f"dermoscopy image: {args.rare}, {s}" for s in SEVERITIES]
    trainer = MedDDPOTrainer(config, pipe, reward, prompts=rare_prompts)
    trainer.train_supervised(images, captions)
    for stats in trainer.train():
        print(f"  generator DDPO epoch {stats['epoch']}: reward {stats['reward_mean']:.4f}")
    return trainer


def train_classifier(images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int):
    model = build_attribute_classifier(list(DIAGNOSES), image_size=32, seed=seed)
    model.config.problem_type = "single_label_classification"
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (32,), generator=generator)
        x = images[idx]
        x = torch.where((torch.rand(len(idx), generator=generator) < 0.5)[:, None, None, None], x.flip(-1), x)
        loss = model(pixel_values=2 * x - 1, labels=labels[idx]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def per_subgroup_accuracy(model, test) -> dict[str, float]:
    images = images_to_tensor([c["image"] for c in test], 32)
    predictions = model(pixel_values=2 * images - 1).logits.argmax(-1).tolist()
    hits = defaultdict(list)
    for case, pred in zip(test, predictions):
        correct = DIAGNOSES[pred] == case["diagnosis"]
        hits[f"{case['diagnosis']}/{case['severity']}"].append(correct)
        hits[case["diagnosis"]].append(correct)
        hits["all"].append(correct)
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/subgroup-augmentation")
    parser.add_argument("--cases", type=int, default=900)
    parser.add_argument("--rare", default="melanoma", choices=DIAGNOSES)
    parser.add_argument("--keep-fraction", type=float, default=0.1)
    parser.add_argument(
        "--synthetic", type=int, default=48, help="synthetic images per rare subgroup (severity)"
    )
    parser.add_argument(
        "--generator", help="a `hf-meddiff ddpo` output folder to use instead of training one"
    )
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--ddpo-epochs", type=int, default=5)
    parser.add_argument("--classifier-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    cases = load_cases(args.cases, args.seed)
    test = [c for c in cases if c["split"] == "test"]
    all_train = [c for c in cases if c["split"] == "train"]
    budget = max(1, round(args.keep_fraction * sum(c["diagnosis"] == args.rare for c in all_train)))
    train, kept_rare = [], 0
    for c in all_train:
        if c["diagnosis"] == args.rare:
            if kept_rare >= budget:
                continue
            kept_rare += 1
        train.append(c)
    print(f"train: {len(train)} cases ({kept_rare} {args.rare}); test: {len(test)} cases")

    trainer = build_generator(train, args)
    prompts = [f"dermoscopy image: {args.rare}, {s}" for s in SEVERITIES for _ in range(args.synthetic)]
    synthetic = torch.cat(
        [trainer.generate(prompts[i : i + 32], seed=10_000 + i) for i in range(0, len(prompts), 32)]
    )

    real_images = images_to_tensor([c["image"] for c in train], 32)
    real_labels = torch.tensor([DIAGNOSES.index(c["diagnosis"]) for c in train])
    synthetic_labels = torch.full((len(synthetic),), DIAGNOSES.index(args.rare))
    results = {
        "settings": vars(args),
        "train_cases": len(train),
        "rare_kept": kept_rare,
        "test_cases": len(test),
    }
    for name, images, labels in (
        ("real_only", real_images, real_labels),
        (
            "real_plus_synthetic",
            torch.cat([real_images, synthetic]),
            torch.cat([real_labels, synthetic_labels]),
        ),
    ):
        model = train_classifier(images, labels, args.classifier_steps, args.seed)
        results[name] = per_subgroup_accuracy(model, test)

    print(f"{'subgroup':24s} {'real only':>10s} {'+ synthetic':>12s}")
    for key in results["real_only"]:
        print(f"{key:24s} {results['real_only'][key]:10.3f} {results['real_plus_synthetic'][key]:12.3f}")
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
