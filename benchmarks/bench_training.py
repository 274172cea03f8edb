"""SFT throughput: MedDiff masked-diffusion training vs. next-token training of a same-size LLaMA.

Both models are trained with the transformers `Trainer` (MedDiff through `MedDiffSFTTrainer`) on the same batch
size and sequence length of synthetic tokens; the script reports tokens/s (batch * seq_len per optimizer step,
median over the timed steps, runs interleaved to share the machine's load fairly) and their ratio. The target is
`diffusion_over_ar_tokens_per_s >= 0.95`: the diffusion loss must not cost more than next-token prediction.
On a CUDA GPU it also reports the model FLOPs utilisation (bf16) against the GPU's dense bf16 peak.

Usage:

    python benchmarks/bench_training.py                       # embedded preset, CPU
    python benchmarks/bench_training.py --preset tiny --steps 10 --json out.json
    python benchmarks/bench_training.py --device cuda --bf16 --batch_size 32 --seq_len 512
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion, MedDiffSFTConfig, MedDiffSFTTrainer

# Dense bf16 peak (TFLOP/s) by GPU name fragment, for MFU.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (synchronising CUDA so the time is the step's)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def synthetic_data(
    config: MedDiffConfig, num: int, seq_len: int, prompt_fraction: float, seed: int
) -> Dataset:
    """`num` sequences of `seq_len` ids: a prompt (text + image ids) and a text response, tasks mixed."""
    g = torch.Generator().manual_seed(seed)
    prompt_len = max(1, int(seq_len * prompt_fraction))
    rows: dict[str, list] = {"input_ids": [], "labels": [], "task_ids": []}
    for i in range(num):
        ids = torch.randint(20, config.text_vocab_size, (seq_len,), generator=g)
        grid = min(config.num_image_tokens, prompt_len - 1)
        ids[1 : 1 + grid] = torch.randint(
            config.image_token_offset, config.image_token_end, (grid,), generator=g
        )
        labels = ids.clone()
        labels[:prompt_len] = -100
        rows["input_ids"].append(ids.tolist())
        rows["labels"].append(labels.tolist())
        rows["task_ids"].append(i % 4 if i % 4 != 2 else 0)
    return Dataset.from_dict(rows)


def llama_twin(config: MedDiffConfig) -> LlamaConfig:
    """A causal LLaMA with MedDiff's backbone sizes and vocabulary."""
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
    )


def run_once(kind: str, model, data: Dataset, opts, output_dir: str) -> list[float]:
    common = dict(
        output_dir=output_dir,
        per_device_train_batch_size=opts.batch_size,
        max_steps=opts.warmup + opts.steps,
        learning_rate=1e-4,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=opts.device == "cpu",
        bf16=opts.bf16,
        dataloader_drop_last=True,
        seed=0,
    )
    timer = StepTimer()
    if kind == "diffusion":
        args = MedDiffSFTConfig(**common, log_task_losses=True)
        trainer = MedDiffSFTTrainer(model=model, args=args, train_dataset=data, callbacks=[timer])
    else:
        ar_data = data.map(lambda row: {"labels": row["input_ids"]}).remove_columns(["task_ids"])
        args = TrainingArguments(**common)
        trainer = Trainer(model=model, args=args, train_dataset=ar_data, callbacks=[timer])
    trainer.train()
    return timer.times[opts.warmup :]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="embedded", help="MedDiffConfig preset (tiny, embedded)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=192)
    parser.add_argument(
        "--prompt_fraction", type=float, default=0.5, help="share of each sequence that is prompt"
    )
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results to this JSON file")
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)

    config = MedDiffConfig.from_preset(opts.preset, max_position_embeddings=max(1024, opts.seq_len))
    torch.manual_seed(0)
    models = {"diffusion": MedDiffForMaskedDiffusion(config), "ar": LlamaForCausalLM(llama_twin(config))}
    for model in models.values():
        model.config._attn_implementation = "sdpa"
    num_params = {kind: sum(p.numel() for p in m.parameters()) for kind, m in models.items()}
    data = synthetic_data(
        config, opts.batch_size * (opts.warmup + opts.steps), opts.seq_len, opts.prompt_fraction, 0
    )

    times: dict[str, list[float]] = {"diffusion": [], "ar": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(opts.repeats):
            for kind in ("diffusion", "ar"):
                times[kind] += run_once(kind, models[kind], data, opts, tmp)

    tokens_per_step = opts.batch_size * opts.seq_len
    result: dict = {
        "preset": opts.preset,
        "device": opts.device if opts.device == "cpu" else torch.cuda.get_device_name(),
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "batch_size": opts.batch_size,
        "seq_len": opts.seq_len,
        "prompt_fraction": opts.prompt_fraction,
        "timed_steps_per_model": len(times["diffusion"]),
        "num_parameters": num_params,
    }
    for kind in ("diffusion", "ar"):
        median = statistics.median(times[kind])
        result[f"{kind}_step_s"] = median
        result[f"{kind}_tokens_per_s"] = tokens_per_step / median
    result["diffusion_over_ar_tokens_per_s"] = result["diffusion_tokens_per_s"] / result["ar_tokens_per_s"]

    if opts.device.startswith("cuda") and opts.bf16:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak is not None:
            for kind in ("diffusion", "ar"):
                # 6 N per token (forward + backward) + attention scores/values: 12 * layers * hidden * seq_len.
                flops_per_token = (
                    6 * num_params[kind] + 12 * config.num_hidden_layers * config.hidden_size * opts.seq_len
                )
                result[f"{kind}_mfu_bf16"] = result[f"{kind}_tokens_per_s"] * flops_per_token / (peak * 1e12)

    print(f"{'model':<12}{'params':>12}{'step (s)':>12}{'tokens/s':>14}")
    for kind, label in (("diffusion", "MedDiff"), ("ar", "LLaMA (AR)")):
        print(
            f"{label:<12}{num_params[kind]:>12,}{result[f'{kind}_step_s']:>12.4f}{result[f'{kind}_tokens_per_s']:>14.1f}"
        )
    print(f"diffusion / AR tokens/s = {result['diffusion_over_ar_tokens_per_s']:.3f} (target >= 0.95)")
    for kind in ("diffusion", "ar"):
        if f"{kind}_mfu_bf16" in result:
            print(f"{kind} MFU (bf16) = {result[f'{kind}_mfu_bf16']:.1%}")
    if opts.json_path:
        with open(opts.json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
