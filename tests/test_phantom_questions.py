"""More supervision per MedPhantom case: every answerable question type, consistent with the case."""

import string

from hf_meddiff.data import expand_phantom_questions, make_phantom_dataset
from hf_meddiff.data.phantom import case_question_types


def test_expansion_adds_every_answerable_type_to_training_cases_only():
    ds = make_phantom_dataset(40, seed=1, image_size=32)
    more = expand_phantom_questions(ds)
    assert more.features == ds.features
    assert sorted(more.filter(lambda s: s != "train", input_columns="split")["id"]) == sorted(
        ds.filter(lambda s: s != "train", input_columns="split")["id"]
    )
    by_case: dict[str, set] = {}
    for row in more.select_columns(["id", "question_type", "split", "num_findings"]):
        case = row["id"].split("-q")[0]
        by_case.setdefault(case, set()).add(row["question_type"])
    for row in ds.select_columns(["id", "split", "num_findings"]):
        if row["split"] == "train":
            assert by_case[row["id"]] == set(case_question_types(row["num_findings"]))


def test_new_questions_are_answered_by_the_case():
    ds = make_phantom_dataset(40, seed=2, image_size=32)
    more = expand_phantom_questions(ds, splits=None)
    added = more.select(range(len(ds), len(more)))
    assert len(added) > len(ds)
    for row in added:
        case = ds[int(row["id"].split("-q")[0].rsplit("-", 1)[1])]
        assert row["image"].tobytes() == case["image"].tobytes() and row["report"] == case["report"]
        answer = row["options"][string.ascii_uppercase.index(row["answer"])]
        expected = {
            "counting": str(case["num_findings"]),
            "anatomy": case["anatomy"],
            "location": (case["locations"] or [None])[0],
            "grading": case["severity"],
        }.get(row["question_type"])
        if expected is not None:
            assert answer == expected, (row["question_type"], answer, expected)
        if row["question_type"] == "diagnosis":
            assert answer == (case["findings"][0] if case["findings"] else "normal") or not case["findings"]
