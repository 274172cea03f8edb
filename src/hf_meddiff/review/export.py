"""Reviews become data: `export_reviews` writes the current judgements as a canonical `datasets.Dataset`
(Parquet + dataset card) with a summary, and `load_review_dataset` reads that export back as canonical rows.

```
<output_dir>/data.parquet   one row per (case, reviewer): the canonical columns + the review's columns
<output_dir>/README.md      dataset card (hf_meddiff.data.render_dataset_card) with the summary
<output_dir>/summary.json   accuracy as judged, mean reasoning score, grounding precision, IoU of model boxes
                            against corrected boxes, Cohen's kappa between reviewers of the same cases
```

The canonical columns make the export an evaluation set (`hf-meddiff evaluate --data <output_dir> --split all`)
and a GRPO source (`dataset_name: canonical`, `dataset_path: <output_dir>`, `dataset_train_split: all`): `boxes`
holds the grounding targets the review gave, the model boxes judged correct plus the corrected boxes, so the
grounding reward scores against what the reviewer drew.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .cases import ReviewCase
from .store import ANSWER_VERDICTS, ReviewStore

__all__ = [
    "REVIEW_COLUMNS",
    "cohen_kappa",
    "export_reviews",
    "grounding_targets",
    "load_review_dataset",
    "summarize_reviews",
]

REVIEW_COLUMNS = (
    "review_id",
    "reviewer",
    "reviewed_at",
    "model_revision",
    "prediction",
    "predicted_answer",
    "answer_verdict",
    "reasoning_score",
    "box_verdicts",
    "model_boxes",
    "corrected_boxes",
    "reference_boxes",
    "boxes_source",
    "comment",
)
"""Columns the export adds to the canonical ones."""


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items: (observed - chance agreement) / (1 - chance).
    None when it is undefined (no items, or both raters used one and the same label throughout).

    >>> cohen_kappa(["correct", "correct", "incorrect", "incorrect"], ["correct", "incorrect", "incorrect", "incorrect"])
    0.5
    """
    if len(first) != len(second):
        raise ValueError(
            f"cohen_kappa needs two equally long label lists, got {len(first)} and {len(second)}."
        )
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    labels = set(first) | set(second)
    chance = sum((list(first).count(k) / n) * (list(second).count(k) / n) for k in labels)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def grounding_targets(review: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The boxes a review vouches for: model boxes judged correct, then the corrected boxes (label + bbox)."""
    targets = [
        {"label": v.get("label") or "", "bbox": [int(x) for x in v["bbox"]]}
        for v in review.get("box_verdicts") or []
        if v.get("verdict") == "correct"
    ]
    targets += [
        {"label": b.get("label") or "", "bbox": [int(x) for x in b["bbox"]]}
        for b in review.get("corrected_boxes") or []
    ]
    return targets


def summarize_reviews(reviews: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of current judgements (`ReviewStore.latest_reviews()`):

    - `accuracy_as_judged`: answers judged correct / answers judged correct or incorrect (`unsure` left out;
      `unsure_rate` says how many);
    - `mean_reasoning_score` (1-5) over the judgements that gave one;
    - `grounding_precision`: model boxes judged correct / model boxes judged;
    - `corrected_box_iou`: mean IoU of a model box and the corrected box drawn for it (`num_corrected_pairs`);
    - `kappa_answer` / `kappa_reasoning`: Cohen's kappa between the first two reviewers (by name) of each case
      reviewed at least twice (`num_cases_reviewed_twice`); None when no case was, or when it is undefined.

    >>> summarize_reviews([{"case_id": "c", "reviewer": "a", "answer_verdict": "correct", "reasoning_score": 4,
    ...     "box_verdicts": [{"index": 1, "verdict": "wrong place", "bbox": [0, 0, 10, 10]}],
    ...     "corrected_boxes": [{"for_box": 1, "bbox": [5, 0, 15, 10], "label": "x"}]}])["corrected_box_iou"]
    0.3333333333333333
    """
    from ..metrics.grounding import box_iou

    judged = [r for r in reviews if r["answer_verdict"] in ("correct", "incorrect")]
    scores = [int(r["reasoning_score"]) for r in reviews if r.get("reasoning_score") is not None]
    box_verdicts = [v for r in reviews for v in (r.get("box_verdicts") or [])]
    ious = []
    for r in reviews:
        model = {int(v["index"]): v["bbox"] for v in r.get("box_verdicts") or [] if v.get("bbox") is not None}
        for b in r.get("corrected_boxes") or []:
            if b.get("for_box") is not None and int(b["for_box"]) in model:
                ious.append(box_iou(model[int(b["for_box"])], b["bbox"]))
    by_case: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in reviews:
        by_case[(r.get("model_revision", ""), r["case_id"])][r["reviewer"]] = r
    pairs = [tuple(per[name] for name in sorted(per)[:2]) for per in by_case.values() if len(per) >= 2]
    scored_pairs = [
        (a, b)
        for a, b in pairs
        if a.get("reasoning_score") is not None and b.get("reasoning_score") is not None
    ]
    return {
        "num_reviews": len(reviews),
        "num_cases": len(by_case),
        "reviewers": sorted({r["reviewer"] for r in reviews}),
        "accuracy_as_judged": sum(r["answer_verdict"] == "correct" for r in judged) / len(judged)
        if judged
        else None,
        "unsure_rate": sum(r["answer_verdict"] == "unsure" for r in reviews) / len(reviews)
        if reviews
        else None,
        "answer_verdicts": {v: sum(r["answer_verdict"] == v for r in reviews) for v in ANSWER_VERDICTS},
        "mean_reasoning_score": sum(scores) / len(scores) if scores else None,
        "num_boxes_judged": len(box_verdicts),
        "grounding_precision": (
            sum(v["verdict"] == "correct" for v in box_verdicts) / len(box_verdicts) if box_verdicts else None
        ),
        "num_corrected_boxes": sum(len(r.get("corrected_boxes") or []) for r in reviews),
        "num_corrected_pairs": len(ious),
        "corrected_box_iou": sum(ious) / len(ious) if ious else None,
        "num_cases_reviewed_twice": len(pairs),
        "kappa_answer": cohen_kappa(
            [a["answer_verdict"] for a, _ in pairs], [b["answer_verdict"] for _, b in pairs]
        ),
        "kappa_reasoning": cohen_kappa(
            [int(a["reasoning_score"]) for a, _ in scored_pairs],
            [int(b["reasoning_score"]) for _, b in scored_pairs],
        ),
    }


def _summary_markdown(summary: Mapping[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    rows = [
        ("judgements (current, one per case and reviewer)", summary["num_reviews"]),
        ("cases", summary["num_cases"]),
        ("reviewers", ", ".join(summary["reviewers"]) or "none"),
        ("accuracy as judged (correct / (correct + incorrect))", summary["accuracy_as_judged"]),
        ("unsure rate", summary["unsure_rate"]),
        ("mean reasoning score (1-5)", summary["mean_reasoning_score"]),
        (
            f"grounding precision ({summary['num_boxes_judged']} model boxes judged)",
            summary["grounding_precision"],
        ),
        (
            f"IoU of model boxes vs corrected boxes ({summary['num_corrected_pairs']} pairs)",
            summary["corrected_box_iou"],
        ),
        (
            f"Cohen's kappa, answer verdicts ({summary['num_cases_reviewed_twice']} cases reviewed twice)",
            summary["kappa_answer"],
        ),
        ("Cohen's kappa, reasoning scores", summary["kappa_reasoning"]),
    ]
    return "\n".join(["| measure | value |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in rows])


def _export_row(case: ReviewCase, review: Mapping[str, Any]) -> dict[str, Any]:
    targets = grounding_targets(review)
    answer = case.answer
    if not answer and review["answer_verdict"] == "correct":
        answer = case.predicted_answer  # no reference: the answer the reviewer vouched for
    return {
        "id": case.case_id,
        "image": {"bytes": case.image_png, "path": None} if case.image_png else None,
        "modality": case.modality,
        "question": case.question,
        "options": list(case.options),
        "answer": answer,
        "question_type": case.question_type,
        "report": case.report,
        "rationale": case.rationale,
        "boxes": targets if review.get("box_verdicts") or review.get("corrected_boxes") else list(case.boxes),
        "split": case.split,
        "source": case.source,
        "review_id": int(review["review_id"]),
        "reviewer": review["reviewer"],
        "reviewed_at": review["created_at"],
        "model_revision": review["model_revision"],
        "prediction": review.get("prediction") or case.prediction,
        "predicted_answer": case.predicted_answer,
        "answer_verdict": review["answer_verdict"],
        "reasoning_score": review.get("reasoning_score"),
        "box_verdicts": [
            {
                "index": int(v["index"]),
                "label": v.get("label") or "",
                "bbox": [int(x) for x in v["bbox"]],
                "verdict": v["verdict"],
            }
            for v in review.get("box_verdicts") or []
        ],
        "model_boxes": case.model_boxes,
        "corrected_boxes": [
            {
                "label": b.get("label") or "",
                "bbox": [int(x) for x in b["bbox"]],
                "for_box": None if b.get("for_box") is None else int(b["for_box"]),
            }
            for b in review.get("corrected_boxes") or []
        ],
        "reference_boxes": list(case.boxes),
        "boxes_source": "review"
        if review.get("box_verdicts") or review.get("corrected_boxes")
        else "reference",
        "comment": review.get("comment") or "",
    }


def _features():
    from datasets import Features, Image, List, Value

    from ..data.schema import CANONICAL_FEATURES

    box = {"label": Value("string"), "bbox": List(Value("int32"), length=4)}
    return Features(
        {
            **CANONICAL_FEATURES,
            "review_id": Value("int64"),
            "reviewer": Value("string"),
            "reviewed_at": Value("string"),
            "model_revision": Value("string"),
            "prediction": Value("string"),
            "predicted_answer": Value("string"),
            "answer_verdict": Value("string"),
            "reasoning_score": Value("int32"),
            "box_verdicts": List(
                {
                    "index": Value("int32"),
                    "label": Value("string"),
                    "bbox": List(Value("int32"), length=4),
                    "verdict": Value("string"),
                }
            ),
            "model_boxes": List(box),
            "corrected_boxes": List({**box, "for_box": Value("int32")}),
            "reference_boxes": List(box),
            "boxes_source": Value("string"),
            "comment": Value("string"),
            "image": Image(),
        }
    )


def export_reviews(
    db: str | os.PathLike | ReviewStore,
    output_dir: str | os.PathLike,
    *,
    model_revision: str | None = None,
    check_phi: bool = True,
) -> dict[str, Any]:
    """Write the current judgements of `db` as `data.parquet` + `README.md` + `summary.json` in `output_dir`.

    Args:
        db: the review database (path or `ReviewStore`).
        output_dir: where to write.
        model_revision: only the reviews of this model revision (default: all of them).
        check_phi: refuse to write when a text column looks like PHI (`hf_meddiff.data.check_no_phi`); the
            comments are free text, so this stays on unless you have checked them.

    Returns:
        the summary (`summarize_reviews`) with `files` and `num_rows`.

    Example:

    ```python
    >>> summary = export_reviews("reviews.sqlite", "reviews_export")  # doctest: +SKIP
    >>> summary["accuracy_as_judged"], summary["files"]["data"]  # doctest: +SKIP
    (0.5, 'reviews_export/data.parquet')

    ```
    """
    import datasets

    from ..data import check_no_phi, render_dataset_card

    store = db if isinstance(db, ReviewStore) else ReviewStore(db)
    if not isinstance(db, ReviewStore) and not Path(db).is_file():
        raise FileNotFoundError(f"--db {db}: no such review database.")
    reviews = store.latest_reviews(model_revision)
    if not reviews:
        raise ValueError(
            f"{store.path}: no reviews{f' of model revision {model_revision!r}' if model_revision else ''} to export "
            f"(revisions with cases: {store.model_revisions()})."
        )
    cases: dict[tuple[str, str], ReviewCase] = {}
    for revision in sorted({r["model_revision"] for r in reviews}):
        for case in store.cases(revision):
            cases[(revision, case.case_id)] = case
    rows = [_export_row(cases[(r["model_revision"], r["case_id"])], r) for r in reviews]
    features = _features()
    ds = datasets.Dataset.from_list(rows, features=features)
    if check_phi:
        check_no_phi(ds)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out / "data.parquet"))
    summary = summarize_reviews(reviews)
    summary["num_rows"] = len(ds)
    summary["model_revisions"] = sorted({r["model_revision"] for r in reviews})
    table = _summary_markdown(summary)
    card = render_dataset_card(
        ds,
        pretty_name="Clinician reviews of grounded reasoning",
        description=(
            "Judgements of a MedDiff model's grounded answers made with `hf-meddiff review`: per case and "
            "reviewer, whether the answer is correct, a 1-5 reasoning score, a verdict for every box the rationale "
            "cites and boxes the reviewer drew to correct them. `boxes` holds the grounding targets the review "
            "vouches for (model boxes judged correct and corrected boxes), `reference_boxes` the data's own.\n\n"
            f"Model revisions: {', '.join(summary['model_revisions'])}.\n\n## Summary\n\n{table}"
        ),
        intended_use=(
            "Evaluation set for `hf-meddiff evaluate --data <this folder> --split all`, grounding targets for GRPO "
            "(`dataset_name: canonical`, `dataset_path: <this folder>`, `dataset_train_split: all`), and the study "
            "of how reviewers judge model reasoning. Not for clinical decisions."
        ),
        tags=["clinician-review", "grounding"],
    )
    card.save(str(out / "README.md"))
    summary["files"] = {
        "data": str(out / "data.parquet"),
        "card": str(out / "README.md"),
        "summary": str(out / "summary.json"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def load_review_dataset(
    path: str | os.PathLike,
    *,
    verdicts: Sequence[str] | None = None,
    min_reasoning_score: int | None = None,
    with_boxes: bool = False,
):
    """An export of `export_reviews` as canonical rows (`hf_meddiff.data.CANONICAL_COLUMNS` first, the review's
    columns kept), e.g. grounding targets for GRPO: `boxes` are the boxes the reviewer vouched for.

    Args:
        path: the export folder or its `data.parquet`.
        verdicts: keep rows whose `answer_verdict` is one of these (e.g. `["correct"]`).
        min_reasoning_score: keep rows scored at least this (rows without a score are dropped).
        with_boxes: keep only rows with at least one grounding target.

    Example:

    ```python
    >>> ds = load_review_dataset("reviews_export", verdicts=["correct"], with_boxes=True)  # doctest: +SKIP
    >>> ds[0]["boxes"]  # doctest: +SKIP
    [{'label': 'nodule', 'bbox': [120, 80, 340, 310]}]

    ```
    """
    from ..data.schema import CANONICAL_COLUMNS
    from ..evaluation import load_canonical

    p = Path(path)
    if p.is_dir() and not (p / "data.parquet").is_file():
        raise FileNotFoundError(
            f"{p}: no data.parquet; export reviews with `hf-meddiff review export --output-dir {p}`."
        )
    ds = load_canonical(p / "data.parquet" if p.is_dir() else p)
    missing = [
        c for c in (*CANONICAL_COLUMNS, "answer_verdict", "reasoning_score") if c not in ds.column_names
    ]
    if missing:
        raise ValueError(
            f"{p}: not a review export, columns {missing} are missing; export with `hf-meddiff review export`."
        )
    if verdicts is not None:
        unknown = sorted(set(verdicts) - set(ANSWER_VERDICTS))
        if unknown:
            raise ValueError(f"verdicts {unknown} unknown; use any of {list(ANSWER_VERDICTS)}.")
        keep = set(verdicts)
        ds = ds.filter(lambda v: v in keep, input_columns="answer_verdict")
    if min_reasoning_score is not None:
        ds = ds.filter(lambda s: s is not None and s >= min_reasoning_score, input_columns="reasoning_score")
    if with_boxes:
        ds = ds.filter(lambda b: bool(b), input_columns="boxes")
    return ds.select_columns(
        [*CANONICAL_COLUMNS, *(c for c in ds.column_names if c not in CANONICAL_COLUMNS)]
    )
