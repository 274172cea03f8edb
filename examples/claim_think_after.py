"""Claim (Med-R1): the order of reasoning matters; think-after vs think-before vs no-think.

For each style, the shared SFT base is fine-tuned on MedPhantom's grounded rationales written in that style
(`<think>…</think><answer>…</answer>`, `<answer>…</answer><think>…</think>` or `<answer>…</answer>`), then trained
with GRPO on accuracy + format rewards (trainers/grpo_vqa.yaml). Both stages are evaluated on the same held-out
i.i.d. test rows: answer accuracy (overall and per modality) and format compliance (the exact layout of the style).

    python examples/claim_think_after.py --output-dir outputs/claims/think_after
    python examples/claim_think_after.py --output-dir /tmp/think --quick      # smoke run
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
    format_compliance,
    make_data,
    markdown_table,
    predictions,
    size_from_args,
)

from hf_meddiff.constants import MODALITIES

STYLES = ("think_after", "think_before", "no_think")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    args = parser.parse_args()
    size = size_from_args(args)
    run = Run("claim_think_after", args, size)

    results: dict[str, dict[str, list]] = {}  # "<style>/<stage>" -> metric -> values over seeds
    for seed in range(args.seeds):
        cached_base(size, seed)
        ds = make_data(size, seed, expand=False)
        test = ds.select([i for i, s in enumerate(ds["split"]) if s == "test"])
        for style in args.styles:
            models = {
                "SFT": cached_reasoner(size, seed, style),
                "SFT+GRPO": cached_reasoner_rl(size, seed, style),
            }
            for stage, model in models.items():
                out = Path(args.output_dir) / f"seed{seed}" / style / stage.lower().replace("+", "_")
                summary = evaluate(
                    model, test, out, size, tasks=["reasoning"], reasoning_style=style,
                    reasoning_gen_length=REASONING_LENGTH, vqa_scoring="generate",
                )  # fmt: skip
                section = summary.get("reasoning", {})
                texts = [p["prediction"] for p in predictions(summary, "reasoning")]
                entry = results.setdefault(f"{style}/{stage}", {})
                entry.setdefault("accuracy", []).append(section.get("accuracy"))
                entry.setdefault("format", []).append(format_compliance(texts, style))
                entry.setdefault("chance", []).append(section.get("chance"))
                for modality in MODALITIES:
                    cell = section.get("per_modality", {}).get(modality, {})
                    entry.setdefault(modality, []).append(cell.get("accuracy"))
                print(f"seed {seed} {style} {stage}: { ({k: v[-1] for k, v in entry.items()}) }", flush=True)

    headers = ["style", "stage", "accuracy %", "format %", *MODALITIES]
    rows = [
        [*key.split("/"), fmt(m["accuracy"], percent=True), fmt(m["format"], percent=True)]
        + [fmt(m[modality], percent=True) for modality in MODALITIES]
        for key, m in results.items()
    ]
    chance = fmt(
        [statistics.fmean([c for m in results.values() for c in m["chance"] if c is not None] or [0.25])],
        percent=True,
    )
    table = markdown_table(headers, rows)
    notes = [
        f"Accuracy: answers sampled on a {REASONING_LENGTH}-token canvas, scored like VQA (chance {chance} %); "
        "format: share of answers in the exact layout of the style. Per modality: accuracy %. "
        f"Mean ± std over {args.seeds} seed(s); {size.eval_samples} held-out test rows per model."
    ]
    run.finish("Think-after vs think-before vs no-think (Med-R1)", [table], {"results": results}, notes)


if __name__ == "__main__":
    main()
