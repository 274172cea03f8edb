"""Claim (Med-R1, GMAI-VL-R1): RL generalises better than SFT to modalities and question types it never saw.

For each held-out group (some modalities, or some question types) an SFT base is trained on MedPhantom without the
group (`split_phantom(by=..., holdout=...)`: every task of those rows is left out, and the text and image tokenizers are
fitted without them). From that base two arms
continue on the same in-distribution training rows:

- SFT: more masked-diffusion SFT on VQA (`hf-meddiff sft`, trainers/pretrain_embedded.yaml, `--tasks vqa`);
- GRPO: RL on VQA with the answer-accuracy reward (`hf-meddiff grpo`, trainers/grpo_vqa.yaml, `--tasks vqa`).

The base and both arms answer the whole i.i.d. test split (every modality and question type, one question per
case): the grids give accuracy per test modality / question type for each training group (held-out columns marked
with *), and the summary gives in-distribution vs held-out accuracy and each arm's change over the base.

    python examples/claim_rl_generalises.py --output-dir outputs/claims/rl_generalises
    python examples/claim_rl_generalises.py --output-dir /tmp/gen --quick      # smoke run
"""

from __future__ import annotations

import argparse

from _claims_common import (
    Run,
    add_common_args,
    base_data_path,
    cached_base,
    evaluate,
    fmt,
    make_data,
    markdown_table,
    run_grpo,
    run_sft,
    size_from_args,
)

from hf_meddiff.constants import MODALITIES, QUESTION_TYPES

MULTIPLE_CHOICE_TYPES = tuple(t for t in QUESTION_TYPES if t != "open")

ARMS = ("base", "SFT", "GRPO")
AXES = {
    "modality": ("per_modality", MODALITIES),
    "question_type": ("per_question_type", MULTIPLE_CHOICE_TYPES),
}


def pooled(table: dict, keys) -> float | None:
    """Accuracy over the rows of `keys` in a per-group table (weighted by their counts)."""
    cells = [table[k] for k in keys if k in table and table[k].get("n")]
    n = sum(c["n"] for c in cells)
    return sum(c["accuracy"] * c["n"] for c in cells) / n if n else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument(
        "--modality-holdouts", nargs="*", default=["ct,mri", "fundus,oct"],
        help="held-out modality groups (comma-separated modalities per group)",
    )  # fmt: skip
    parser.add_argument(
        "--type-holdouts", nargs="*", default=["diagnosis", "counting"],
        help="held-out question-type groups (comma-separated types per group)",
    )  # fmt: skip
    args = parser.parse_args()
    size = size_from_args(args)
    if args.quick:
        args.modality_holdouts, args.type_holdouts = args.modality_holdouts[:1], args.type_holdouts[:1]
    run = Run("claim_rl_generalises", args, size)

    groups = [("modality", tuple(g.split(","))) for g in args.modality_holdouts]
    groups += [("question_type", tuple(g.split(","))) for g in args.type_holdouts]
    # grid[axis][group][arm][column] -> accuracies over seeds; summary[axis][arm]["id"/"ood"] likewise
    grid: dict = {}
    summary: dict = {}
    for seed in range(args.seeds):
        ds = make_data(size, seed, expand=False)
        test = ds.select([i for i, s in enumerate(ds["split"]) if s == "test"])
        for axis, holdout in groups:
            label = "w/o " + "+".join(holdout)
            base = cached_base(size, seed, data=axis, holdout=holdout)
            data = str(base_data_path(base))
            folder = run.out / f"seed{seed}" / f"{axis}-{'_'.join(holdout)}"
            models = {
                "base": base,
                "SFT": run_sft(
                    folder / "sft", data, size, seed=seed, steps=size.arm_sft_steps, init=base,
                    extra=["--tasks", "vqa"],
                ),
                "GRPO": run_grpo(
                    folder / "grpo", base, data, size, seed=seed, recipe="grpo_vqa.yaml",
                    extra=["--tasks", "vqa", "--rewards", "accuracy", "--reward_weights", "1.0"],
                ),
            }  # fmt: skip
            section_key, columns = AXES[axis]
            for arm, model in models.items():
                result = evaluate(
                    model, test, folder / f"eval-{arm}", size, tasks=["vqa"], vqa_scoring="generate",
                    max_samples=None,
                )  # fmt: skip
                table = result.get("vqa", {}).get(section_key, {})
                cells = grid.setdefault(axis, {}).setdefault(label, {}).setdefault(arm, {})
                for column in columns:
                    cells.setdefault(column, []).append(table.get(column, {}).get("accuracy"))
                inside = [c for c in columns if c not in holdout]
                entry = summary.setdefault(axis, {}).setdefault(arm, {"id": [], "ood": []})
                entry["id"].append(pooled(table, inside))
                entry["ood"].append(pooled(table, holdout))
                print(
                    f"seed {seed} {axis} {label} {arm}: in-distribution {entry['id'][-1]}, "
                    f"held-out {entry['ood'][-1]}",
                    flush=True,
                )

    tables = []
    summary_rows = []
    for axis, arms in summary.items():
        base_id, base_ood = arms["base"]["id"], arms["base"]["ood"]
        for arm in ARMS:
            gain_id = [a - b for a, b in zip(arms[arm]["id"], base_id) if a is not None and b is not None]
            gain_ood = [a - b for a, b in zip(arms[arm]["ood"], base_ood) if a is not None and b is not None]
            summary_rows.append(
                [
                    axis,
                    arm,
                    fmt(arms[arm]["id"], percent=True),
                    fmt(arms[arm]["ood"], percent=True),
                    "-" if arm == "base" else fmt(gain_id, percent=True),
                    "-" if arm == "base" else fmt(gain_ood, percent=True),
                ]
            )
    tables.append(
        markdown_table(
            [
                "held out",
                "model",
                "in-distribution %",
                "held-out %",
                "Δ in-dist. vs base",
                "Δ held-out vs base",
            ],
            summary_rows,
        )
    )
    for axis, by_group in grid.items():
        _, columns = AXES[axis]
        holdouts = {label: label[4:].split("+") for label in by_group}
        rows = []
        for label, arms in by_group.items():
            for arm in ARMS:
                rows.append([label, arm, *[fmt(arms[arm][c], percent=True) for c in columns]])
        header_cols = [c + ("*" if any(c in h for h in holdouts.values()) else "") for c in columns]
        tables.append(f"Accuracy % per test {axis.replace('_', ' ')} (* held out by some row's group):\n\n"
                      + markdown_table(["trained", "model", *header_cols], rows))  # fmt: skip
    notes = [
        f"VQA answers sampled on the trained 4-token canvas and matched to the options (chance 25 %), on every row of "
        f"the i.i.d. test split. SFT arm: {size.arm_sft_steps} steps x {size.sft_batch_size} examples; GRPO arm: "
        f"{size.grpo_steps} steps x {size.grpo_batch_size} prompts x {size.num_generations} rollouts. Mean ± std "
        f"over {args.seeds} seed(s); Δ = arm minus base of the same seed, in points."
    ]
    run.finish(
        "RL vs SFT on held-out modalities and question types (Med-R1, GMAI-VL-R1)",
        tables,
        {"grid": grid, "summary": summary, "groups": [[a, list(g)] for a, g in groups]},
        notes,
    )


if __name__ == "__main__":
    main()
