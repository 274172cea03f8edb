"""Clinician review of grounded reasoning: a web app whose judgements become data.

- `cases`: a canonical row + the model's grounded answer (`ReviewCase`), predictions from a `predictions.jsonl`
  written by `hf-meddiff evaluate`, drawing of boxes, model revisions;
- `store`: `ReviewStore`, the SQLite database (one row per judgement, one transaction per write);
- `app`: the Gradio app (`build_app`, `launch_app`; Gradio is the `review` extra: `pip install hf-meddiff[review]`);
- `export`: `export_reviews` (Parquet + dataset card + summary with accuracy as judged, reasoning score, grounding
  precision, IoU against corrected boxes, Cohen's kappa) and `load_review_dataset` (the export as canonical rows,
  `boxes` = the grounding targets the reviewers vouched for);
- `command`: `hf-meddiff review` and `hf-meddiff review export`.

Importing the package loads neither Gradio nor torch.

>>> from hf_meddiff.review import cohen_kappa
>>> cohen_kappa(["correct", "incorrect"], ["correct", "incorrect"])
1.0
"""

from __future__ import annotations

from .cases import ReviewCase, box_labels, cases_from_predictions, read_predictions, render_case
from .export import REVIEW_COLUMNS, cohen_kappa, export_reviews, load_review_dataset, summarize_reviews
from .store import ANSWER_VERDICTS, BOX_VERDICTS, ReviewStore

__all__ = [
    "ANSWER_VERDICTS",
    "BOX_VERDICTS",
    "REVIEW_COLUMNS",
    "ReviewCase",
    "ReviewStore",
    "box_labels",
    "cases_from_predictions",
    "cohen_kappa",
    "export_reviews",
    "load_review_dataset",
    "read_predictions",
    "render_case",
    "summarize_reviews",
]
