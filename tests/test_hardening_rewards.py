"""Rewards on bad inputs: `completions=None` is an error naming the reward; a gold answer or report that is not text,
malformed gold boxes and a composite part returning NaN give an explicit `None` / 0.0 that is counted and logged;
a part returning a non-number is an error; junk text earns no clinical F1."""

from __future__ import annotations

import logging
from functools import partial

import pytest

from hf_meddiff.metrics import clinical_efficacy_scores
from hf_meddiff.rewards import (
    CompositeReward,
    accuracy_reward,
    format_reward,
    grounding_reward,
    reconstruction_reward,
    repetition_penalty_reward,
    report_reward,
    reset_reward_skip_counts,
    reward_skip_counts,
)

REWARDS = {
    "accuracy_reward": partial(accuracy_reward, answer=["B"]),
    "format_reward": format_reward,
    "repetition_penalty_reward": repetition_penalty_reward,
    "grounding_reward": partial(grounding_reward, boxes=[[]]),
    "report_reward": partial(report_reward, report=["Normal."]),
    "reconstruction_reward": reconstruction_reward,
    "composite_reward": CompositeReward({"format": format_reward}),
}


@pytest.fixture(autouse=True)
def fresh_counts():
    reset_reward_skip_counts()
    yield
    reset_reward_skip_counts()


@pytest.mark.parametrize("name", sorted(REWARDS))
@pytest.mark.parametrize("completions", [None, "a single string", 3])
def test_completions_that_are_not_a_list_are_an_error_naming_the_reward(name, completions):
    with pytest.raises(TypeError, match=rf"{name}: completions must be a list"):
        REWARDS[name](completions=completions)


class Metrics:
    def __init__(self):
        self.logged = {}

    def __call__(self, name, value):
        self.logged[name] = value


@pytest.mark.parametrize("gold", [2, 3.5, ["B"], {"answer": "B"}])
def test_non_text_gold_answers_are_none_counted_and_logged(gold, caplog):
    metrics = Metrics()
    with caplog.at_level(logging.WARNING, logger="hf_meddiff.rewards"):
        out = accuracy_reward(["B", "B"], answer=[gold, "B"], log_metric=metrics)
    assert out == [None, 1.0]
    assert reward_skip_counts() == {"accuracy_reward/gold_not_text": 1}
    assert metrics.logged["accuracy_reward/skipped_gold_not_text"] == 1.0
    assert "row(s) [0]" in caplog.text and "not text" in caplog.text


def test_missing_gold_is_not_applicable_and_not_counted():
    assert accuracy_reward(["B", "B"], answer=[None, ""]) == [None, None]
    assert reward_skip_counts() == {}


def test_non_text_reference_reports_are_counted():
    assert report_reward(["Normal."], report=[42]) == [None]
    assert reward_skip_counts() == {"report_reward/gold_not_text": 1}


@pytest.mark.parametrize(
    "gold",
    [
        [{"label": "x", "bbox": [0, 0]}],
        [{"label": "x", "bbox": [10, 10, 0, 0]}],
        [{"label": "x", "bbox": ["a", 0, 5, 5]}],
        [{"label": "x", "bbox": [0, 0, float("nan"), 5]}],
        "not boxes",
        42,
        [{"label": "x", "bbox": [0, 0, 10, 10]}, {"label": "y"}],
    ],
)
def test_malformed_gold_boxes_are_none_counted_and_logged(gold, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_meddiff.rewards"):
        out = grounding_reward(
            ["<box>[0,0,10,10]</box>"] * 2, boxes=[gold, [{"label": "x", "bbox": [0, 0, 10, 10]}]]
        )
    assert out == [None, 1.0]
    assert reward_skip_counts() == {"grounding_reward/gold_boxes_malformed": 1}
    assert "malformed" in caplog.text


def test_no_gold_boxes_is_not_applicable():
    assert grounding_reward(["<box>[0,0,10,10]</box>"], boxes=[[]]) == [None]
    assert reward_skip_counts() == {}


@pytest.mark.parametrize("value", ["0.5", object(), [1.0, 2.0]])
def test_composite_part_returning_a_non_number_is_an_error_naming_it(value):
    reward = CompositeReward({"odd": lambda completions, **kw: [1.0, value]})
    with pytest.raises(TypeError, match=r"Reward part 'odd' returned .* for row 1"):
        reward(["a", "b"])


def test_composite_part_returning_nan_counts_zero_and_is_counted():
    reward = CompositeReward({"nan": lambda completions, **kw: [float("nan"), 1.0, None]})
    assert reward(["a", "b", "c"]) == [0.0, 1.0, None]
    assert reward_skip_counts() == {"composite_reward/nan/non_finite": 1}


def test_composite_accepts_bools_and_one_element_tensors():
    torch = pytest.importorskip("torch")
    reward = CompositeReward({"t": lambda completions, **kw: [torch.tensor(0.25), True]})
    assert reward(["a", "b"]) == [0.25, 1.0]


def test_reconstruction_without_completion_ids_is_counted():
    out = reconstruction_reward(["x"], target_ids=[[1, 2]], keep_mask=[[True, False]])
    assert out == [None]
    assert reward_skip_counts() == {"reconstruction_reward/no_completion_ids": 1}
    with pytest.raises(ValueError, match="target_ids` has 2 entries for 1 completions"):
        reconstruction_reward(["x"], completion_ids=[[1, 2]], target_ids=[[1], [2]], keep_mask=[[False]])


JUNK = ["asdf qwer zxcv", "!!!!", "<|mask|><|mask|><|mask|>", "", "lorem ipsum dolor sit amet", "1234 5678"]


@pytest.mark.parametrize("junk", JUNK)
@pytest.mark.parametrize(
    "reference",
    ["No acute cardiopulmonary process.", "Heart size is normal. Lungs are clear.", "Cardiomegaly."],
)
def test_junk_text_gets_no_clinical_f1(junk, reference):
    assert report_reward([junk], report=[reference], metric="clinical_f1") == [0.0]
    scores = clinical_efficacy_scores([junk], [reference])
    assert scores["f1"] == 0.0 and scores["example_f1"] == 0.0


def test_real_normal_reports_still_agree():
    assert report_reward(["No acute abnormality."], report=["Normal study."], metric="clinical_f1") == [1.0]
