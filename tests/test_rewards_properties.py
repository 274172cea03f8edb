"""Property tests: every text reward returns a defined value for any completion and never raises."""

import math
from functools import partial

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_meddiff.rewards import (
    accuracy_reward,
    format_reward,
    grounding_reward,
    repetition_penalty_reward,
    report_reward,
)

FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<box>",
    "</box>",
    "[",
    "]",
    ",",
    "-1",
    "999",
    "1e309",
    "nan",
    "inf",
    "(B)",
    "B.",
    "yes",
    "no",
    "nodule",
    "effusion",
    " no ",
    "\n",
    "\x00",
    "é",
    "ℵ",
]
texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=30).map("".join),
)
completions = st.one_of(
    texts,
    texts.map(lambda t: [{"role": "assistant", "content": t}]),
    texts.map(lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}]}]),
    st.sampled_from(
        [None, 3, 1.5, float("nan"), [], [{}], [{"content": None}], [{"content": 7}], b"bytes", {"x": 1}]
    ),
)
gold_boxes = st.lists(
    st.fixed_dictionaries(
        {
            "label": st.text(max_size=5),
            "bbox": st.lists(st.one_of(st.integers(-5, 1005), st.floats(allow_nan=True)), max_size=5),
        }
    ),
    max_size=3,
)

REWARDS = [
    partial(accuracy_reward, answer=["B"], options=[["cyst", "nodule", "mass"]]),
    partial(accuracy_reward, answer=["B"], options=[["cyst", "nodule", "mass"]], graded=True),
    partial(accuracy_reward, answer=["yes"]),
    partial(accuracy_reward, answer=["left lower lobe"], open_metric="f1", graded=True),
    partial(format_reward, style="think_before"),
    partial(format_reward, style="think_after"),
    partial(format_reward, style="no_think"),
    repetition_penalty_reward,
    partial(grounding_reward, boxes=[[{"label": "n", "bbox": [0, 0, 100, 100]}]]),
    partial(grounding_reward, boxes=[[{"label": "n", "bbox": [0, 0, 100, 100]}]], mode="threshold"),
    partial(
        report_reward,
        report=["Cardiomegaly. No effusion."],
        metric={"bleu": 1, "rouge_l": 1, "clinical_f1": 1},
    ),
]


def _check(values, low, high):
    assert len(values) == 1
    value = values[0]
    assert value is None or (isinstance(value, float) and math.isfinite(value) and low <= value <= high), (
        value
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completion=completions)
def test_text_rewards_never_raise_and_stay_in_range(completion):
    for reward in REWARDS:
        low = -1.0 if reward is repetition_penalty_reward else 0.0
        _check(reward([completion]), low, 1.0)


@settings(max_examples=40, deadline=None)
@given(completion=completions, boxes=gold_boxes)
def test_grounding_reward_tolerates_malformed_annotations(completion, boxes):
    _check(grounding_reward([completion], boxes=[boxes]), 0.0, 1.0)
    _check(grounding_reward([completion], boxes=[boxes], score_empty=True), 0.0, 1.0)
