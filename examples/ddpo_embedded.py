"""DDPO on the embedded default, step by step with the Python API (offline, CPU, a few minutes).

1. MedPhantom dermoscopy-like images and captions ("dermoscopy image: melanoma, severe").
2. A tiny Stable Diffusion built from components, trained briefly on them (VAE, then UNet).
3. The embedded reward model: a small attribute classifier (diagnosis + severity) trained on the same images.
4. Stage one: supervised LoRA fine-tuning; then DDPO on the LoRA adapters.
5. Before/after images per prompt as PNG grids, and the mean reward before and after.

    python examples/ddpo_embedded.py --out outputs/ddpo-example --epochs 10

The same run from a recipe: `hf-meddiff ddpo --config trainers/ddpo_embedded.yaml`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hf_meddiff import MedDDPOConfig, MedDDPOTrainer
from hf_meddiff.data import make_phantom_dataset
from hf_meddiff.rewards.image_rewards import AttributeClassifierReward
from hf_meddiff.trainer.ddpo.script import save_grids
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/ddpo-example")
    parser.add_argument("--cases", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is fastest

    # 1. data
    ds = make_phantom_dataset(args.cases, seed=0, image_size=32, modalities=("dermoscopy",))
    records = [ds[i] for i in range(len(ds))]
    attributes = [record_attributes(r) for r in records]
    captions = [record_caption(r, a) for r, a in zip(records, attributes)]
    images = images_to_tensor([r["image"] for r in records], 32)

    # 2. the tiny Stable Diffusion
    pipe = build_tiny_stable_diffusion(seed=0)
    pretrain_tiny_vae(pipe.vae, images, num_steps=args.pretrain_steps // 2)
    pretrain_tiny_unet(pipe, images, captions, num_steps=args.pretrain_steps)

    # 3. the reward model
    names = sorted({a for attrs in attributes for a in attrs})
    classifier = build_attribute_classifier(names, image_size=32)
    train_attribute_classifier(classifier, images, attributes, num_steps=200)
    reward = AttributeClassifierReward(
        classifier, exclusive_groups=[["nevus", "melanoma", "angioma"], ["mild", "moderate", "severe"]]
    )

    # 4. stage one + DDPO
    prompts = sorted({c for c, a in zip(captions, attributes) if a})
    config = MedDDPOConfig(
        output_dir=args.out,
        num_epochs=args.epochs,
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
    trainer = MedDDPOTrainer(config, pipe, reward, prompts=prompts)
    trainer.train_supervised(images, captions)
    expanded = [p for p in prompts for _ in range(4)]
    before = trainer.generate(expanded, seed=1234)
    for stats in trainer.train():
        print(f"epoch {stats['epoch']:3d}  reward {stats['reward_mean']:.4f}  kl {stats['approx_kl']:.2e}")
    after = trainer.generate(expanded, seed=1234)

    # 5. evaluation
    print(
        f"mean reward on fixed seeds: before {sum(reward(before, expanded)) / len(expanded):.4f}, "
        f"after {sum(reward(after, expanded)) / len(expanded):.4f}"
    )
    grids = save_grids(before, after, prompts, 4, Path(args.out) / "grids")
    trainer.save_lora_weights(Path(args.out) / "lora")
    print(f"{len(grids)} before/after grids in {Path(args.out) / 'grids'}; LoRA in {Path(args.out) / 'lora'}")


if __name__ == "__main__":
    main()
