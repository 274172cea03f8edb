"""Claim (GMAI-VL-R1, figure 5): how answer length changes from the base model to SFT to RL.

Three models answer the same held-out MedPhantom test rows with a grounded-reasoning prompt (think-before by
default): the shared SFT base (VQA / report / report-to-image pretraining, no reasoning), the base fine-tuned on
annotated rationales (SFT) and that model after GRPO with accuracy + format rewards (RL). The length of each answer
in words (whitespace-separated, tags split off) is histogrammed for all answers and for the correct ones,
one panel per model, saved as a PNG; the table gives the mean length and the accuracy.

    python examples/claim_answer_length.py --output-dir outputs/claims/answer_length
    python examples/claim_answer_length.py --output-dir /tmp/lengths --quick      # smoke run
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from _claims_common import (
    REASONING_LENGTH,
    Run,
    add_common_args,
    cached_base,
    cached_reasoner,
    cached_reasoner_rl,
    evaluate,
    fmt,
    make_data,
    markdown_table,
    predictions,
    size_from_args,
)

STAGES = ("base", "SFT", "RL")


def word_lengths(texts: list[str]) -> list[int]:
    """Answer lengths in whitespace-separated words, each tag (`<think>`, `</answer>`, ...) one word of its own.
    Words, not tokens: re-tokenising a decoded text that holds broken byte
    fragments (a weak model's output) counts several tokens per character."""
    return [len(text.replace("<", " <").replace(">", "> ").split()) for text in texts]


def plot_histograms(lengths: dict[str, dict[str, list[int]]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max([8, *[n for stage in lengths.values() for n in stage["all"]]])
    bins = list(range(0, top + 5, max(1, top // 20)))
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.2 * len(lengths), 3.4), sharey=True)
    axes = axes if len(lengths) > 1 else [axes]
    for ax, (stage, values) in zip(axes, lengths.items()):
        ax.hist(values["all"], bins=bins, color="#9ab", label=f"all answers (n={len(values['all'])})")
        ax.hist(
            values["correct"],
            bins=bins,
            color="#c52",
            alpha=0.8,
            label=f"correct (n={len(values['correct'])})",
        )
        ax.set_title(stage)
        ax.set_xlabel("answer length (words)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1, frameon=False, fontsize=8)
    axes[0].set_ylabel("answers")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument(
        "--style", default="think_before", choices=("think_before", "think_after", "no_think")
    )
    args = parser.parse_args()
    size = size_from_args(args)
    run = Run("claim_answer_length", args, size)

    lengths = {stage: {"all": [], "correct": []} for stage in STAGES}
    per_seed: dict[str, dict[str, list]] = {
        stage: {"mean_all": [], "mean_correct": [], "accuracy": []} for stage in STAGES
    }
    for seed in range(args.seeds):
        models = {
            "base": cached_base(size, seed),
            "SFT": cached_reasoner(size, seed, args.style),
            "RL": cached_reasoner_rl(size, seed, args.style),
        }
        ds = make_data(size, seed, expand=False)
        test = ds.select([i for i, s in enumerate(ds["split"]) if s == "test"])
        for stage, model in models.items():
            out = Path(args.output_dir) / f"seed{seed}" / stage
            summary = evaluate(
                model, test, out, size, tasks=["reasoning"], reasoning_style=args.style,
                reasoning_gen_length=REASONING_LENGTH, vqa_scoring="generate",
            )  # fmt: skip
            entries = predictions(summary, "reasoning")
            counts = word_lengths([e["prediction"] for e in entries])
            correct = [n for n, e in zip(counts, entries) if e["score"] >= 1.0]
            lengths[stage]["all"] += counts
            lengths[stage]["correct"] += correct
            per_seed[stage]["mean_all"].append(statistics.fmean(counts) if counts else None)
            per_seed[stage]["mean_correct"].append(statistics.fmean(correct) if correct else None)
            per_seed[stage]["accuracy"].append(summary.get("reasoning", {}).get("accuracy"))
            print(f"seed {seed} {stage}: {len(counts)} answers, {len(correct)} correct", flush=True)

    png = plot_histograms(
        lengths,
        run.out / "answer_length_histograms.png",
        f"Answer length on held-out MedPhantom ({args.style}; {args.seeds} seed(s) pooled)",
    )
    headers = ["model", "accuracy %", "mean length, all (words)", "mean length, correct (words)", "answers"]
    rows = [
        [
            stage,
            fmt(per_seed[stage]["accuracy"], percent=True),
            fmt(per_seed[stage]["mean_all"], digits=1),
            fmt(per_seed[stage]["mean_correct"], digits=1),
            len(lengths[stage]["all"]),
        ]
        for stage in STAGES
    ]
    notes = [
        f"Histograms: `{png}`. Lengths in words of the generated text (tags split off), canvas "
        f"{REASONING_LENGTH} tokens; base = the shared SFT base (never trained to reason), SFT = base + reasoning SFT "
        f"({args.style}), RL = SFT + GRPO (accuracy + format). Mean ± std over seeds."
    ]
    run.finish(
        "Answer length: base vs SFT vs RL (GMAI-VL-R1 figure 5)",
        [markdown_table(headers, rows)],
        {"per_seed": per_seed, "lengths": lengths, "histograms": str(png)},
        notes,
    )


if __name__ == "__main__":
    main()
