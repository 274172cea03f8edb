"""Generation benchmark: the vanilla LLaDA sampler vs the Fast-dLLM fast path vs an autoregressive model.

One run, one machine, one process:

1. **Quality model.** A small MedDiff model (hidden 128, 4 layers, ~1M parameters; `--hidden-size` etc. change it)
   is trained briefly (a few hundred steps, CPU) on
   MedPhantom cases (`hf_meddiff.data.make_phantom_dataset`): multiple-choice VQA (response: the correct option's
   text, e.g. `"ultrasound"`; accuracy = exact match)
   and report writing (response = the report), responses padded with EOS to `--gen-length` as in LLaDA SFT.
   Images enter as 8 x 8 tokens of a pooled-intensity quantiser (mean grey level x colour, 64 codes) that stands
   in for a trained VQ tokenizer, so the benchmark needs no image-tokenizer training.
2. **Text speed** on report prompts at `--gen-length` (256): tokens/s (gen_length canvas tokens per second, the
   dLLM convention; also the rate of tokens up to the first EOS) and model forward passes per generated token,
   for (a) the vanilla sampler (one token per step, full recompute, no early stop), (b) the fast path
   (confidence threshold + dual block cache + EOS early stop), (b') the fast path without early stop, and
   (c) a `LlamaForCausalLM` of identical size generating the same number of new tokens with transformers
   `generate` and its KV cache (EOS disabled so it generates them all).
3. **Quality retention** on held-out cases, fast vs vanilla: accuracy of the generated reports (the report names the
   image's modality and anatomy; `accuracy_drop_points` in the JSON) and of the VQA answers, and exact output
   agreement.
4. **Images**: a model with a 16 x 16 grid (256 image tokens), MaskGIT with classifier-free guidance: forward
   passes per image (the conditional and unconditional rows share one pass) and images/s.

Run (CPU, a few minutes):

    python benchmarks/bench_generation.py --json benchmark_generation.json

`--quick` shrinks everything for a smoke run (numbers then mean little).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
from hf_meddiff.constants import DEFAULT_TOKEN_IDS, MODALITY_NAMES, TASK_TOKENS
from hf_meddiff.models.meddiff.tokens_meddiff import (
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    EOI_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    SOI_TOKEN,
    USER_TOKEN,
)

PAD, BOS, EOS = DEFAULT_TOKEN_IDS[PAD_TOKEN], DEFAULT_TOKEN_IDS[BOS_TOKEN], DEFAULT_TOKEN_IDS[EOS_TOKEN]
SOI, EOI = DEFAULT_TOKEN_IDS[SOI_TOKEN], DEFAULT_TOKEN_IDS[EOI_TOKEN]
USER, ASSISTANT = DEFAULT_TOKEN_IDS[USER_TOKEN], DEFAULT_TOKEN_IDS[ASSISTANT_TOKEN]
MMU, T2I = DEFAULT_TOKEN_IDS[TASK_TOKENS["mmu"]], DEFAULT_TOKEN_IDS[TASK_TOKENS["t2i"]]
LETTERS = "ABCD"
IMAGE_CODES = 64  # 16 grey levels x 4 colour classes
REPORT_QUESTION = "Write the radiology report for this image."


# ------------------------------------------------------------------------------------------------ data


def image_codes(image, grid: int = 8) -> list[int]:
    """Pooled-intensity quantiser: grid x grid cells -> 16 mean-grey levels x 4 colour classes (64 codes)."""
    arr = np.asarray(image.convert("RGB").resize((grid, grid), resample=2), dtype=np.float32) / 255.0
    grey = arr.mean(-1)
    level = np.clip((grey * 16).astype(int), 0, 15)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    colour = np.where(np.abs(r - b) < 0.06, 0, np.where(r > b, np.where(r > g + 0.05, 1, 2), 3))
    return (level * 4 + colour).reshape(-1).tolist()


@dataclass
class Example:
    prompt: list[int]
    response: list[int]  # without EOS padding
    answer: str = ""  # VQA: the correct option text; report: "modality name|anatomy"


def build_examples(ds, tokenizer, offset: int) -> tuple[list[Example], list[Example]]:
    vqa, reports = [], []
    for row in ds:
        image = [offset + c for c in image_codes(row["image"])]
        head = [BOS, MMU, SOI, *image, EOI, USER]
        options = " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(row["options"]))
        question = tokenizer(f"{row['question']} Options: {options}", add_special_tokens=False)["input_ids"]
        correct = row["options"][LETTERS.index(row["answer"])]
        answer = tokenizer(correct, add_special_tokens=False)["input_ids"]
        vqa.append(Example(head + question + [ASSISTANT], answer, correct))
        ask = tokenizer(REPORT_QUESTION, add_special_tokens=False)["input_ids"]
        report = tokenizer(row["report"], add_special_tokens=False)["input_ids"]
        facts = (MODALITY_NAMES[row["modality"]].lower(), row["anatomy"].lower())
        reports.append(Example(head + ask + [ASSISTANT], report, "|".join(facts)))
    return vqa, reports


def training_batch(
    examples: list[Example], gen_length: int, rng: np.random.Generator, eos_targets: int = 16
) -> dict[str, torch.Tensor]:
    """Right-padded batch; the response is the answer, EOS, then EOS padding to `gen_length` (LLaDA SFT).

    Every response position is masked with probability t ~ U(1e-3, 1) as in LLaDA, but only the answer, its EOS and
    `eos_targets` random padding positions carry a loss: an unbiased subsample of the EOS-padding terms that keeps
    a 5-token answer from being drowned by 250 padding targets in a few hundred steps of training.
    """
    rows, labels, noise = [], [], []
    for ex in examples:
        response = (ex.response + [EOS] * gen_length)[:gen_length]
        content = min(len(ex.response) + 1, gen_length)
        padding = np.arange(content, gen_length)
        scored = set(range(content)) | set(
            rng.choice(padding, min(eos_targets, len(padding)), replace=False).tolist()
        )
        t = 1e-3 + (1 - 1e-3) * rng.random()
        rows.append(ex.prompt + response)
        labels.append(
            [-100] * len(ex.prompt) + [tok if i in scored else -100 for i, tok in enumerate(response)]
        )
        noise.append([False] * len(ex.prompt) + (rng.random(gen_length) < t).tolist())
    width = max(map(len, rows))
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    noise_mask = torch.tensor([r + [False] * (width - len(r)) for r in noise])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "labels": lab, "attention_mask": mask, "noise_mask": noise_mask}


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def train(model, vqa, reports, steps: int, batch_size: int, gen_length: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    model.train()
    losses = []
    for _ in range(steps):
        picks = [vqa[i] for i in rng.integers(0, len(vqa), batch_size // 2)]
        picks += [reports[i] for i in rng.integers(0, len(reports), batch_size - batch_size // 2)]
        loss = model(**training_batch(picks, gen_length, rng), return_logits=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if len(losses) % 50 == 0:
            print(f"  step {len(losses)}/{steps}: loss {np.mean(losses[-50:]):.3f}", flush=True)
    model.eval()
    return losses


# ------------------------------------------------------------------------------------------------ timing


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def answer_lengths(sequences: torch.Tensor) -> int:
    """Tokens up to and including the first EOS (the pad that replaced it), summed over rows."""
    total = 0
    for row in sequences.tolist():
        total += next((i + 1 for i, t in enumerate(row) if t == PAD), len(row))
    return total


def text_speed(model, prompts, gen_length, block_length, threshold, cache_mode):
    variants = {
        "vanilla": {"eos_early_stop": False},
        "fast": {"threshold": threshold, "cache_mode": cache_mode},
        "fast_no_early_stop": {"threshold": threshold, "cache_mode": cache_mode, "eos_early_stop": False},
    }
    results = {}
    for name, options in variants.items():
        seconds, passes, answer_tokens = 0.0, 0, 0
        for prompt in prompts:
            ids = torch.tensor([prompt])
            t, out = timed(
                lambda ids=ids, options=options: model.generate(
                    ids,
                    gen_length=gen_length,
                    block_length=block_length,
                    return_dict_in_generate=True,
                    **options,
                )
            )
            seconds += t
            passes += out.num_forward_passes
            answer_tokens += answer_lengths(out.sequences)
        tokens = gen_length * len(prompts)
        results[name] = {
            "seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "answer_tokens_per_s": answer_tokens / seconds,
            "passes_per_token": passes / tokens,
            "passes_per_sequence": passes / len(prompts),
        }
    return results


def ar_speed(config: MedDiffConfig, prompts, gen_length):
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            max_position_embeddings=config.max_position_embeddings,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
        )
    ).eval()
    seconds = 0.0
    calls = []
    hook = llama.register_forward_hook(lambda *a: calls.append(1))
    for prompt in prompts:
        ids = torch.tensor([prompt])
        t, out = timed(
            lambda ids=ids: llama.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=gen_length,
                min_new_tokens=gen_length,
                do_sample=False,
                use_cache=True,
                pad_token_id=PAD,
            )
        )
        assert out.shape[1] - ids.shape[1] == gen_length
        seconds += t
    hook.remove()
    params = sum(p.numel() for p in llama.parameters())
    tokens = gen_length * len(prompts)
    return {
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "passes_per_token": len(calls) / tokens,
        "parameters": params,
    }


def is_correct(text: str, example: Example) -> bool:
    """VQA: the answer is the correct option's text. Report: it names the image's modality and anatomy."""
    text = text.strip().lower()
    if "|" not in example.answer:
        return text == example.answer.lower()
    return all(fact in text for fact in example.answer.split("|"))


@torch.no_grad()
def quality(model, examples, gen_length, block_length, threshold, cache_mode, batch_size, tokenizer):
    """Accuracy and exact output agreement, vanilla vs fast path, on held-out examples (batched)."""
    outputs = {"vanilla": [], "fast": []}
    options = {"vanilla": {}, "fast": {"threshold": threshold, "cache_mode": cache_mode}}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        ids, mask = left_padded([ex.prompt for ex in chunk])
        for name in outputs:
            out = model.generate(ids, mask, gen_length=gen_length, block_length=block_length, **options[name])
            outputs[name].append(out)
    result = {}
    sequences = {name: torch.cat(parts) for name, parts in outputs.items()}
    for name, seqs in sequences.items():
        texts = tokenizer.batch_decode(seqs, skip_special_tokens=True)
        correct = [is_correct(t, ex) for t, ex in zip(texts, examples)]
        result[name] = {"accuracy": 100.0 * sum(correct) / len(examples), "sample": texts[0]}
    result["agreement"] = 100.0 * float((sequences["vanilla"] == sequences["fast"]).all(1).float().mean())
    return result


@torch.no_grad()
def image_speed(
    base: MedDiffConfig, num_images: int, image_steps: int, cfg_scale: float, grid: int, size: dict
):
    config = MedDiffConfig.from_preset(
        "embedded",
        text_vocab_size=base.text_vocab_size,
        image_codebook_size=base.image_codebook_size,
        image_grid_size=grid,
        **size,
    )
    model = MedDiffForMaskedDiffusion(config).eval()
    prompt = [BOS, T2I, USER, *range(30, 60), ASSISTANT]
    ids = torch.tensor([prompt])
    seconds, passes = 0.0, 0
    for i in range(num_images):
        t, out = timed(
            lambda i=i: model.generate_images(
                ids,
                image_steps=image_steps,
                cfg_scale=cfg_scale,
                generator=torch.Generator().manual_seed(i),
                return_dict_in_generate=True,
            )
        )
        seconds += t
        passes += out.num_forward_passes
        assert not (out.sequences == config.mask_token_id).any()
    return {
        "image_tokens": grid * grid,
        "image_steps": image_steps,
        "cfg_scale": cfg_scale,
        "passes_per_image": passes / num_images,
        "sequence_evaluations_per_image": passes / num_images * (2 if cfg_scale > 0 else 1),
        "images_per_s": num_images / seconds,
    }


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--cache-mode", default="dual", choices=["none", "prefix", "dual"])
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--intermediate-size", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-cases", type=int, default=1200)
    parser.add_argument("--num-speed-prompts", type=int, default=3)
    parser.add_argument("--num-eval", type=int, default=64)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--image-steps", type=int, default=12)
    parser.add_argument("--image-grid", type=int, default=16)
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; the numbers mean little")
    parser.add_argument("--json", default=None, help="also write the figures as one JSON object here")
    args = parser.parse_args()
    if args.quick:
        args.train_steps, args.num_cases, args.num_eval, args.num_images = 10, 64, 8, 1
        args.num_speed_prompts, args.gen_length, args.image_grid = 1, 64, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from hf_meddiff.data import make_phantom_dataset
    from hf_meddiff.text_tokenizer import train_text_tokenizer

    t0 = time.perf_counter()
    ds = make_phantom_dataset(args.num_cases, seed=args.seed, image_size=64)
    tokenizer = train_text_tokenizer(ds, vocab_size=600)
    size = {
        "hidden_size": args.hidden_size,
        "intermediate_size": args.intermediate_size,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
    }
    config = MedDiffConfig.from_preset(
        "embedded", text_vocab_size=len(tokenizer), image_codebook_size=IMAGE_CODES, image_grid_size=8, **size
    )
    model = MedDiffForMaskedDiffusion(config)
    train_rows = ds.filter(lambda s: s != "test", input_columns="split")
    test_rows = ds.filter(lambda s: s == "test", input_columns="split").select(range(args.num_eval))
    vqa, reports = build_examples(train_rows, tokenizer, config.image_token_offset)
    test_vqa, test_reports = build_examples(test_rows, tokenizer, config.image_token_offset)
    print(f"data + tokenizer: {time.perf_counter() - t0:.1f}s; {len(vqa)} train cases, {len(test_vqa)} test")

    t0 = time.perf_counter()
    losses = train(model, vqa, reports, args.train_steps, args.batch_size, args.gen_length, args.seed)
    train_seconds = time.perf_counter() - t0
    print(
        f"trained {args.train_steps} steps in {train_seconds:.0f}s; loss {losses[0]:.2f} -> {np.mean(losses[-20:]):.2f}"
    )

    prompts = [ex.prompt for ex in test_reports[: args.num_speed_prompts]]
    speed = text_speed(model, prompts, args.gen_length, args.block_length, args.threshold, args.cache_mode)
    speed["autoregressive_kv_cache"] = ar_speed(config, prompts, args.gen_length)
    report_quality = quality(
        model,
        test_reports,
        args.gen_length,
        args.block_length,
        args.threshold,
        args.cache_mode,
        16,
        tokenizer,
    )
    vqa_quality = quality(
        model, test_vqa, args.gen_length, args.block_length, args.threshold, args.cache_mode, 16, tokenizer
    )
    images = image_speed(config, args.num_images, args.image_steps, args.cfg_scale, args.image_grid, size)

    fast, vanilla, ar = speed["fast"], speed["vanilla"], speed["autoregressive_kv_cache"]
    figures = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch_threads": torch.get_num_threads(),
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "gen_length": args.gen_length,
        "block_length": args.block_length,
        "threshold": args.threshold,
        "cache_mode": args.cache_mode,
        "train_steps": args.train_steps,
        "train_seconds": train_seconds,
        "final_train_loss": float(np.mean(losses[-20:])),
        "quality_task": "MedPhantom report writing (make_phantom_dataset): the report names the image's modality "
        "and anatomy; pooled-intensity image codes",
        "text": speed,
        "fast_over_vanilla": fast["tokens_per_s"] / vanilla["tokens_per_s"],
        "fast_over_ar": fast["tokens_per_s"] / ar["tokens_per_s"],
        "fast_no_early_stop_over_vanilla": speed["fast_no_early_stop"]["tokens_per_s"]
        / vanilla["tokens_per_s"],
        "fast_no_early_stop_over_ar": speed["fast_no_early_stop"]["tokens_per_s"] / ar["tokens_per_s"],
        "accuracy_vanilla": report_quality["vanilla"]["accuracy"],
        "accuracy_fast": report_quality["fast"]["accuracy"],
        "accuracy_drop_points": report_quality["vanilla"]["accuracy"] - report_quality["fast"]["accuracy"],
        "output_agreement_percent": report_quality["agreement"],
        "vqa_accuracy_vanilla": vqa_quality["vanilla"]["accuracy"],
        "vqa_accuracy_fast": vqa_quality["fast"]["accuracy"],
        "vqa_output_agreement_percent": vqa_quality["agreement"],
        "num_eval": len(test_reports),
        "images": images,
        "image_passes_per_image": images["passes_per_image"],
        "images_per_s": images["images_per_s"],
    }

    print(
        f"\nText, gen_length {args.gen_length}, block {args.block_length}, batch 1, {len(prompts)} report prompts"
    )
    print(f"{'sampler':<28}{'tokens/s':>10}{'answer tok/s':>14}{'passes/token':>14}")
    for name, row in speed.items():
        print(
            f"{name:<28}{row['tokens_per_s']:>10.1f}{row.get('answer_tokens_per_s', row['tokens_per_s']):>14.1f}"
            f"{row['passes_per_token']:>14.3f}"
        )
    print(
        f"fast / vanilla = {figures['fast_over_vanilla']:.1f}x   fast / AR = {figures['fast_over_ar']:.2f}x   "
        f"(without early stop: {figures['fast_no_early_stop_over_vanilla']:.1f}x, "
        f"{figures['fast_no_early_stop_over_ar']:.2f}x)"
    )
    for name, q in (
        ("Reports (names modality + anatomy)", report_quality),
        ("VQA (option text)", vqa_quality),
    ):
        print(
            f"\n{name}, {len(test_reports)} held-out cases: vanilla {q['vanilla']['accuracy']:.1f}%, fast "
            f"{q['fast']['accuracy']:.1f}%, drop {q['vanilla']['accuracy'] - q['fast']['accuracy']:.1f} points, "
            f"identical outputs {q['agreement']:.1f}%  (e.g. {q['fast']['sample']!r})"
        )
    print(
        f"\nImages: {images['image_tokens']} tokens, {images['image_steps']} steps, CFG {images['cfg_scale']}: "
        f"{images['passes_per_image']:.0f} passes/image ({images['sequence_evaluations_per_image']:.0f} sequence "
        f"evaluations), {images['images_per_s']:.2f} images/s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
