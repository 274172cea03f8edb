"""GRPO cost: DiffusionGRPOTrainer on MedDiff vs TRL's GRPOTrainer on a same-size LlamaForCausalLM.

Both trainers run the same number of steps with the same group size, prompts of the same token length, the same
completion length (`--completion-length`, default 256: the AR model is held to it with `min_new_tokens`, the
diffusion canvas is that long) and the same reward. Runs alternate (diffusion, AR, diffusion, AR, ...) so machine
load hits both alike; the medians of the per-step times (first step of each run dropped) and their ratio are
reported. Also:

- forward passes per completion per iteration in the log-prob pass (measured with a hook on the backbone, for the
  chosen estimator);
- estimator quality: on a tiny model and a 6-token completion, each estimator's mean and variance over many mask
  seeds against the exact ELBO (every mask enumerated);
- peak memory of a QLoRA GRPO step at LLaDA-8B dimensions, sequence 1024: measured on a CUDA GPU when one is
  present (`--device cuda`), otherwise ESTIMATED from the parameter counts of a meta-device model (labelled so).

Usage:

    python benchmarks/bench_grpo.py                                   # embedded size, CPU, 256 tokens
    python benchmarks/bench_grpo.py --steps 3 --repeats 2 --json grpo.json
    python benchmarks/bench_grpo.py --skip-speed                      # estimator quality + memory only
    python benchmarks/bench_grpo.py --policy outputs/demo/model --task report   # a policy that answers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile

import torch
from datasets import Dataset

sys.path.insert(0, os.path.dirname(__file__))
from bench_training import StepTimer, llama_twin  # noqa: E402

from hf_meddiff import (  # noqa: E402
    MedDiffConfig,
    MedDiffForMaskedDiffusion,
    MedDiffImageProcessor,
    MedDiffImageTokenizer,
    MedDiffProcessor,
    train_text_tokenizer,
)
from hf_meddiff.data import make_phantom_dataset  # noqa: E402
from hf_meddiff.models.meddiff.likelihood_meddiff import ESTIMATORS, estimate_elbo, exact_elbo  # noqa: E402


def spread_reward(completions, completion_ids, **kwargs):
    """A reward that differs within every group, so both trainers always take a real gradient step."""
    return [len(set(ids)) / max(len(ids), 1) for ids in completion_ids]


def build(preset: str, image_size: int, num_cases: int):
    cases = make_phantom_dataset(num_cases, seed=0, image_size=image_size)
    tokenizer = train_text_tokenizer(list(cases["report"]) + list(cases["question"]), vocab_size=600)
    vq = MedDiffImageTokenizer.from_config_preset("tiny" if image_size <= 32 else "embedded")
    processor = MedDiffProcessor(MedDiffImageProcessor(size=image_size), tokenizer, image_tokenizer=vq)
    config = MedDiffConfig.from_preset(preset, **processor.model_config_kwargs())
    return cases, processor, config


def build_policy(path: str, num_cases: int):
    """A trained policy folder (model + processor), e.g. the demo's `outputs/demo/model`, with MedPhantom cases
    at its image size."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    cases = make_phantom_dataset(num_cases, seed=1, image_size=int(processor.image_processor.size))
    return cases, processor, MedDiffForMaskedDiffusion.from_pretrained(path).config


def diffusion_run(cases, processor, config, opts, output_dir) -> tuple[list[float], float]:
    from hf_meddiff.trainer.grpo import DiffusionGRPOConfig, DiffusionGRPOTrainer

    torch.manual_seed(0)
    model = (
        MedDiffForMaskedDiffusion.from_pretrained(opts.policy)
        if opts.policy
        else MedDiffForMaskedDiffusion(config)
    )
    args = DiffusionGRPOConfig(
        output_dir, max_steps=opts.steps, per_device_train_batch_size=opts.batch_size,
        num_generations=opts.num_generations, completion_length_per_task={opts.task: opts.completion_length},
        tasks=[opts.task],
        block_length=opts.block_length, diffusion_steps=opts.diffusion_steps, threshold=opts.threshold,
        cache_mode=opts.cache_mode, estimator=opts.estimator, report_to="none", save_strategy="no",
        logging_steps=1, use_cpu=opts.device == "cpu", gradient_checkpointing=False, learning_rate=1e-5,
    )  # fmt: skip
    trainer = DiffusionGRPOTrainer(
        model, [spread_reward], args=args, train_dataset=cases, processing_class=processor
    )
    timer = StepTimer()
    trainer.add_callback(timer)
    calls = {"rows": 0}

    def count(module, inputs, kwargs):
        if torch.is_grad_enabled():  # the loss pass (rollouts and old log-probs run without gradients)
            ids = kwargs.get("input_ids", inputs[0] if inputs else None)
            calls["rows"] += int(ids.shape[0])

    handle = trainer.model.model.register_forward_pre_hook(count, with_kwargs=True)
    trainer.train()
    handle.remove()
    completions = opts.steps * opts.batch_size
    return timer.times, calls["rows"] / completions


def ar_run(cases, processor, config, opts, output_dir, prompt_length: int) -> list[float]:
    from transformers import LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = processor.tokenizer
    filler = " ".join(["image"] * prompt_length)
    prompts = []
    for question in cases["question"]:
        ids = tokenizer(f"{question} {filler}", add_special_tokens=False)["input_ids"][:prompt_length]
        prompts.append(tokenizer.decode(ids))
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_twin(config))
    args = GRPOConfig(
        output_dir, max_steps=opts.steps, per_device_train_batch_size=opts.batch_size,
        num_generations=opts.num_generations, max_completion_length=opts.completion_length,
        generation_kwargs={"min_new_tokens": opts.completion_length}, report_to="none", save_strategy="no",
        logging_steps=1, use_cpu=opts.device == "cpu", gradient_checkpointing=False, learning_rate=1e-5,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model, [spread_reward], args=args, train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
    )  # fmt: skip
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.times


def estimator_quality(num_draws: int) -> dict:
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()
    ids = torch.tensor([[1, 9, 7, 20, 21, 8, 30, 31, 40, 41, 2, 2]])
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, 6:] = True
    exact = exact_elbo(model, ids, response)
    out = {"exact_elbo": exact, "response_tokens": int(response.sum())}
    settings = [(name, {}) for name in ESTIMATORS] + [("coupled_full_range", {"mask_range": (0.0, 1.0)})]
    for name, kwargs in settings:
        estimator = "coupled" if name.startswith("coupled") else name
        draws = torch.cat(
            [
                estimate_elbo(model, ids, response, estimator=estimator, seeds=[s * 7919], **kwargs)
                for s in range(num_draws)
            ]
        )
        out[name] = {"bias": draws.mean().item() - exact, "variance": draws.var().item()}
    return out


def qlora_memory(device: str, seq_len: int, lora_rank: int) -> dict:
    """Peak memory of one QLoRA GRPO loss step at LLaDA-8B dimensions (4096 hidden, 32 layers, 12288 MLP,
    126464 text + 8192 image vocabulary), micro-batch 1, gradient checkpointing, fused LM head."""
    dims = dict(
        hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096, text_vocab_size=126464, image_codebook_size=8192,
        image_grid_size=32,
    )  # fmt: skip
    config = MedDiffConfig(**dims, mask_token_id=4)
    with torch.device("meta"):
        model = MedDiffForMaskedDiffusion(config)
    linear = sum(
        m.weight.numel()
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n != "lm_head"
    )
    other = sum(p.numel() for p in model.parameters()) - linear
    lora = sum(lora_rank * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n != "lm_head")  # fmt: skip
    gib = 1024**3
    weights = linear * (0.5 + 4 / 64) + other * 2  # NF4 + absmax per 64-block; embeddings and head in bf16
    adapters = lora * (4 + 4 + 4 + 4)  # fp32 adapter weight, its gradient and two Adam moments
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    checkpoints = layers * seq_len * h * 2  # one bf16 hidden state per layer kept for the backward
    layer_recompute = seq_len * (10 * h + 3 * i) * 2  # q/k/v/o, norms, SwiGLU intermediates of one layer
    head = 4096 * config.vocab_size * 4  # fused LM head: one fp32 logits tile of 4096 rows
    estimate = (weights + adapters + checkpoints + layer_recompute + head) / gib
    result = {
        "kind": "estimate (meta-device parameter counts; no GPU measured)",
        "parameters_billion": (linear + other) / 1e9,
        "lora_parameters_million": lora / 1e6,
        "weights_gib": weights / gib,
        "activations_gib": (checkpoints + layer_recompute + head) / gib,
        "peak_gib": estimate,
        "fits_24_gib": estimate < 24,
    }
    if device == "cuda" and torch.cuda.is_available():
        result["kind"] = "estimate; run on a GPU with the real checkpoint to measure"
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="embedded", help="size of an untrained policy (without --policy)")
    parser.add_argument("--policy", default=None, help="a trained MedDiff folder, e.g. outputs/demo/model")
    parser.add_argument("--task", default="vqa", choices=["vqa", "report", "reasoning"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--completion-length", type=int, default=256)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4, help="completions per step (per device)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per trainer")
    parser.add_argument("--estimator", default="coupled", choices=ESTIMATORS)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--diffusion-steps", type=int, default=None, help="None: one token per step")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--cache-mode", default="dual")
    parser.add_argument("--estimator-draws", type=int, default=400)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", default=None)
    opts = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    tmp_root = tempfile.gettempdir()
    result: dict = {"machine": platform.platform(), "threads": torch.get_num_threads(), "options": vars(opts)}
    if not opts.skip_speed:
        if opts.policy:
            cases, processor, config = build_policy(opts.policy, 64)
        else:
            cases, processor, config = build(opts.preset, opts.image_size, 64)
        from hf_meddiff.trainer.grpo import DiffusionGRPOConfig
        from hf_meddiff.trainer.grpo.tasks import build_grpo_dataset, prompt_token_ids

        rows = build_grpo_dataset(
            cases.select(range(1)),
            processor,
            DiffusionGRPOConfig(tmp_root, report_to="none", use_cpu=True, tasks=[opts.task]),
        )
        prompt_length = len(prompt_token_ids(rows[0], processor))
        result["prompt_tokens"] = prompt_length
        times: dict[str, list[float]] = {"diffusion": [], "ar": []}
        passes = []
        with tempfile.TemporaryDirectory() as tmp:
            for repeat in range(opts.repeats):
                step_times, per_completion = diffusion_run(cases, processor, config, opts, f"{tmp}/d{repeat}")
                times["diffusion"] += step_times[1:]
                passes.append(per_completion)
                print(f"[repeat {repeat}] diffusion steps: {[round(t, 2) for t in step_times]}", flush=True)
                step_times = ar_run(cases, processor, config, opts, f"{tmp}/a{repeat}", prompt_length)
                times["ar"] += step_times[1:]
                print(
                    f"[repeat {repeat}] autoregressive steps: {[round(t, 2) for t in step_times]}", flush=True
                )
        for kind, values in times.items():
            result[f"{kind}_step_s"] = statistics.median(values)
            result[f"{kind}_s_per_completion"] = statistics.median(values) / opts.batch_size
        result["diffusion_over_ar_step_time"] = result["diffusion_step_s"] / result["ar_step_s"]
        result["logprob_passes_per_completion"] = statistics.median(passes)
    result["estimator_quality"] = estimator_quality(opts.estimator_draws)
    result["qlora_llada8b_seq1024"] = qlora_memory(opts.device, 1024, 16)

    print(json.dumps(result, indent=2, default=str))
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, default=str)
    return result


if __name__ == "__main__":
    main()
