"""A converted tiny MMaDA (with its MAGVIT-v2 image tokenizer) runs MedDiff's SFT, generation and one GRPO step
unchanged; converting a sharded checkpoint holds about one tensor, not the checkpoint."""

from __future__ import annotations

import pytest
import torch

from convert_fixtures import build_llada, build_magvit, build_mmada, save_sharded
from hf_meddiff import MedDiffForMaskedDiffusion, MedDiffProcessor, MedDiffSFTConfig, MedDiffSFTTrainer
from hf_meddiff.data import make_phantom_dataset
from hf_meddiff.models.meddiff.convert_llada_meddiff import convert_llada
from hf_meddiff.trainer.grpo import DiffusionGRPOConfig, DiffusionGRPOTrainer


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmada")
    build_mmada(root / "src")
    build_magvit(root / "magvit")
    convert_llada(root / "src", root / "dst", mmada=True, image_tokenizer=str(root / "magvit"))
    return root / "dst"


def test_sft_steps_change_the_weights_and_lower_nothing_to_nan(converted, tmp_path):
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion.from_pretrained(converted)
    processor = MedDiffProcessor.from_pretrained(converted)
    cases = make_phantom_dataset(4, seed=0, image_size=32)
    batch = processor(images=list(cases["image"]), text=list(cases["question"]), options=list(cases["options"]),
                      responses=list(cases["answer"]), task="vqa")  # fmt: skip
    from datasets import Dataset

    rows = {"input_ids": [r.tolist() for r in batch["input_ids"]], "labels": [r.tolist() for r in batch["labels"]],
            "task_ids": batch["task_ids"].tolist()}  # fmt: skip
    before = model.model.layers[0].mlp.up_proj.weight.clone()
    args = MedDiffSFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=2, max_steps=2,
                            learning_rate=1e-3, report_to="none", use_cpu=True, save_strategy="no",
                            disable_tqdm=True)  # fmt: skip
    trainer = MedDiffSFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows))
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.state.log_history[-1]["train_loss"]))
    assert not torch.equal(before, model.model.layers[0].mlp.up_proj.weight)


def test_text_and_image_generation_run_on_the_converted_model(converted):
    model = MedDiffForMaskedDiffusion.from_pretrained(converted).eval()
    processor = MedDiffProcessor.from_pretrained(converted)
    config = model.config
    prompt = torch.tensor([[config.bos_token_id, config.mmu_token_id, config.soi_token_id,
                            *(torch.arange(16) + config.image_token_offset).tolist(), config.eoi_token_id, 61, 62]])  # fmt: skip
    out = model.generate(prompt, gen_length=8, block_length=4, eos_early_stop=False)
    assert out.shape == (1, 8) and (out != config.mask_token_id).all()
    t2i = torch.tensor([[config.bos_token_id, config.t2i_token_id, 61, 62, config.soi_token_id]])
    images = model.generate_images(t2i, image_steps=2, generator=torch.Generator().manual_seed(0))
    codes = images.sequences if hasattr(images, "sequences") else images
    assert codes.shape[-1] == 16
    assert processor.decode_images(codes.reshape(1, 16))[0].size == (32, 32)


def test_one_grpo_step_on_the_converted_model(converted, tmp_path):
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion.from_pretrained(converted)
    processor = MedDiffProcessor.from_pretrained(converted)
    cases = make_phantom_dataset(4, seed=0, image_size=32)

    def spread_reward(completions, completion_ids, **kwargs):
        return [len(set(ids)) / len(ids) for ids in completion_ids]

    args = DiffusionGRPOConfig(
        str(tmp_path / "grpo"), num_generations=4, per_device_train_batch_size=4, max_steps=1, tasks=["vqa"],
        completion_length_per_task={"vqa": 16}, report_to="none", save_strategy="no", use_cpu=True,
        learning_rate=1e-2, image_steps=2, gradient_checkpointing=False, logging_steps=1,
    )  # fmt: skip
    before = model.get_input_embeddings().weight.clone()
    trainer = DiffusionGRPOTrainer(
        model, [spread_reward], args=args, train_dataset=cases, processing_class=processor
    )
    trainer.train()
    assert not torch.equal(before, model.get_input_embeddings().weight)


def test_converting_a_sharded_checkpoint_streams_it(tmp_path):
    """Peak Python-allocated memory while converting stays near the largest tensor, not the checkpoint."""
    import tracemalloc

    config, weights = build_llada(tmp_path / "src", d_model=256, mlp_hidden_size=1024, n_layers=6, n_heads=4,
                                  n_kv_heads=4)  # fmt: skip
    checkpoint_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    largest = max(t.numel() * t.element_size() for t in weights.values())
    for shard in (tmp_path / "src").glob("model-*.safetensors"):
        shard.unlink()
    save_sharded(weights, tmp_path / "src", num_shards=6)
    del weights
    tracemalloc.start()
    convert_llada(tmp_path / "src", tmp_path / "dst", image_codebook_size=64, image_grid_size=4)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < checkpoint_bytes / 2 and peak < 6 * largest, (peak, checkpoint_bytes, largest)
