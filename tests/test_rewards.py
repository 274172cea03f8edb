"""Specifications of the text rewards (hand-computed expected values) and of combining them for TRL."""

import pickle
from functools import partial

import pytest

from hf_meddiff.rewards import (
    CompositeReward,
    NamedReward,
    accuracy_reward,
    format_reward,
    grounding_reward,
    repetition_penalty_reward,
    report_reward,
    reward_funcs_and_weights,
)

OPTIONS = ["cyst", "nodule", "abscess", "no abnormality"]


def conv(text):
    return [{"role": "assistant", "content": text}]


# --- accuracy -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "B",
        "(B)",
        "B.",
        "B)",
        "B: nodule",
        "(B) nodule",
        "nodule",
        "Nodule.",
        "<answer>B</answer>",
        "<think>x</think><answer> (B) </answer>",
    ],
)
def test_accuracy_accepts_every_clean_multiple_choice_form(text):
    assert accuracy_reward([text], answer=["B"], options=[OPTIONS], graded=True) == [1.0]


@pytest.mark.parametrize(
    "text", ["A", "(C)", "cyst", "<answer>D</answer>", "", "B or C", "It is B, a nodule, or maybe C"]
)
def test_accuracy_rejects_wrong_and_hedged_choices(text):
    assert accuracy_reward([text], answer=["B"], options=[OPTIONS]) == [0.0]


def test_accuracy_graded_gives_partial_credit_for_correct_answer_with_extra_text():
    completions = [
        conv("The answer is B because it is round."),
        conv("B"),
        conv("I think it is a nodule here"),
    ]
    assert accuracy_reward(completions, answer=["B"] * 3, options=[OPTIONS] * 3) == [1.0, 1.0, 1.0]
    assert accuracy_reward(
        completions, answer=["B"] * 3, options=[OPTIONS] * 3, graded=True, partial_credit=0.25
    ) == [
        0.25,
        1.0,
        0.25,
    ]


def test_accuracy_reads_the_answer_tag_not_the_reasoning():
    text = "<think>Could be (A) cyst, but the wall is thick.</think><answer>C</answer>"
    assert accuracy_reward([text], answer=["C"], options=[OPTIONS]) == [1.0]
    assert accuracy_reward([text], answer=["A"], options=[OPTIONS]) == [0.0]


def test_accuracy_yes_no():
    texts = ["Yes", "yes.", "No", "No, there is no effusion.", "yes and no"]
    assert accuracy_reward(texts, answer=["yes", "yes", "yes", "no", "no"]) == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert accuracy_reward(texts, answer=["yes", "yes", "yes", "no", "no"], graded=True) == [
        1.0,
        1.0,
        0.0,
        0.5,
        0.0,
    ]


def test_accuracy_open_exact_and_token_f1():
    texts = ["The left lower lobe.", "left lobe", "It is in the left lower lobe"]
    gold = ["left lower lobe"] * 3
    assert accuracy_reward(texts, answer=gold, options=[[]] * 3) == [1.0, 0.0, 0.0]
    assert accuracy_reward(texts, answer=gold, options=[[]] * 3, graded=True) == [1.0, 0.0, 0.5]
    # token F1: "left lobe" vs "left lower lobe": P = 2/2, R = 2/3, F1 = 0.8
    f1 = accuracy_reward(texts, answer=gold, options=[[]] * 3, open_metric="f1")
    assert f1[0] == 1.0 and f1[1] == pytest.approx(0.8)
    # "it is in left lower lobe" (article dropped, 6 tokens): P = 3/6, R = 1 -> F1 = 2/3
    assert f1[2] == pytest.approx(2 / 3)


def test_accuracy_returns_none_without_gold_and_zero_for_non_text():
    assert accuracy_reward(["B", "B"], answer=["", None]) == [None, None]
    assert accuracy_reward(
        [None, 3, [{"content": None}], [{"role": "assistant", "content": [{"type": "text", "text": "B"}]}]],
        answer=["B"] * 4,
        options=[OPTIONS] * 4,
    ) == [0.0, 0.0, 0.0, 1.0]


def test_accuracy_needs_the_answer_column():
    with pytest.raises(ValueError, match="answer"):
        accuracy_reward(["B"])
    with pytest.raises(ValueError, match="2 entries for 1"):
        accuracy_reward(["B"], answer=["B", "C"])


# --- format ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "before", "after", "none"),
    [
        ("<think>round</think><answer>B</answer>", 1.0, 0.0, 0.0),
        ("  <think>\nround\n</think>\n<answer>B</answer>\n", 1.0, 0.0, 0.0),
        ("<answer>B</answer><think>round</think>", 0.0, 1.0, 0.0),
        ("<answer>B</answer>", 0.0, 0.0, 1.0),
        ("So: <answer>B</answer>", 0.0, 0.0, 0.0),
        ("<think>a</think><think>b</think><answer>B</answer>", 0.0, 0.0, 0.0),
        ("<think>a</think><answer>B</answer><answer>C</answer>", 0.0, 0.0, 0.0),
        ("<think> </think><answer>B</answer>", 0.0, 0.0, 0.0),
        ("<think>a <answer>B</answer></think>", 0.0, 0.0, 0.0),
        ("<think>see <box>[1,2,3,4]</box></think><answer>B</answer>", 1.0, 0.0, 0.0),
        ("", 0.0, 0.0, 0.0),
    ],
)
def test_format_reward_is_strict_for_each_style(text, before, after, none):
    assert format_reward([text]) == [before]
    assert partial(format_reward, style="think_after")([text]) == [after]
    assert format_reward([conv(text)], style="no_think") == [none]


def test_format_reward_rejects_unknown_style():
    with pytest.raises(ValueError, match="think_before"):
        format_reward(["x"], style="think_sideways")


# --- repetition -----------------------------------------------------------------------------------------------


def test_repetition_penalty_hand_computed():
    # 5 words -> 3 trigrams; "a b c a b" has trigrams (a b c) (b c a) (c a b): all unique -> 0
    # "a a a a a": 3 trigrams, 1 unique -> (1 - 1/3) * -1
    # "a b a b a b" bigrams: ab ba ab ba ab -> 2 unique of 5 -> (1 - 2/5) * -0.5 = -0.3
    out = repetition_penalty_reward(["a b c a b", "a a a a a", "two words"])
    assert out == [0.0, pytest.approx(-2 / 3), 0.0]
    assert repetition_penalty_reward(["a b a b a b"], ngram_size=2, max_penalty=-0.5) == [pytest.approx(-0.3)]
    with pytest.raises(ValueError, match="max_penalty"):
        repetition_penalty_reward(["a"], max_penalty=1.0)


# --- grounding ------------------------------------------------------------------------------------------------

GOLD = [{"label": "nodule", "bbox": [0, 0, 10, 10]}, {"label": "nodule", "bbox": [100, 100, 200, 200]}]


def test_grounding_reward_matches_one_to_one_and_penalises_missing_and_extra():
    completions = [
        "<box>[100,100,200,200]</box> and <box>[0,0,10,10]</box>",  # both, swapped order -> 1
        "<box>[0,0,10,10]</box>",  # one missing -> 1/2
        "<box>[0,0,10,10]</box><box>[0,0,10,10]</box>",  # duplicate: only one can match -> 1/2
        "<box>[5,0,15,10]</box><box>[100,100,200,200]</box><box>[500,500,600,600]</box>",  # (1/3 + 1) / 3
        "no boxes",
        "<box>[10,10,0,0]</box>",  # malformed: an extra box that matches nothing
    ]
    out = grounding_reward(completions, boxes=[GOLD] * len(completions))
    assert out == pytest.approx([1.0, 0.5, 0.5, (1 / 3 + 1) / 3, 0.0, 0.0])
    hits = grounding_reward(completions, boxes=[GOLD] * len(completions), mode="threshold", iou_threshold=0.5)
    # F1 = 2 * hits / (n_pred + n_gold)
    assert hits == pytest.approx([1.0, 2 / 3, 0.5, 2 / 5, 0.0, 0.0])


def test_grounding_reward_without_annotation_is_not_applicable_unless_asked():
    assert grounding_reward(["<box>[0,0,9,9]</box>", "x"], boxes=[[], None]) == [None, None]
    assert grounding_reward(["<box>[0,0,9,9]</box>", "x"], boxes=[[], []], score_empty=True) == [0.0, 1.0]
    assert grounding_reward(["<box>[0,0,9,9]</box>"], boxes=[[{"label": "x", "bbox": [1, 2]}]]) == [None]


# --- report ---------------------------------------------------------------------------------------------------


def test_report_reward_hand_computed():
    ref = "The heart is normal in size."
    hyp = "the heart is normal"
    # ROUGE-L: LCS 4, P = 1, R = 4/6 -> (1 + 1.44) * P * R / (R + 1.44 * P)
    r = 4 / 6
    expected_rouge = 2.44 * r / (r + 1.44)
    # tokens: "the heart is normal in size." (6) -- punctuation stays attached, as in coco
    assert report_reward([hyp], report=[ref]) == [pytest.approx(expected_rouge)]
    # BLEU-1 = brevity penalty exp(1 - 6/4) (all unigrams match)
    import math

    assert report_reward([hyp], report=[ref], metric="bleu", bleu_order=1) == [pytest.approx(math.exp(-0.5))]
    mixed = report_reward([hyp], report=[ref], metric={"rouge_l": 1.0, "bleu": 1.0}, bleu_order=1)
    assert mixed == [pytest.approx((expected_rouge + math.exp(-0.5)) / 2)]


def test_report_reward_clinical_f1():
    ref = "Cardiomegaly. Small left pleural effusion."
    out = report_reward(
        [
            "Cardiomegaly. No effusion.",
            "<answer>Cardiomegaly and pleural effusion.</answer>",
            "Normal heart size.",
            "",
        ],
        report=[ref] * 4,
        metric="clinical_f1",
    )
    # {Cardiomegaly} vs {Cardiomegaly, Effusion}: F1 = 2*1/(1+2); exact: 1; none vs two: 0; empty text: 0
    assert out == pytest.approx([2 / 3, 1.0, 0.0, 0.0])
    assert report_reward(["x"], report=[""]) == [None]


# --- composite ------------------------------------------------------------------------------------------------


def test_reward_funcs_and_weights_names_each_reward_for_trl():
    from trl.trainer.utils import get_callable_name

    funcs, weights = reward_funcs_and_weights(
        [
            ("accuracy", accuracy_reward, 1.0),
            ("format_after", partial(format_reward, style="think_after"), 0.5),
            (repetition_penalty_reward, 0.1),
        ]
    )
    assert [get_callable_name(f) for f in funcs] == ["accuracy", "format_after", "repetition_penalty_reward"]
    assert weights == [1.0, 0.5, 0.1]
    assert funcs[1](["<answer>B</answer><think>x</think>"]) == [1.0]
    pickle.loads(pickle.dumps(funcs))  # picklable for TRL's rollout workers
    with pytest.raises(ValueError, match="unique"):
        reward_funcs_and_weights([format_reward, partial(format_reward, style="no_think")])


def test_composite_reward_sums_weighted_parts_skips_none_and_logs_each_part():
    logged = {}
    reward = CompositeReward(
        {
            "accuracy": (accuracy_reward, 2.0),
            "format": (format_reward, 0.5),
            "grounding": (grounding_reward, 1.0),
        },
        name="medical",
    )
    completions = ["<think>Round <box>[0,0,10,10]</box></think><answer>B</answer>", "<answer>A</answer>"]
    out = reward(
        prompts=["q1", "q2"],
        completions=completions,
        answer=["B", "B"],
        options=[OPTIONS, OPTIONS],
        boxes=[[GOLD[0]], []],
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )
    assert out == [2.0 + 0.5 + 1.0, 0.0]
    assert reward.__name__ == "medical"
    assert logged == {"medical/accuracy": 0.5, "medical/format": 0.5, "medical/grounding": 1.0}
    normalised = CompositeReward({"a": (accuracy_reward, 2.0), "g": (grounding_reward, 1.0)}, normalize=True)
    assert normalised(completions, answer=["B", ""], boxes=[[GOLD[0]], []]) == [1.0, None]
    assert NamedReward(format_reward, "fmt").__name__ == "fmt"


def test_accuracy_logs_the_parsed_answers_through_trl_log_extra():
    logged = {}
    accuracy_reward(
        ["<answer>(B)</answer>", None],
        answer=["B", "B"],
        log_extra=lambda column, values: logged.update({column: values}),
    )
    assert logged == {"answer_parsed": ["(B)", "[not text]"]}
