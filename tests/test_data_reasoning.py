"""Grounded-reasoning builder: annotation rationales and rejection sampling with acceptance accounting."""

import pytest

from hf_meddiff.constants import OPTION_LETTERS
from hf_meddiff.data import build_reasoning_dataset, make_phantom_dataset
from hf_meddiff.data.reasoning import annotation_rationale
from hf_meddiff.formatting import parse_answer, parse_boxes, parse_think


@pytest.fixture(scope="module")
def phantom():
    return make_phantom_dataset(24, seed=2, image_size=32)


@pytest.mark.parametrize("style", ["think_before", "think_after", "no_think"])
def test_annotation_targets_carry_answer_boxes_and_order(phantom, style):
    ds = build_reasoning_dataset(phantom, style=style)
    assert len(ds) == len(phantom) and set(ds["reasoning_style"]) == {style}
    for row in ds:
        target = row["target"]
        assert parse_answer(target) == row["answer"]
        if style == "no_think":
            assert parse_think(target) is None
            continue
        assert parse_boxes(target) == [tuple(b["bbox"]) for b in row["boxes"]]
        assert target.startswith("<think>" if style == "think_before" else "<answer>")


def test_templated_rationale_for_records_without_one(phantom):
    bare = phantom.remove_columns("rationale").add_column("rationale", [""] * len(phantom))
    report_only = phantom.select([0]).map(lambda r: {"question": "", "answer": ""})
    from datasets import concatenate_datasets

    ds, report = build_reasoning_dataset(concatenate_datasets([bare, report_only]), return_report=True)
    assert len(ds) == len(phantom) and report.skipped == {"no_question": 1}
    row = ds[0]
    assert parse_boxes(row["rationale"]) == [tuple(b["bbox"]) for b in row["boxes"]]
    assert annotation_rationale({"answer": "yes", "boxes": []}) == "So the answer is yes."


def test_rejection_sampling_keeps_only_correct_answers_and_reports_rates(phantom):
    calls = []

    def generate(items, k):
        calls.append(len(items))
        out = []
        for item in items:
            right = item["answer"]
            wrong = next(letter for letter in OPTION_LETTERS if letter != right)
            good = f"<think>Looked at the image of {item['modality']}.</think><answer>{right}</answer>"
            # modality questions: all k correct; others: one correct, one without think, the rest wrong
            if item["question_type"] == "modality":
                out.append([good] * k)
            else:
                out.append(
                    [good, f"<answer>{right}</answer>"]
                    + [f"<think>x</think><answer>{wrong}</answer>"] * (k - 2)
                )
        return out

    ds, report = build_reasoning_dataset(
        phantom,
        mode="rejection",
        generate=generate,
        num_samples=4,
        max_accepted=2,
        batch_size=10,
        return_report=True,
    )
    assert calls == [10, 10, 4]
    assert report.acceptance_by_question_type["modality"] == 1.0
    assert report.acceptance_by_question_type["diagnosis"] == 0.25
    assert report.rejected["no_think"] == report.rejected["wrong_answer"] / 2 > 0
    assert set(report.acceptance_by_modality) <= {
        "ct",
        "mri",
        "xray",
        "ultrasound",
        "dermoscopy",
        "fundus",
        "oct",
        "microscopy",
    }
    assert len(ds) == len(phantom)  # identical good samples are deduplicated: one row per item
    for row in ds:
        assert (
            parse_answer(row["target"]) == row["answer"] and row["reasoning_source"] == "rejection_sampling"
        )
        assert row["rationale"].startswith("Looked at")
    assert "acceptance_by_question_type" in ds.info.description
    with pytest.raises(ValueError, match="needs generate"):
        build_reasoning_dataset(phantom, mode="rejection")


def test_rejection_sampling_accepts_exactly_what_the_accuracy_reward_scores_one(phantom):
    from hf_meddiff.rewards import accuracy_reward

    item = next(r for r in phantom if r["options"])
    right = item["answer"]
    text = item["options"][OPTION_LETTERS.index(right)]
    wrong = next(letter for letter in "BCD" if letter != right)  # "A" reads as a word, not a choice
    answers = [right, f"({right})", f"{right}. {text}", text, wrong, f"{right} or {wrong}"]
    completions = [f"<think>Looked.</think><answer>{a}</answer>" for a in answers]
    rewards = accuracy_reward(
        completions, answer=[right] * len(answers), options=[item["options"]] * len(answers)
    )

    one = phantom.filter(lambda r: r["id"] == item["id"])
    accepted = []
    for completion in completions:
        _, report = build_reasoning_dataset(
            one,
            mode="rejection",
            generate=lambda items, k, c=completion: [[c]],
            num_samples=1,
            return_report=True,
        )
        accepted.append(report.rejected["wrong_answer"] == 0)
    assert accepted == [r == 1.0 for r in rewards]
    assert accepted[:4] == [True] * 4 and accepted[4:] == [False, False]
