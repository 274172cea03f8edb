"""Review without a browser: the SQLite store keeps every judgement (restarts, two reviewers at once), the export
computes the summary and loads as an evaluation set and as grounding targets, predictions come from a
`predictions.jsonl` or a model folder, DICOM images show pixels only, and serving is safe by default."""

from __future__ import annotations

import json
import threading

import datasets
import pytest

from hf_meddiff.data import CANONICAL_COLUMNS
from hf_meddiff.formatting import format_reasoning
from hf_meddiff.review import (
    ReviewCase,
    ReviewStore,
    box_labels,
    cases_from_predictions,
    cohen_kappa,
    export_reviews,
    load_review_dataset,
    read_predictions,
)
from hf_meddiff.review.command import main as review_main
from hf_meddiff.review.command import parse_auth

PREDICTION = format_reasoning("A", "A nodule is visible at <box>[100,100,300,300]</box> in the upper left.")


def make_case(case_id: str, prediction: str = PREDICTION, answer: str = "A") -> ReviewCase:
    import io

    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.new("L", (16, 16), 90).save(buffer, format="PNG")
    return ReviewCase(
        case_id=case_id,
        prediction=prediction,
        question="Which modality?",
        options=["CT", "MRI"],
        answer=answer,
        boxes=[{"label": "nodule", "bbox": [120, 110, 320, 330]}],
        modality="ct",
        question_type="modality",
        split="test",
        source="medphantom",
        image_png=buffer.getvalue(),
    )


@pytest.fixture
def store(tmp_path):
    store = ReviewStore(tmp_path / "reviews.sqlite")
    store.add_cases([make_case(f"c{i}") for i in range(4)], "model@1")
    return store


def test_box_labels_name_each_box_by_the_words_before_it():
    text = "<think>There is an abscess at <box>[1,2,30,40]</box>. A large cyst is seen at <box>[5,6,70,80]</box>.</think>"
    assert box_labels(text) == [
        {"label": "abscess", "bbox": [1, 2, 30, 40]},
        {"label": "large cyst", "bbox": [5, 6, 70, 80]},
    ]
    assert box_labels("<box>[1,2,3,4]</box>") == [{"label": "box 1", "bbox": [1, 2, 3, 4]}]


def test_a_case_reads_answer_rationale_and_style_from_the_prediction():
    after = ReviewCase(
        "c", prediction=format_reasoning("B", "Cyst at <box>[1,2,3,4]</box>.", style="think_after")
    )
    assert (after.predicted_answer, after.rationale_style, after.model_rationale) == (
        "B",
        "think_after",
        "Cyst at <box>[1,2,3,4]</box>.",
    )
    assert ReviewCase("c", prediction=" C ").predicted_answer == "C"


def test_every_save_is_a_new_row_that_survives_reopening(store, tmp_path):
    first = store.add_review(
        case_id="c0", model_revision="model@1", reviewer="ana", answer_verdict="incorrect"
    )
    second = store.add_review(
        case_id="c0", model_revision="model@1", reviewer="ana", answer_verdict="correct", reasoning_score=5
    )
    assert second > first
    reopened = ReviewStore(tmp_path / "reviews.sqlite")
    assert [r["answer_verdict"] for r in reopened.reviews()] == ["incorrect", "correct"]
    (current,) = reopened.latest_reviews()
    assert (current["review_id"], current["reasoning_score"], current["prediction"]) == (
        second,
        5,
        PREDICTION,
    )
    assert reopened.reviewed_case_ids("model@1", "ana") == {"c0"}
    assert [c.case_id for c in reopened.cases("model@1")] == ["c0", "c1", "c2", "c3"]


def test_two_reviewers_writing_at_once_keep_all_their_rows(store):
    def review(name: str):
        other = ReviewStore(store.path)  # its own connections, as a second server process would have
        for i in range(4):
            for _ in range(5):
                other.add_review(
                    case_id=f"c{i}", model_revision="model@1", reviewer=name, answer_verdict="correct"
                )

    threads = [threading.Thread(target=review, args=(name,)) for name in ("ana", "ben")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.reviews()) == 40
    latest = store.latest_reviews()
    assert sorted((r["reviewer"], r["case_id"]) for r in latest) == sorted(
        (name, f"c{i}") for name in ("ana", "ben") for i in range(4)
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("answer_verdict", "maybe", "answer_verdict"),
        ("reasoning_score", 7, "reasoning_score"),
        ("reviewer", " ", "reviewer"),
        ("corrected_boxes", [{"label": "x", "bbox": [5, 5, 5, 9]}], "corrected box"),
        ("case_id", "nope", "not in"),
    ],
)
def test_a_bad_judgement_is_refused_and_names_the_field(store, field, value, message):
    kwargs = {"case_id": "c0", "model_revision": "model@1", "reviewer": "ana", "answer_verdict": "correct"}
    with pytest.raises(ValueError, match=message):
        store.add_review(**{**kwargs, field: value})
    assert store.reviews() == []


def test_cohen_kappa_matches_the_hand_computation():
    # observed 5/6; chance: correct 3/6*2/6 + incorrect 3/6*4/6 = 1/2 -> (5/6 - 1/2) / (1/2) = 2/3
    a = ["correct", "correct", "correct", "incorrect", "incorrect", "incorrect"]
    b = ["correct", "correct", "incorrect", "incorrect", "incorrect", "incorrect"]
    assert cohen_kappa(a, b) == pytest.approx(2 / 3)
    a2 = ["correct", "correct", "incorrect", "incorrect", "correct", "incorrect"]
    b2 = ["correct", "incorrect", "incorrect", "correct", "correct", "incorrect"]
    assert cohen_kappa(a2, b2) == pytest.approx(1 / 3)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None and cohen_kappa([], []) is None


def review_everything(store: ReviewStore) -> None:
    model_box = {"index": 1, "label": "nodule", "bbox": [100, 100, 300, 300]}
    add = store.add_review
    add(case_id="c0", model_revision="model@1", reviewer="ana", answer_verdict="correct", reasoning_score=4,
        box_verdicts=[{**model_box, "verdict": "correct"}])  # fmt: skip
    add(case_id="c1", model_revision="model@1", reviewer="ana", answer_verdict="incorrect", reasoning_score=2,
        box_verdicts=[{**model_box, "verdict": "wrong place"}],
        corrected_boxes=[{"label": "nodule", "bbox": [200, 100, 400, 300], "for_box": 1}],
        comment="too far left")  # fmt: skip
    add(case_id="c2", model_revision="model@1", reviewer="ana", answer_verdict="unsure", reasoning_score=3)
    add(case_id="c0", model_revision="model@1", reviewer="ben", answer_verdict="correct", reasoning_score=5)
    add(case_id="c1", model_revision="model@1", reviewer="ben", answer_verdict="correct", reasoning_score=2)


def test_export_summary_dataset_and_card(store, tmp_path):
    review_everything(store)
    summary = export_reviews(store.path, tmp_path / "export")
    assert summary["num_rows"] == 5 and summary["reviewers"] == ["ana", "ben"]
    assert summary["accuracy_as_judged"] == pytest.approx(3 / 4)  # unsure left out
    assert summary["unsure_rate"] == pytest.approx(1 / 5)
    assert summary["mean_reasoning_score"] == pytest.approx(16 / 5)
    assert summary["grounding_precision"] == pytest.approx(1 / 2)
    assert summary["corrected_box_iou"] == pytest.approx(1 / 3)  # [100..300] vs [200..400] in x
    assert summary["num_cases_reviewed_twice"] == 2
    # answers: (correct, correct), (incorrect, correct): observed 1/2, chance 1/2*1 -> kappa 0
    assert summary["kappa_answer"] == pytest.approx(0.0)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "accuracy as judged" in card and "Cohen's kappa" in card and card.startswith("---")
    assert json.loads((tmp_path / "export" / "summary.json").read_text())["num_reviews"] == 5


def test_the_export_is_an_evaluation_set_and_a_source_of_grounding_targets(store, tmp_path):
    from hf_meddiff.evaluation import load_data_arg
    from hf_meddiff.rewards import grounding_reward

    review_everything(store)
    export_reviews(store, tmp_path / "export")
    evaluation_set = load_data_arg(str(tmp_path / "export"), split="test")
    assert len(evaluation_set) == 5 and isinstance(evaluation_set.features["image"], datasets.Image)
    assert evaluation_set[0]["image"].size == (16, 16) and evaluation_set[0]["answer"] == "A"

    targets = load_review_dataset(tmp_path / "export", with_boxes=True)
    by_case = {(r["id"], r["reviewer"]): r for r in targets.select_columns(["id", "reviewer", "boxes"])}
    assert by_case[("c1", "ana")]["boxes"] == [{"label": "nodule", "bbox": [200, 100, 400, 300]}]
    assert by_case[("c0", "ana")]["boxes"] == [{"label": "nodule", "bbox": [100, 100, 300, 300]}]
    # reviews that judged no box keep the data's reference boxes
    assert by_case[("c0", "ben")]["boxes"] == [{"label": "nodule", "bbox": [120, 110, 320, 330]}]
    drawn = format_reasoning("A", "Nodule at <box>[200,100,400,300]</box>.")
    assert grounding_reward([drawn], boxes=[by_case[("c1", "ana")]["boxes"]]) == [pytest.approx(1.0)]
    agreed = load_review_dataset(tmp_path / "export", verdicts=["correct"], min_reasoning_score=4)
    assert sorted(zip(agreed["id"], agreed["reviewer"])) == [("c0", "ana"), ("c0", "ben")]
    assert tuple(agreed.column_names[: len(CANONICAL_COLUMNS)]) == CANONICAL_COLUMNS


def test_export_refuses_text_that_looks_like_phi(store, tmp_path):
    from hf_meddiff.data import PHIError

    store.add_review(
        case_id="c0", model_revision="model@1", reviewer="ana", answer_verdict="correct", comment="DOE^JOHN"
    )
    with pytest.raises(PHIError):
        export_reviews(store, tmp_path / "export")
    assert not (tmp_path / "export" / "data.parquet").exists()


def test_predictions_file_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"task": "vqa", "id": "a", "prediction": "B"}\n{"task": "reasoning", "id": "a"}\n')
    with pytest.raises(ValueError, match=r"predictions.jsonl:2: no field 'prediction'"):
        read_predictions(path)
    path.write_text(
        '{"task": "vqa", "id": "a", "prediction": "B"}\n'
        '{"task": "reasoning", "id": "a", "prediction": "<answer>C</answer>"}\n'
        '{"task": "report", "id": "b", "prediction": "Findings"}\n'
    )
    assert read_predictions(tmp_path) == {"a": ("reasoning", "<answer>C</answer>")}
    with pytest.raises(FileNotFoundError, match="hf-meddiff evaluate"):
        read_predictions(tmp_path / "missing.jsonl")


def test_dicom_cases_carry_pixels_and_no_header(tmp_path):
    from pydicom.data import get_testdata_file

    dicom = get_testdata_file("CT_small.dcm")
    ds = datasets.Dataset.from_dict({"id": ["d0"], "question": ["Which modality?"], "image": [dicom]})
    ds = ds.cast_column("image", datasets.Image())
    (case,) = cases_from_predictions(ds, {"d0": ("reasoning", PREDICTION)})
    assert case.image().size == (128, 128) and case.image_png.startswith(b"\x89PNG")
    record = json.dumps(case.record())
    assert "CT_small" not in record and "dcm" not in record
    import pydicom

    name = str(pydicom.dcmread(dicom).PatientName)
    assert name.encode() not in case.image_png


def test_serving_beyond_localhost_needs_a_login(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        review_main(["--predictions", str(tmp_path / "p.jsonl"), "--host", "0.0.0.0"])
    assert exit_info.value.code == 2
    assert "refusing to bind 0.0.0.0 without a login" in capsys.readouterr().err

    from hf_meddiff.review.app import launch_app

    with pytest.raises(PermissionError, match="--auth"):
        launch_app(None, host="10.0.0.5")


def test_auth_from_a_flag_and_a_file(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# reviewers\nana:s3cret\n\nben:pa:ss\n")
    assert parse_auth("lead:pw", str(users)) == [("lead", "pw"), ("ana", "s3cret"), ("ben", "pa:ss")]
    users.write_text("ana\n")
    with pytest.raises(ValueError, match="users.txt:1: expected USER:PASSWORD"):
        parse_auth(None, str(users))


def test_review_command_is_registered():
    from hf_meddiff.cli import PASSTHROUGH, build_parser

    assert PASSTHROUGH["review"][0] == "hf_meddiff.review.command"
    assert "review" in build_parser().format_help()


def test_cases_from_a_model_folder_are_generated_once_and_stored(tmp_path, monkeypatch):
    import torch

    from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
    from hf_meddiff.evaluation import make_medphantom, save_canonical
    from hf_meddiff.models.meddiff.image_processing_meddiff import MedDiffImageProcessor
    from hf_meddiff.models.meddiff.image_tokenizer_meddiff import MedDiffImageTokenizer
    from hf_meddiff.models.meddiff.processing_meddiff import MedDiffProcessor
    from hf_meddiff.review import command
    from hf_meddiff.text_tokenizer import train_text_tokenizer

    data = make_medphantom(40, seed=0)
    save_canonical(data, tmp_path / "data")
    texts = [t for t in list(data["rationale"]) + list(data["question"]) if t]
    processor = MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        train_text_tokenizer(texts, vocab_size=300),
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs()))
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")

    argv = ["--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--split", "test"]
    argv += [
        "--max-samples",
        "2",
        "--gen-length",
        "16",
        "--db",
        str(tmp_path / "r.sqlite"),
        "--device",
        "cpu",
    ]
    args = command._serve_parser().parse_args(argv)
    session = command.prepare_session(args)
    assert len(session.cases) == 2 and session.model_revision.startswith("model@")
    assert len(list(tmp_path.glob("review_predictions_model*/predictions.jsonl"))) == 1
    assert all(c.task == "reasoning" and c.image().size == (64, 64) for c in session.cases)

    def must_not_generate(*_args, **_kwargs):
        raise AssertionError("the cases are in the database; nothing should be generated again")

    monkeypatch.setattr(command, "_generate_predictions", must_not_generate)
    again = command.prepare_session(args)
    assert [c.case_id for c in again.cases] == [c.case_id for c in session.cases]
    assert [c.prediction for c in again.cases] == [c.prediction for c in session.cases]
