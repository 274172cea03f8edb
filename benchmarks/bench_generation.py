"""Generation benchmark on a model that answers: the vanilla LLaDA sampler vs the Fast-dLLM fast path vs a same-size
autoregressive model with a KV cache.

1. **Model.** `--model PATH`: any saved MedDiff folder (e.g. the `model/` folder of `hf-meddiff demo`). Without it
   the embedded SFT model is trained once by the project's recipe (`hf-meddiff sft --config
   trainers/pretrain_embedded.yaml`, MedPhantom, about 15 minutes on 2 CPU cores) into
   `~/.cache/hf-meddiff/bench/embedded-sft/` and reused by later runs (`--cache-dir` moves it).
2. **Quality** on `--num-eval` (>= 100) held-out rows (the `test` split of the model's training data, read from its
   `sft_recipe.json`, or `--data`): VQA accuracy (option text on the VQA canvas the model was trained with) and
   report BLEU-1 / ROUGE-L (on the report canvas it was trained with, in its generation config's blocks), vanilla
   vs fast, and the share of identical outputs. `quality_drop_points` is the larger of the VQA-accuracy and
   BLEU-1 drops, in points.
3. **Speed** on report prompts at generation lengths 256 and 1024 (`--lengths`), batch 1 and 8
   (`--batch-sizes`), with and without EOS early stop: tokens/s (canvas tokens per second, the dLLM convention) for
   (a) vanilla (one token per step, full recompute), (b) the fast path (`--threshold`, `--cache-mode`,
   `--cache-refresh-interval`) and (c) a `LlamaForCausalLM` of the same size generating as many new tokens with
   transformers `generate` and its KV cache (random weights, so it is told the length: without early stop the
   whole canvas, with early stop as many tokens as the fast path's longest answer in the batch). The three run
   interleaved, `--repeats` rounds in alternating order; medians are quoted.
   Vanilla is timed over `--vanilla-steps` denoising steps and scaled to its steps: every vanilla step is one
   forward of the whole canvas of the same shape, so its time per step is constant. Without early stop it takes
   `gen_length` steps; with early stop it stops after the block of the first EOS (rows leave only at block ends),
   taken from the fast path's answers (an upper bound, flagged `vanilla_estimate`).
4. **Images**: forward passes per 256-token image (MaskGIT with classifier-free guidance).

Read `fast_passes_per_token` first: the fast path's gain beyond its block cache comes only from positions whose
probability exceeds `--threshold`. A model trained on short canvases (the demo recipe pads reports to 80 tokens)
is out of its training distribution on a 256- or 1024-token canvas and is rarely that confident there, so the fast
path then takes one pass per token and gains only what its cheaper block passes give. The longer recipe
(`trainers/pretrain_embedded_long.yaml`) pads reports to 256 tokens: its model commits the EOS tail of a 256-token
canvas in a few passes (about 0.15 passes per token), but not past the positions it was trained on;
`trainers/extend_report_canvas_1024.yaml` continues it on 1024-token report canvases (600 steps) for the 1024 row.
A model trained on long EOS-padded canvases is surest of EOS at the end of the first block and, decoding by
confidence, ends its reports a few words in; `--ordered-eos` makes both samplers commit the end of the text only
after the text (generation config `ordered_eos`).

Run (CPU; the model must already be trained or be given):

    python benchmarks/bench_generation.py --model outputs/demo/model --json benchmark_generation.json
    python benchmarks/bench_generation.py --model outputs/demo-long/model --json benchmark_generation.json   # the
        # model of `hf-meddiff demo --recipe trainers/pretrain_embedded_long.yaml --output-dir outputs/demo-long`
    python benchmarks/bench_generation.py --model outputs/meddiff-embedded-long-1024 --ordered-eos \
        --json benchmark_generation.json   # that model continued by trainers/extend_report_canvas_1024.yaml

`--quick` shrinks everything for a smoke run (numbers then mean little).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "trainers" / "pretrain_embedded.yaml"


class _Stop(Exception):
    """Raised by the step callback to end a timed vanilla run after a few steps."""


# ------------------------------------------------------------------------------------------------ model and data


def default_model(cache_dir: Path, quick: bool) -> Path:
    """The embedded SFT model of `trainers/pretrain_embedded.yaml`, trained once into `cache_dir`."""
    folder = cache_dir / ("embedded-sft-quick" if quick else "embedded-sft")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    command = [
        sys.executable,
        "-m",
        "hf_meddiff.cli",
        "sft",
        "--config",
        str(RECIPE),
        "--output_dir",
        str(folder),
    ]
    if quick:
        command += ["--max_steps", "20", "--medphantom_num_cases", "200", "--image_tokenizer_steps", "5"]
    print(f"training the benchmark model once (cached in {folder}):\n  {' '.join(command)}", flush=True)
    subprocess.run(command, check=True, cwd=REPO)
    return folder


def heldout_rows(model_dir: Path, data: str | None, split: str):
    """The held-out split of the data the model was trained on (`sft_recipe.json`), or of `data`."""
    from hf_meddiff.evaluation import load_canonical

    if data is None:
        recipe_file = model_dir / "sft_recipe.json"
        script = json.loads(recipe_file.read_text())["script"] if recipe_file.is_file() else {}
        path = script.get("dataset_path")
        if path and Path(path).exists():
            data = path
        elif script.get("dataset_name", "medphantom") == "medphantom":
            from hf_meddiff.data import make_phantom_dataset

            dataset = make_phantom_dataset(
                script.get("medphantom_num_cases", 3000),
                seed=script.get("medphantom_seed", 0),
                image_size=script.get("medphantom_image_size", 64),
            )
            return dataset.filter(lambda s: s == split, input_columns="split")
        else:
            raise SystemExit(f"{recipe_file}: dataset {path!r} not found; pass --data <canonical parquet>.")
    dataset = load_canonical(data)
    return dataset.filter(lambda s: s == split, input_columns="split")


def trained_lengths(model, model_dir: Path) -> tuple[int, int, int | None]:
    """(VQA canvas, report canvas, report block) the model was trained / configured with."""
    from hf_meddiff.evaluation.inference import trained_text_canvases

    canvases = trained_text_canvases(model_dir)
    vqa = canvases.get("vqa") or 4
    report = canvases.get("report") or model.generation_config.gen_length
    block = model.generation_config.block_length
    if block and report % block:
        block = None
    return int(vqa), int(report), block


def prompts(processor, rows, task: str):
    from hf_meddiff.formatting import format_question

    texts = (
        [format_question(q, o) for q, o in zip(rows["question"], rows["options"])] if task == "vqa" else None
    )
    batch = processor(
        images=list(rows["image"]),
        text=texts or [""] * len(rows),
        task=[task] * len(rows),
        add_response=False,
        padding_side="left",
    )
    return batch["input_ids"], batch["attention_mask"]


# ------------------------------------------------------------------------------------------------ quality


@torch.no_grad()
def quality(
    model,
    processor,
    rows,
    fast,
    vqa_length: int,
    report_length: int,
    report_block,
    batch_size,
    num_reports,
):
    from tqdm.auto import tqdm

    from hf_meddiff.evaluation.vqa import vqa_section
    from hf_meddiff.metrics import report_generation_scores

    settings = {
        "vqa": {"gen_length": vqa_length, "block_length": None, "steps": vqa_length},
        "report": {"gen_length": report_length, "block_length": report_block, "steps": report_length},
    }
    if num_reports == 0:
        del settings["report"]
    task_rows = {"vqa": rows, "report": rows.select(range(min(num_reports, len(rows))))}
    outputs = {(task, name): [] for task in settings for name in ("vanilla", "fast")}
    for task, base in settings.items():
        subset = task_rows[task]
        for start in tqdm(range(0, len(subset), batch_size), desc=f"quality: {task}", unit="batch"):
            chunk = subset.select(range(start, min(start + batch_size, len(subset))))
            ids, mask = prompts(processor, chunk, task)
            for name, options in (("vanilla", {}), ("fast", fast(base["gen_length"]))):
                out = model.generate(ids, mask, **base, **options)
                outputs[task, name] += processor.batch_decode(out)
    result = {
        "settings": settings,
        "n_vqa": len(rows),
        "n_report": len(task_rows["report"]) if num_reports else 0,
    }
    for task in settings:
        vanilla, fast_out = outputs[task, "vanilla"], outputs[task, "fast"]
        same = sum(a == b for a, b in zip(vanilla, fast_out))
        result[f"{task}_identical_percent"] = 100.0 * same / len(vanilla)
    metrics = ["vqa_accuracy"]
    for name in ("vanilla", "fast"):
        section, _ = vqa_section(rows, outputs["vqa", name])
        result[name] = {"vqa_accuracy": 100.0 * section["accuracy"], "vqa_chance": 100.0 * section["chance"]}
        if "report" in settings:
            references = list(task_rows["report"]["report"])
            scores = report_generation_scores(outputs["report", name], references, meteor=False)
            result[name].update(
                report_bleu_1=100.0 * scores["bleu_1"],
                report_rouge_l=100.0 * scores["rouge_l"],
                report_sample=outputs["report", name][0],
            )
            metrics = ["vqa_accuracy", "report_bleu_1"]
    result["quality_drop_points"] = max(result["vanilla"][k] - result["fast"][k] for k in metrics)
    return result


# ------------------------------------------------------------------------------------------------ speed


def same_size_llama(config):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            head_dim=getattr(config, "head_dim", None),
            max_position_embeddings=4096,
            pad_token_id=config.pad_token_id,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            tie_word_embeddings=config.tie_word_embeddings,
        )
    ).eval()


def answer_length(sequences: torch.Tensor, pad_id: int) -> int:
    """Longest answer in the batch: tokens up to and including the first EOS (written as pad)."""
    longest = 0
    for row in sequences.tolist():
        longest = max(longest, next((i + 1 for i, t in enumerate(row) if t == pad_id), len(row)))
    return longest


@torch.no_grad()
def time_fast(model, ids, mask, gen_length, block, fast, early_stop):
    start = time.perf_counter()
    out = model.generate(
        ids, mask, gen_length=gen_length, block_length=block, eos_early_stop=early_stop,
        return_dict_in_generate=True, **fast,
    )  # fmt: skip
    return time.perf_counter() - start, out


@torch.no_grad()
def time_vanilla_steps(model, ids, mask, gen_length, block, steps):
    """Seconds per vanilla step, from a run stopped after `steps` steps."""

    def stop(step, state):
        if step + 1 >= steps:
            raise _Stop

    start = time.perf_counter()
    with contextlib.suppress(_Stop):
        model.generate(
            ids, mask, gen_length=gen_length, block_length=block, eos_early_stop=False, callback=stop
        )
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def time_ar(llama, ids, mask, new_tokens, pad_id):
    start = time.perf_counter()
    out = llama.generate(
        ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        use_cache=True, pad_token_id=pad_id,
    )  # fmt: skip
    assert out.shape[1] - ids.shape[1] == new_tokens
    return time.perf_counter() - start


def speed_cell(model, llama, ids, mask, gen_length, block, fast, early_stop, repeats, vanilla_steps, pad_id):
    """Median seconds of vanilla, fast (the options `fast`) and AR for one (length, batch, early stop) cell,
    interleaved."""
    times = {"vanilla": [], "fast": [], "autoregressive_kv_cache": []}
    passes, new_tokens = None, gen_length
    order = ["fast", "vanilla", "autoregressive_kv_cache"]
    vanilla_steps_total = gen_length
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            if name == "fast":
                seconds, out = time_fast(model, ids, mask, gen_length, block, fast, early_stop)
                passes = out.num_forward_passes
                if early_stop:
                    new_tokens = answer_length(out.sequences, pad_id)
                    vanilla_steps_total = min(gen_length, -(-new_tokens // block) * block)
            elif name == "vanilla":
                seconds = time_vanilla_steps(model, ids, mask, gen_length, block, vanilla_steps)
                seconds *= vanilla_steps_total
            else:
                seconds = time_ar(llama, ids, mask, new_tokens, pad_id)
            times[name].append(seconds)
    tokens = gen_length * ids.shape[0]
    row = {name: statistics.median(values) for name, values in times.items()}
    return {
        "seconds": row,
        "seconds_all": times,
        "tokens_per_s": {name: tokens / s for name, s in row.items()},
        "fast_passes": passes,
        "fast_passes_per_token": passes / gen_length,
        "vanilla_passes": vanilla_steps_total,
        "vanilla_estimate": early_stop,
        "ar_new_tokens": new_tokens,
        "fast_over_vanilla": row["vanilla"] / row["fast"],
        "fast_over_ar": row["autoregressive_kv_cache"] / row["fast"],
    }


@torch.no_grad()
def image_passes(model, image_steps: int, cfg_scale: float) -> dict:
    """Passes per image of a 16 x 16 grid (256 image tokens) with the model's sizes (untrained weights)."""
    from hf_meddiff import MedDiffForMaskedDiffusion

    config = copy.deepcopy(model.config)
    config.image_grid_size, config.max_position_embeddings = 16, 512
    images = MedDiffForMaskedDiffusion(config).eval()
    prompt = torch.tensor([[config.bos_token_id, config.t2i_token_id, 7, *range(30, 60), 8]])
    start = time.perf_counter()
    out = images.generate_images(
        prompt, image_steps=image_steps, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(0),
        return_dict_in_generate=True,
    )  # fmt: skip
    assert not (out.sequences == config.mask_token_id).any()
    return {
        "image_tokens": 256,
        "image_steps": image_steps,
        "cfg_scale": cfg_scale,
        "passes_per_image": out.num_forward_passes,
        "seconds_per_image": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=None, help="a saved MedDiff folder (default: train/reuse the cached one)"
    )
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/hf-meddiff/bench"))
    parser.add_argument(
        "--data", default=None, help="canonical dataset for quality (default: the model's own)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-eval", type=int, default=104)
    parser.add_argument(
        "--num-eval-reports",
        type=int,
        default=None,
        help="report rows for quality (default: --num-eval; 0 skips)",
    )
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--cache-mode", default="dual", choices=["none", "prefix", "dual"])
    parser.add_argument("--cache-refresh-interval", type=int, default=1)
    parser.add_argument(
        "--long-canvas-options",
        default=None,
        help="JSON generation options of the fast path on canvases above 256 tokens, over the others, e.g. "
        '\'{"cache_mode": "prefix", "suffix_window": 224}\'',
    )
    parser.add_argument(
        "--suffix-window",
        type=int,
        default=None,
        help="the fast path sees at most this many masks after its block (generation config `suffix_window`)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vanilla-steps", type=int, default=4)
    parser.add_argument("--image-steps", type=int, default=12)
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--ordered-eos",
        action="store_true",
        help="both samplers commit end-of-text only after the text (generation config `ordered_eos`)",
    )
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; the numbers mean little")
    parser.add_argument("--json", default=None, help="also write the figures as one JSON object here")
    args = parser.parse_args()
    if args.quick:
        args.num_eval, args.lengths, args.batch_sizes, args.repeats = 8, [64], [1, 2], 1
        args.vanilla_steps, args.image_steps = 2, 4
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from hf_meddiff.evaluation.inference import load_model_and_processor

    model_dir = Path(args.model) if args.model else default_model(Path(args.cache_dir), args.quick)
    model, processor = load_model_and_processor(model_dir, device="cpu")
    rows = heldout_rows(model_dir, args.data, args.split)
    if len(rows) < args.num_eval:
        print(f"note: only {len(rows)} held-out rows (asked for {args.num_eval})")
    rows = rows.select(range(min(args.num_eval, len(rows))))
    fast = {"threshold": args.threshold, "cache_mode": args.cache_mode}
    if args.cache_refresh_interval != 1:
        fast["cache_refresh_interval"] = args.cache_refresh_interval
    if args.suffix_window is not None:
        fast["suffix_window"] = args.suffix_window
    long_fast = {**fast, **json.loads(args.long_canvas_options)} if args.long_canvas_options else fast

    def fast_for(gen_length: int) -> dict:
        """The fast path's options on a canvas of `gen_length` (`--long-canvas-options` above 256 tokens)."""
        return long_fast if gen_length > 256 else fast

    pad_id = model.generation_config.pad_token_id
    model.generation_config.ordered_eos = args.ordered_eos  # vanilla and fast alike
    vqa_length, report_length, report_block = trained_lengths(model, model_dir)

    figures: dict = {
        "model": str(model_dir),
        "model_parameters": sum(p.numel() for p in model.parameters()),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "fast": fast,
        "fast_above_256": long_fast,
        "block_length": args.block_length,
        "ordered_eos": args.ordered_eos,
    }

    # 1. quality, vanilla vs fast, on held-out rows
    if not args.skip_quality:
        num_reports = len(rows) if args.num_eval_reports is None else args.num_eval_reports
        q = quality(
            model,
            processor,
            rows,
            fast_for,
            vqa_length,
            report_length,
            report_block,
            args.eval_batch_size,
            num_reports,
        )
        figures["quality"] = q
        figures["quality_drop_points"] = q["quality_drop_points"]
        print(f"\nQuality on held-out rows ({args.split} split): {q['n_vqa']} VQA, {q['n_report']} reports")
        print(f"{'sampler':<10}{'VQA acc %':>11}{'BLEU-1':>9}{'ROUGE-L':>9}")
        for name in ("vanilla", "fast"):
            s = q[name]
            print(
                f"{name:<10}{s['vqa_accuracy']:>11.1f}{s.get('report_bleu_1', float('nan')):>9.1f}"
                f"{s.get('report_rouge_l', float('nan')):>9.1f}"
            )
        print(
            f"VQA chance {q['vanilla']['vqa_chance']:.1f}%; identical outputs: VQA {q['vqa_identical_percent']:.1f}%, "
            f"reports {q.get('report_identical_percent', float('nan')):.1f}%; quality drop "
            f"{q['quality_drop_points']:.2f} points"
        )

    # 2. speed: report prompts, every (length, batch, early stop) cell interleaved
    llama = same_size_llama(model.config)
    ids_all, mask_all = prompts(processor, rows.select(range(max(args.batch_sizes))), "report")
    longest = ids_all.shape[1] + max(args.lengths)
    if longest > model.config.max_position_embeddings:
        # RoPE has no learned positions: the speed runs may go past the trained length (outputs there are not scored)
        model.config.max_position_embeddings = longest
    speed = {}
    for gen_length in args.lengths:
        block = args.block_length if gen_length % args.block_length == 0 else gen_length
        for batch in args.batch_sizes:
            ids, mask = ids_all[:batch], mask_all[:batch]
            # drop the columns that are padding in every row of this batch
            keep = mask.any(0)
            ids, mask = ids[:, keep], mask[:, keep]
            for early_stop in (False, True):
                key = f"len{gen_length}_batch{batch}_{'early_stop' if early_stop else 'no_early_stop'}"
                cell = speed_cell(
                    model, llama, ids, mask, gen_length, block, fast_for(gen_length), early_stop, args.repeats,
                    args.vanilla_steps, pad_id,
                )  # fmt: skip
                speed[key] = cell
                t = cell["tokens_per_s"]
                print(
                    f"{key:<34} vanilla {t['vanilla']:8.1f} tok/s  fast {t['fast']:8.1f} tok/s  AR "
                    f"{t['autoregressive_kv_cache']:8.1f} tok/s  fast/vanilla {cell['fast_over_vanilla']:6.1f}x  "
                    f"fast/AR {cell['fast_over_ar']:5.2f}x  fast passes/token {cell['fast_passes_per_token']:.3f}",
                    flush=True,
                )
    figures["speed"] = speed
    for gen_length in args.lengths:
        cell = speed.get(f"len{gen_length}_batch1_no_early_stop")
        if cell:
            figures[f"fast_over_vanilla_{gen_length}"] = cell["fast_over_vanilla"]
            figures[f"fast_over_ar_{gen_length}"] = cell["fast_over_ar"]
            batched = speed.get(f"len{gen_length}_batch8_no_early_stop")
            if batched:
                figures[f"fast_over_vanilla_{gen_length}_batch8"] = batched["fast_over_vanilla"]
                figures[f"fast_over_ar_{gen_length}_batch8"] = batched["fast_over_ar"]

    # 3. images
    figures["images"] = image_passes(model, args.image_steps, args.cfg_scale)
    figures["image_passes_per_image"] = figures["images"]["passes_per_image"]
    print(
        f"\nImages: 256 tokens, {args.image_steps} steps, CFG {args.cfg_scale}: "
        f"{figures['image_passes_per_image']} passes/image"
    )
    figures["load_average_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
