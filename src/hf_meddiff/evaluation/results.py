"""The results of an evaluation run and how they are written: `results.json` (the summary that
`hf_meddiff.hub.render_model_card(eval_results=…)` turns into `model-index`), `results.md` (the same as Markdown
tables) and `predictions.jsonl` (one line per generated answer / report, for error analysis)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvaluationResults", "results_to_markdown", "text_to_image_markdown"]


@dataclass
class EvaluationResults:
    """What the task evaluators add to: summary sections, written files (name -> path) and prediction records."""

    summary: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def write(self, output_dir: str | Path) -> dict[str, Any]:
        """Write `predictions.jsonl`, `results.json` and `results.md` to `output_dir`; return the summary (with its
        `files` section)."""
        out = Path(output_dir)
        with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
            for entry in self.predictions:
                f.write(json.dumps(entry) + "\n")
        self.files["predictions"] = str(out / "predictions.jsonl")
        self.files["json"] = str(out / "results.json")
        self.files["markdown"] = str(out / "results.md")
        self.summary["files"] = self.files
        (out / "results.json").write_text(json.dumps(self.summary, indent=2, default=float), encoding="utf-8")
        (out / "results.md").write_text(results_to_markdown(self.summary), encoding="utf-8")
        return self.summary


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "n/a"


_T2I_ROWS = (
    (
        "modality recognised %",
        "modality_recognised",
        "modality_recognised_reconstructed",
        "modality_accuracy_real",
        _pct,
    ),
    (
        "finding recognised %",
        "finding_recognised",
        "finding_recognised_reconstructed",
        "finding_accuracy_real",
        _pct,
    ),
    ("finding recognised / accuracy on real", "finding_recognised_vs_real", None, None, _pct),
    ("FID, judge features", "fid_judge", None, "fid_judge_floor", _fmt),
    ("KID, judge features", "kid_judge", None, "kid_judge_floor", _fmt),
)
_T2I_KEYS = {key for row in _T2I_ROWS for key in row[1:4] if key} | {"n", "judges", "judges_heldout_accuracy"}


def text_to_image_markdown(image: Mapping[str, Any]) -> list[str]:
    """The report-to-image section as Markdown lines: the judges' scores of generated images beside the same
    judges on the real images of the same rows passed through the VQ tokenizer (the ceiling of generation into it)
    and on the real images themselves (recognition) or the real-vs-real floor (FID / KID), then any other image
    metric, then where the judges came from."""
    lines: list[str] = []
    rows = [row for row in _T2I_ROWS if row[1] in image]
    if rows:
        lines += [
            f"| report-to-image (n = {image.get('n', '?')}) | generated | real images through the VQ tokenizer "
            "(ceiling) | real images (reference / floor) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {title} | {fmt(image[gen])} | {fmt(image.get(recon)) if recon in image else '-'} | "
            f"{fmt(image.get(real)) if real else '-'} |"
            for title, gen, recon, real, fmt in rows
        ]
        lines.append("")
    other = {k: v for k, v in image.items() if k not in _T2I_KEYS}
    if other:
        lines += ["| image metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in other.items()] + [""]
    if "judges" in image:
        heldout = image.get("judges_heldout_accuracy") or {}
        accuracy = ", ".join(f"{task} {_pct(v)}" for task, v in heldout.items())
        lines += [
            f"Judges: {image['judges']}" + (f" (held-out real accuracy: {accuracy})." if accuracy else "."),
            "",
        ]
    return lines


def results_to_markdown(summary: Mapping[str, Any]) -> str:
    """The evaluation summary as Markdown: an overall table, then per-modality / per-question-type tables."""
    from ..hub import eval_summary_to_markdown

    ds = summary.get("dataset", {})
    lines = [
        f"# Evaluation of `{summary.get('model', '?')}`",
        "",
        f"Dataset **{ds.get('name', '?')}**, split `{ds.get('split')}`, {ds.get('num_samples', '?')} rows. "
        "Not for clinical decisions.",
        "",
    ]
    table = eval_summary_to_markdown(summary)
    if table:
        lines += [table.split("\n\n", 1)[-1], ""]
    titles = {"vqa": "VQA", "vqa_ranked": "VQA (option ranking)", "reasoning": "Reasoning"}
    for section, title in titles.items():
        data = summary.get(section)
        if not isinstance(data, Mapping):
            continue
        lines += [
            f"**{title} accuracy {data['accuracy']:.3f}** (chance {data['chance']:.3f}, n = {data['n']})",
            "",
        ]
        for group in ("per_modality", "per_question_type"):
            if group in data:
                label = group.replace("per_", "").replace("_", " ")
                lines += [f"| {label} | accuracy | chance | n |", "|---|---|---|---|"]
                lines += [
                    f"| {k} | {v['accuracy']:.3f} | {v['chance']:.3f} | {v['n']} |"
                    for k, v in data[group].items()
                ]
                lines.append("")
    if isinstance(summary.get("grounding"), Mapping):
        g = summary["grounding"]
        lines += (
            ["| grounding | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in g.items()] + [""]
        )
    if isinstance(summary.get("image"), Mapping):
        lines += text_to_image_markdown(summary["image"])
    files = summary.get("files", {})
    pictures = [f"![{k}]({Path(v).name})" for k, v in files.items() if str(v).endswith(".png")]
    if pictures:
        lines += ["## Plots", ""] + pictures + [""]
    return "\n".join(lines)
