"""MedPhantom: determinism, coverage, geometry and text consistency."""

import numpy as np
import pytest

from hf_meddiff.constants import MODALITIES, MODALITY_NAMES, OPTION_LETTERS
from hf_meddiff.data import CANONICAL_COLUMNS, make_phantom_dataset, split_phantom
from hf_meddiff.data.phantom import (
    MODALITY_SPECS,
    NORMAL_OPTION,
    _finding_boxes_px,
    _finding_shape,
    _sample_cases,
    render_phantom_images,
)
from hf_meddiff.formatting import parse_boxes


@pytest.fixture(scope="module")
def phantom():
    return make_phantom_dataset(160, seed=7, image_size=64)


def test_same_seed_gives_same_bytes_and_text():
    a = make_phantom_dataset(24, seed=3, image_size=32)
    b = make_phantom_dataset(24, seed=3, image_size=32)
    c = make_phantom_dataset(24, seed=4, image_size=32)
    a_bytes = [
        r["bytes"] for r in a.cast_column("image", a.features["image"].__class__(decode=False))["image"]
    ]
    b_bytes = [
        r["bytes"] for r in b.cast_column("image", b.features["image"].__class__(decode=False))["image"]
    ]
    c_bytes = [
        r["bytes"] for r in c.cast_column("image", c.features["image"].__class__(decode=False))["image"]
    ]
    assert a_bytes == b_bytes
    assert a_bytes != c_bytes
    for col in ("question", "options", "answer", "report", "rationale", "boxes"):
        assert a[col] == b[col]


def test_canonical_columns_every_modality_and_image_modes(phantom):
    assert set(CANONICAL_COLUMNS) <= set(phantom.column_names)
    assert set(phantom["modality"]) == set(MODALITIES)
    assert set(phantom["source"]) == {"medphantom"}
    seen = {}
    for row in phantom.select(range(40)):
        seen[row["modality"]] = row["image"]
        assert row["image"].size == (64, 64)
    for modality, image in seen.items():
        assert image.mode == ("RGB" if MODALITY_SPECS[modality].color else "L")


def test_image_size_range_and_bad_arguments():
    assert make_phantom_dataset(2, image_size=32)[0]["image"].size == (32, 32)
    with pytest.raises(ValueError, match="image_size"):
        make_phantom_dataset(2, image_size=16)
    with pytest.raises(ValueError, match="unknown modality"):
        make_phantom_dataset(2, modalities=("pet",))


def test_dermoscopy_only():
    ds = make_phantom_dataset(12, seed=1, image_size=32, modalities=("dermoscopy",))
    assert set(ds["modality"]) == {"dermoscopy"}
    assert ds[0]["image"].mode == "RGB"


def test_boxes_inside_image_and_bound_the_rendered_findings():
    rng = np.random.default_rng(0)
    size = 48
    for mi, modality in enumerate(MODALITIES):
        spec = MODALITY_SPECS[modality]
        cases = _sample_cases(rng, 12, (modality,), ("counting",))
        cases["count"][:4] = [1, 2, 3, 3]
        cases["rx"], cases["ry"] = _finding_shape(cases, spec)
        with_findings = render_phantom_images(cases, spec, np.random.default_rng(mi), size)
        empty = dict(cases, count=np.zeros_like(cases["count"]))
        background = render_phantom_images(empty, spec, np.random.default_rng(mi), size)
        for i in range(12):
            changed = np.abs(with_findings[i] - background[i])
            changed = changed.max(-1) if changed.ndim == 3 else changed
            inside = np.zeros((size, size), bool)
            for x0, y0, x1, y1 in _finding_boxes_px(cases, i, size):
                assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
                inside[int(y0) : int(y1), int(x0) : int(x1)] = True
                assert changed[int(y0) : int(y1), int(x0) : int(x1)].max() > 0.15, modality  # visible
            assert changed[~inside].max(initial=0) < 1e-5, (modality, i)  # nothing drawn outside boxes
            assert len(_finding_boxes_px(cases, i, size)) == cases["count"][i]


def test_answers_reports_and_rationales_agree_with_the_case(phantom):
    for row in phantom:
        boxes = [tuple(b["bbox"]) for b in row["boxes"]]
        assert all(0 <= v <= 999 for b in boxes for v in b)
        assert all(b[0] < b[2] and b[1] < b[3] for b in boxes)
        assert len(boxes) == row["num_findings"] == len(row["findings"]) == len(row["locations"])
        assert len(row["options"]) == 4 and len(set(row["options"])) == 4
        correct = row["options"][OPTION_LETTERS.index(row["answer"])]
        expected = {
            "modality": MODALITY_NAMES[row["modality"]],
            "anatomy": row["anatomy"],
            "diagnosis": row["findings"][0] if row["findings"] else NORMAL_OPTION,
            "grading": row["severity"],
            "location": row["locations"][0] if row["locations"] else None,
            "counting": str(row["num_findings"]),
        }[row["question_type"]]
        assert correct == expected, row["id"]
        report = row["report"]
        assert report.startswith("Findings: ") and " Impression: " in report
        assert row["anatomy"] in report
        for label, loc in zip(row["findings"], row["locations"]):
            assert label in report and loc in report
        assert parse_boxes(row["rationale"]) == boxes
        assert row["rationale"].rstrip(".").split("answer is ")[1].startswith(row["answer"])
        if row["num_findings"] == 0:
            assert row["severity"] == "none"


def test_answers_are_balanced_and_reports_vary(phantom):
    letters = np.unique(phantom["answer"], return_counts=True)[1]
    assert len(letters) == 4 and letters.min() > 0.12 * len(phantom)
    assert len(set(phantom["report"])) > 0.6 * len(phantom)


def test_split_phantom_by_modality_question_type_and_iid(phantom):
    parts = split_phantom(phantom, by="modality", holdout=("oct", "microscopy"))
    assert set(parts["test"]["modality"]) == {"oct", "microscopy"}
    assert not {"oct", "microscopy"} & set(parts["train"]["modality"])
    parts = split_phantom(phantom, by="question_type", holdout="counting")
    assert set(parts["test"]["question_type"]) == {"counting"}
    iid = split_phantom(phantom)
    assert sum(len(d) for d in iid.values()) == len(phantom)
    assert set(iid["validation"]["split"]) == {"validation"}
    with pytest.raises(ValueError, match="unknown modality"):
        split_phantom(phantom, by="modality", holdout=("pet",))
