"""Before/after comparison of two evaluation summaries of the same held-out rows (e.g. the SFT model and the model
after GRPO): one table with both values, the change, and whether the change is a gain, a loss or no change.

```python
>>> before = {"vqa": {"accuracy": 0.50, "per_question_type": {"counting": {"accuracy": 0.25, "n": 8}}},
...           "report": {"bleu_1": 0.40}}
>>> after = {"vqa": {"accuracy": 0.55, "per_question_type": {"counting": {"accuracy": 0.25, "n": 8}}},
...          "report": {"bleu_1": 0.38}}
>>> rows = compare_summaries(before, after)
>>> [(r["metric"], r["verdict"]) for r in rows]
[('VQA accuracy', 'gain'), ('VQA accuracy: counting', 'no change'), ('Report BLEU-1', 'loss')]

```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["compare_summaries", "comparison_markdown", "LOWER_IS_BETTER"]

# Metrics where a smaller value is better (distances between image distributions).
LOWER_IS_BETTER = ("fid", "kid", "pixel_mse", "mse")

# (section, key, label) of the headline metrics, in table order; per-group rows follow their section's headline.
_HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("vqa", "accuracy", "VQA accuracy"),
    ("vqa_ranked", "accuracy", "VQA accuracy (option ranking)"),
    ("reasoning", "accuracy", "Reasoning accuracy"),
    ("reasoning", "with_think", "Format compliance (<think>)"),
    ("grounding", "mean_iou", "Grounding IoU"),
    ("report", "bleu_1", "Report BLEU-1"),
    ("report", "rouge_l", "Report ROUGE-L"),
    ("report", "cider", "Report CIDEr"),
)
_GROUPS = (("per_modality", "modality"), ("per_question_type", "question type"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _verdict(before: float, after: float, lower_is_better: bool, tolerance: float) -> str:
    change = after - before
    if abs(change) <= tolerance:
        return "no change"
    better = change < 0 if lower_is_better else change > 0
    return "gain" if better else "loss"


def _entries(summary: Mapping[str, Any]) -> list[tuple[str, float | None, bool]]:
    """(label, value, lower_is_better) of every metric the comparison knows, in table order."""
    out: list[tuple[str, float | None, bool]] = []
    seen: set[str] = set()
    for section, key, label in _HEADLINE:
        part = summary.get(section)
        if not isinstance(part, Mapping) or key not in part or label in seen:
            continue
        seen.add(label)
        out.append((label, _number(part.get(key)), False))
        if key == "accuracy" and section == "vqa":
            for group_key, _ in _GROUPS:
                for name, stats in sorted((part.get(group_key) or {}).items()):
                    if isinstance(stats, Mapping):
                        out.append((f"{label}: {name}", _number(stats.get("accuracy")), False))
    clinical = (summary.get("report") or {}).get("clinical_efficacy")
    if isinstance(clinical, Mapping) and "f1" in clinical:
        out.append(("Report clinical F1", _number(clinical.get("f1")), False))
    image = summary.get("image")
    if isinstance(image, Mapping):
        for key, value in image.items():
            number = _number(value)
            if number is None or key == "n" or key.startswith("num_") or "std" in key.split("_"):
                continue
            lower = any(key.lower().startswith(prefix) for prefix in LOWER_IS_BETTER)
            out.append((f"Report-to-image {key}", number, lower))
    return out


def compare_summaries(
    before: Mapping[str, Any], after: Mapping[str, Any], tolerance: float = 1e-9
) -> list[dict[str, Any]]:
    """Rows `{metric, before, after, change, verdict}` for every metric present in either summary.

    `verdict` is "gain", "loss" or "no change" (|change| <= `tolerance`), with FID/KID read as lower-is-better,
    or "n/a" when one side lacks the metric.
    """
    left = {label: (value, lower) for label, value, lower in _entries(before)}
    right = {label: (value, lower) for label, value, lower in _entries(after)}
    labels = list(left) + [label for label in right if label not in left]
    rows = []
    for label in labels:
        b, lower = left.get(label, (None, False))
        a, lower_right = right.get(label, (None, lower))
        lower = lower or lower_right
        if a is None or b is None:
            rows.append({"metric": label, "before": b, "after": a, "change": None, "verdict": "n/a"})
            continue
        rows.append(
            {
                "metric": label,
                "before": b,
                "after": a,
                "change": a - b,
                "verdict": _verdict(b, a, lower, tolerance),
            }
        )
    return rows


def comparison_markdown(
    rows: Sequence[Mapping[str, Any]],
    labels: tuple[str, str] = ("SFT", "GRPO"),
    title: str | None = None,
    num_samples: int | None = None,
) -> str:
    """The rows of `compare_summaries` as a Markdown table, with a one-line count of gains and losses; with
    `num_samples` (rows evaluated) it also says whether the headline VQA change is within sampling noise."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = []
    if title:
        lines += [f"## {title}", ""]
    lines += [
        f"| Metric | {labels[0]} | {labels[1]} | Change | |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        change = "-" if row["change"] is None else f"{row['change']:+.4f}"
        lines.append(
            f"| {row['metric']} | {fmt(row['before'])} | {fmt(row['after'])} | {change} | {row['verdict']} |"
        )
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("gain", "loss", "no change")}
    noise = ""
    headline_row = next((r for r in rows if r["metric"] == "VQA accuracy" and r["before"] is not None), None)
    if headline_row is not None and num_samples:
        p = min(max(headline_row["before"], 1e-6), 1 - 1e-6)
        spread = 2 * (2 * p * (1 - p) / num_samples) ** 0.5
        noise = (
            f" A change in VQA accuracy smaller than about ±{spread:.3f} (two standard errors of the difference of two "
            f"accuracies on {num_samples} rows) is within sampling noise"
            + (" — this one is." if abs(headline_row["change"] or 0.0) < spread else ".")
        )
    headline = next((r for r in rows if r["metric"] == "VQA accuracy"), None)
    lines += [
        "",
        f"{counts['gain']} gains, {counts['loss']} losses, {counts['no change']} unchanged over {len(rows)} metrics"
        + (
            f"; headline VQA accuracy: {headline['verdict']}"
            + (" (no gain)" if headline["verdict"] != "gain" else "")
            if headline
            else ""
        )
        + "."
        + noise,
    ]
    return "\n".join(lines)
