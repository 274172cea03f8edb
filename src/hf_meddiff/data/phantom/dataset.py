"""`make_phantom_dataset` (cases -> images, reports, questions, rationales as a canonical dataset) and
`split_phantom` (iid, or holding out a modality / question type)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value

from ...constants import MODALITIES, QUESTION_TYPES
from ...formatting import normalize_box
from ..schema import CANONICAL_FEATURES
from .render import _finding_boxes_px, _finding_shape, _sample_cases, _to_png, render_phantom_images
from .specs import MAX_FINDINGS, MODALITY_SPECS, MULTIPLE_CHOICE_TYPES, PHANTOM_SOURCE, QUADRANTS, SEVERITIES
from .text import PhantomCase, phantom_question, phantom_rationale, phantom_report

# Extra columns MedPhantom adds to the canonical schema.
PHANTOM_FEATURES = Features(
    {
        **CANONICAL_FEATURES,
        "anatomy": Value("string"),
        "findings": List(Value("string")),
        "severity": Value("string"),
        "locations": List(Value("string")),
        "num_findings": Value("int32"),
    }
)


def _check_choice(name: str, values: Sequence[str] | None, allowed: Sequence[str]) -> tuple[str, ...]:
    if values is None:
        return tuple(allowed)
    if isinstance(values, str):
        values = (values,)
    values = tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(
            f"make_phantom_dataset: unknown {name} {bad or values!r}; choose from {tuple(allowed)}."
        )
    return values


def make_phantom_dataset(
    num_cases: int,
    seed: int = 0,
    image_size: int = 64,
    *,
    modalities: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    chunk_size: int = 512,
) -> Dataset:
    """Generate `num_cases` MedPhantom cases as a canonical `datasets.Dataset` (one VQA question per row).

    Args:
        num_cases: number of cases (= rows).
        seed: random seed; the same seed and arguments give byte-identical images and identical text.
        image_size: side of the square images in pixels, 32..256.
        modalities: subset of `hf_meddiff.constants.MODALITIES` (default: all eight, balanced).
        question_types: subset of `("modality", "anatomy", "diagnosis", "grading", "location", "counting",
            "open")` (default: the six multiple-choice types, balanced). "open" questions have no options and
            the answer is the finding text.
        split_fractions: i.i.d. train / validation / test fractions written to the `split` column.
        chunk_size: cases drawn at once (bounds memory: chunk_size * image_size**2 * 3 floats).

    Returns:
        A `Dataset` with `CANONICAL_FEATURES` plus `anatomy` (str), `findings` (list of labels, one per
        finding), `severity` ("none" / "mild" / "moderate" / "severe"), `locations` (quadrant per finding:
        "upper left", … in image coordinates) and `num_findings`. Images are PNG, mode "L" for CT, MRI,
        X-ray, ultrasound and OCT and "RGB" for dermoscopy, fundus and microscopy. `boxes` hold each
        finding's label and 0..999 xyxy box, which bounds every pixel the finding changed.

    Example:

    >>> ds = make_phantom_dataset(8, seed=1, image_size=32, modalities=("dermoscopy",))
    >>> ds[0]["image"].size, ds[0]["image"].mode, set(ds["modality"])
    ((32, 32), 'RGB', {'dermoscopy'})
    """
    if not isinstance(num_cases, (int, np.integer)) or num_cases < 1:
        raise ValueError(f"make_phantom_dataset: num_cases must be a positive integer, got {num_cases!r}.")
    if not 32 <= int(image_size) <= 256:
        raise ValueError(
            f"make_phantom_dataset: image_size must be within 32..256 pixels, got {image_size!r}."
        )
    if len(split_fractions) != 3 or min(split_fractions) < 0 or abs(sum(split_fractions) - 1) > 1e-6:
        raise ValueError(
            f"split_fractions must be three non-negative numbers summing to 1, got {split_fractions!r}."
        )
    modalities = _check_choice("modality", modalities, MODALITIES)
    question_types = _check_choice(
        "question type", question_types or MULTIPLE_CHOICE_TYPES, (*MULTIPLE_CHOICE_TYPES, "open")
    )
    size = int(image_size)
    rng = np.random.default_rng(seed)
    cases = _sample_cases(rng, int(num_cases), modalities, question_types)
    n = int(num_cases)
    split_draw = rng.random(n)
    c1, c2 = split_fractions[0], split_fractions[0] + split_fractions[1]
    splits = np.where(split_draw < c1, "train", np.where(split_draw < c2, "validation", "test"))

    images: list[bytes | None] = [None] * n
    rx_all = np.zeros((n, MAX_FINDINGS))
    ry_all = np.zeros((n, MAX_FINDINGS))
    for mi, mod in enumerate(modalities):
        spec = MODALITY_SPECS[mod]
        idx = np.flatnonzero(cases["modality"] == mi)
        sub_all = {k: v[idx] for k, v in cases.items()}
        rx, ry = _finding_shape(sub_all, spec)
        rx_all[idx], ry_all[idx] = rx, ry
        for start in range(0, len(idx), chunk_size):
            part = idx[start : start + chunk_size]
            sub = {k: v[part] for k, v in cases.items()}
            sub["rx"], sub["ry"] = rx_all[part], ry_all[part]
            chunk_rng = np.random.default_rng([seed, mi, start])
            arr = render_phantom_images(sub, spec, chunk_rng, size)
            for k, i in enumerate(part):
                images[i] = _to_png(arr[k])
    cases["rx"], cases["ry"] = rx_all, ry_all

    cols: dict[str, list] = {k: [] for k in PHANTOM_FEATURES}
    for i in range(n):
        spec = MODALITY_SPECS[modalities[cases["modality"][i]]]
        count = int(cases["count"][i])
        label = spec.findings[cases["label"][i]]
        sev = SEVERITIES[cases["severity"][i]]
        locs = [QUADRANTS[q] for q in cases["quadrant"][i, :count]]
        boxes = [normalize_box(b, size, size) for b in _finding_boxes_px(cases, i, size)]
        case = PhantomCase(
            spec.name,
            spec.anatomies[cases["anatomy"][i]],
            label,
            sev,
            locs,
            boxes,
            question_types[cases["qtype"][i]],
        )
        text_rng = np.random.default_rng(int(cases["text_rng"][i]))
        question, options, answer, correct = phantom_question(case, text_rng)
        cols["id"].append(f"medphantom-s{seed}-{i:06d}")
        cols["image"].append({"bytes": images[i], "path": None})
        cols["modality"].append(spec.name)
        cols["question"].append(question)
        cols["options"].append(options)
        cols["answer"].append(answer)
        cols["question_type"].append(case.question_type)
        cols["report"].append(phantom_report(case, text_rng))
        cols["rationale"].append(phantom_rationale(case, answer, correct))
        cols["boxes"].append([{"label": label, "bbox": b} for b in boxes])
        cols["split"].append(str(splits[i]))
        cols["source"].append(PHANTOM_SOURCE)
        cols["anatomy"].append(case.anatomy)
        cols["findings"].append([label] * count)
        cols["severity"].append(sev if count else "none")
        cols["locations"].append(locs)
        cols["num_findings"].append(count)
    return Dataset.from_dict(cols, features=PHANTOM_FEATURES)


def split_phantom(
    dataset: Dataset,
    by: str = "iid",
    holdout: Sequence[str] | str | None = None,
) -> DatasetDict:
    """Select generalisation splits of a MedPhantom (or any canonical) dataset.

    - `by="iid"`: the `split` column as it is -> `train` / `validation` / `test`.
    - `by="modality"` or `by="question_type"`: rows whose value is in `holdout` form `test` (all of them);
      the other rows form `train` and `validation` according to their `split` column (their i.i.d. test
      rows are dropped so that `test` is purely out-of-distribution).

    Example:

    >>> ds = make_phantom_dataset(24, seed=0, image_size=32)
    >>> parts = split_phantom(ds, by="question_type", holdout=["counting"])
    >>> set(parts["test"]["question_type"]), "counting" in parts["train"]["question_type"]
    ({'counting'}, False)
    """
    if by not in ("iid", "modality", "question_type"):
        raise ValueError(f"split_phantom: by must be 'iid', 'modality' or 'question_type', got {by!r}.")
    split_col = np.asarray(dataset["split"])
    if by == "iid":
        return DatasetDict(
            {s: dataset.select(np.flatnonzero(split_col == s)) for s in ("train", "validation", "test")}
        )
    if holdout is None:
        raise ValueError(f"split_phantom(by={by!r}) needs holdout=, e.g. holdout=('oct', 'microscopy').")
    holdout = (holdout,) if isinstance(holdout, str) else tuple(holdout)
    allowed = MODALITIES if by == "modality" else QUESTION_TYPES
    bad = [h for h in holdout if h not in allowed]
    if bad:
        raise ValueError(f"split_phantom: unknown {by} {bad!r} in holdout; choose from {allowed}.")
    values = np.asarray(dataset[by])
    held = np.isin(values, holdout)
    return DatasetDict(
        {
            "train": dataset.select(np.flatnonzero(~held & (split_col == "train"))),
            "validation": dataset.select(np.flatnonzero(~held & (split_col == "validation"))),
            "test": dataset.select(np.flatnonzero(held)),
        }
    )
