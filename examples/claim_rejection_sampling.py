"""Claim (GMAI-VL-R1): rejection-sampled reasoning data, then RL, beats RL from the base.

1. A reasoner (the shared SFT base fine-tuned on MedPhantom's annotated rationales, think-before) samples
   `--num-samples` rationales per training question at temperature 1; `hf_meddiff.data.build_reasoning_dataset(
   mode="rejection")` keeps those whose `<answer>` is right and that carry a `<think>` (acceptance rate per
   modality and question type).
2. Arm "RS-SFT -> GRPO": the SFT base fine-tuned on the accepted rationales only, then GRPO (accuracy + format).
   Arm "GRPO from base": the same GRPO straight from the SFT base.
3. Both arms (and the RS-SFT model before GRPO) answer the same held-out test rows with the reasoning prompt:
   accuracy and format compliance.

    python examples/claim_rejection_sampling.py --output-dir outputs/claims/rejection_sampling
    python examples/claim_rejection_sampling.py --output-dir /tmp/rs --quick      # smoke run
"""

from __future__ import annotations

import argparse

from _claims_common import (
    REASONING_LENGTH,
    Run,
    add_common_args,
    base_data_path,
    cached_base,
    cached_reasoner,
    evaluate,
    fmt,
    format_compliance,
    make_data,
    markdown_table,
    predictions,
    reasoning_grpo_args,
    reasoning_sft_args,
    run_grpo,
    run_sft,
    save_data,
    size_from_args,
)

from hf_meddiff.constants import MODALITIES, QUESTION_TYPES

MULTIPLE_CHOICE_TYPES = tuple(t for t in QUESTION_TYPES if t != "open")

STYLE = "think_before"
ARMS = ("RS-SFT", "RS-SFT -> GRPO", "GRPO from base")


def sampler(model_dir: str, batch_size: int, seed: int, steps: int):
    """`generate(items, num_samples)` for `build_reasoning_dataset`: rationales sampled at temperature 1."""
    import torch

    from hf_meddiff.evaluation import load_model_and_processor
    from hf_meddiff.evaluation.inference import pipeline_for, text_generation_overrides
    from hf_meddiff.formatting import format_question

    model, processor = load_model_and_processor(model_dir)
    model.eval()
    pipe = pipeline_for(model, processor)
    kwargs = text_generation_overrides(model, REASONING_LENGTH, steps, temperature=1.0)
    torch.manual_seed(seed)

    def generate(items: list[dict], num_samples: int) -> list[list[str]]:
        images = [item["image"] for item in items for _ in range(num_samples)]
        questions = [
            format_question(item["question"], item["options"], style=STYLE)
            for item in items
            for _ in range(num_samples)
        ]
        texts: list[str] = []
        for start in range(0, len(images), batch_size):
            result = pipe(
                image=images[start : start + batch_size],
                question=questions[start : start + batch_size],
                **kwargs,
            )
            texts += [result.text] if isinstance(result.text, str) else list(result.text)
        return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(items))]

    return generate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument(
        "--pool", type=int, default=None, help="training questions sampled (default 160, 8 with --quick)"
    )
    parser.add_argument("--num-samples", type=int, default=4, help="rationales sampled per question")
    args = parser.parse_args()
    size = size_from_args(args)
    pool_size = args.pool or (8 if args.quick else 160)
    run = Run("claim_rejection_sampling", args, size)

    from hf_meddiff.data import build_reasoning_dataset

    acceptance: dict[str, dict[str, list]] = {"modality": {}, "question_type": {}, "overall": {"all": []}}
    arms: dict[str, dict[str, list]] = {arm: {"accuracy": [], "format": []} for arm in ARMS}
    accepted_rows: list[int] = []
    rejected: list[dict[str, int]] = []  # per seed: samples rejected for no_answer / wrong_answer / no_think
    for seed in range(args.seeds):
        base = cached_base(size, seed)
        base_data = str(base_data_path(base))
        reasoner = cached_reasoner(size, seed, STYLE)
        ds = make_data(size, seed, expand=False)
        train = ds.select([i for i, s in enumerate(ds["split"]) if s == "train"])
        pool = train.select(range(min(pool_size, len(train))))
        test = ds.select([i for i, s in enumerate(ds["split"]) if s == "test"])

        # 1. rejection sampling
        accepted, report = build_reasoning_dataset(
            pool, mode="rejection", style=STYLE, generate=sampler(reasoner, 16, seed, size.reasoning_steps),
            num_samples=args.num_samples, max_accepted=2, return_report=True,
        )  # fmt: skip
        print(f"seed {seed}: {report}", flush=True)
        acceptance["overall"]["all"].append(report.acceptance_rate)
        for key, rates in (
            ("modality", report.acceptance_by_modality),
            ("question_type", report.acceptance_by_question_type),
        ):
            for name, rate in rates.items():
                acceptance[key].setdefault(name, []).append(rate)
        accepted_rows.append(len(accepted))
        rejected.append(dict(report.rejected))

        # 2. the two arms
        folder = run.out / f"seed{seed}"
        models: dict[str, str] = {}
        if len(accepted):
            rs_data = save_data(accepted, folder / "accepted")
            models["RS-SFT"] = run_sft(
                folder / "rs_sft", rs_data, size, seed=seed, steps=size.arm_sft_steps, init=base,
                extra=reasoning_sft_args(STYLE),
            )  # fmt: skip
            models["RS-SFT -> GRPO"] = run_grpo(
                folder / "rs_sft_grpo", models["RS-SFT"], base_data, size, seed=seed,
                extra=reasoning_grpo_args(STYLE, size),
            )  # fmt: skip
        else:
            print(f"seed {seed}: no rationale accepted; the RS-SFT arm is skipped", flush=True)
        models["GRPO from base"] = run_grpo(
            folder / "grpo_base", base, base_data, size, seed=seed, extra=reasoning_grpo_args(STYLE, size)
        )

        # 3. evaluation on the same held-out rows
        for arm, model in models.items():
            summary = evaluate(
                model, test, folder / f"eval-{arm.replace(' ', '_').replace('>', '')}", size,
                tasks=["reasoning"], reasoning_style=STYLE, reasoning_gen_length=REASONING_LENGTH,
                vqa_scoring="generate",
            )  # fmt: skip
            texts = [p["prediction"] for p in predictions(summary, "reasoning")]
            arms[arm]["accuracy"].append(summary.get("reasoning", {}).get("accuracy"))
            arms[arm]["format"].append(format_compliance(texts, STYLE))
            print(f"seed {seed} {arm}: { ({k: v[-1] for k, v in arms[arm].items()}) }", flush=True)

    def rate_row(key: str, names) -> list[str]:
        return [fmt(acceptance[key].get(name, []), percent=True) for name in names]

    modalities = [m for m in MODALITIES if m in acceptance["modality"]]
    qtypes = [q for q in MULTIPLE_CHOICE_TYPES if q in acceptance["question_type"]]
    tables = [
        markdown_table(
            ["acceptance %", "all", *modalities],
            [
                [
                    "per modality",
                    fmt(acceptance["overall"]["all"], percent=True),
                    *rate_row("modality", modalities),
                ]
            ],
        ),
        markdown_table(
            ["acceptance %", *qtypes], [["per question type", *rate_row("question_type", qtypes)]]
        ),
        markdown_table(
            ["model", "accuracy %", "format %", "seeds"],
            [
                [
                    arm,
                    fmt(arms[arm]["accuracy"], percent=True),
                    fmt(arms[arm]["format"], percent=True),
                    len(arms[arm]["accuracy"]),
                ]
                for arm in ARMS
            ],
        ),
    ]
    notes = [
        f"{pool_size} training questions x {args.num_samples} samples per seed from the reasoner ({STYLE}); "
        f"accepted rows per seed: {accepted_rows}; rejected samples per seed by reason: {rejected}. GRPO: {size.grpo_steps} steps, accuracy + format rewards "
        f"(trainers/grpo_vqa.yaml). {size.eval_samples} held-out test rows; chance is 25 %. Mean ± std over seeds."
    ]
    run.finish(
        "Rejection-sampled reasoning data (GMAI-VL-R1)",
        tables,
        {"acceptance": acceptance, "arms": arms, "accepted_rows": accepted_rows, "rejected": rejected},
        notes,
    )


if __name__ == "__main__":
    main()
