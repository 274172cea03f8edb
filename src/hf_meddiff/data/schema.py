"""The canonical dataset schema every loader and generator produces.

Columns (a `datasets.Dataset`, images as `datasets.Image`):

- `id` (str): unique id of the record within its source.
- `image` (Image): the image (PIL on access). Grey-scale images are mode "L", colour "RGB".
- `modality` (str): one of `hf_meddiff.constants.MODALITIES`; "" only when a public release does not say and
  it cannot be read from the record (VQA-RAD, PMC-VQA; counted as `modality_unknown` in the load report).
- `question` (str): a VQA question, "" when the record has none.
- `options` (list[str]): multiple-choice option texts in letter order (A, B, C, D); [] for open questions.
- `answer` (str): for multiple choice the correct **letter** ("B"); otherwise the answer text; "" when none.
- `question_type` (str): one of `hf_meddiff.constants.QUESTION_TYPES` ("open" = any other type), "" when no
  question.
- `report` (str): free-text report ("Findings: … Impression: …"), "" when none.
- `rationale` (str): step-by-step reasoning that may cite boxes as `<box>[x0,y0,x1,y1]</box>`, "" when none.
- `boxes` (list[{label: str, bbox: [x0, y0, x1, y1]}]): findings with integer boxes normalised to 0..999.
- `split` (str): "train" / "validation" / "test".
- `source` (str): where the record came from ("medphantom", "iu_xray", …).

Optional columns a source may add are kept (e.g. MedPhantom's `anatomy`, `findings`, `severity`, `locations`,
`num_findings`; the public-set loaders add `anatomy`).
"""

from __future__ import annotations

from datasets import Features, Image, List, Value

CANONICAL_FEATURES = Features(
    {
        "id": Value("string"),
        "image": Image(),
        "modality": Value("string"),
        "question": Value("string"),
        "options": List(Value("string")),
        "answer": Value("string"),
        "question_type": Value("string"),
        "report": Value("string"),
        "rationale": Value("string"),
        "boxes": List({"label": Value("string"), "bbox": List(Value("int32"), length=4)}),
        "split": Value("string"),
        "source": Value("string"),
    }
)
CANONICAL_COLUMNS = tuple(CANONICAL_FEATURES.keys())
