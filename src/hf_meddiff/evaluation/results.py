"""The results of an evaluation run and how they are written: `results.json` (the summary that
`hf_meddiff.hub.render_model_card(eval_results=…)` turns into `model-index`), `results.md` (the same as Markdown
tables) and `predictions.jsonl` (one line per generated answer / report, for error analysis)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvaluationResults", "results_to_markdown"]


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
    if isinstance(summary.get("image"), Mapping) and len(summary["image"]) > 1:
        lines += ["| image metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in summary["image"].items()] + [""]
    files = summary.get("files", {})
    pictures = [f"![{k}]({Path(v).name})" for k, v in files.items() if str(v).endswith(".png")]
    if pictures:
        lines += ["## Plots", ""] + pictures + [""]
    return "\n".join(lines)
