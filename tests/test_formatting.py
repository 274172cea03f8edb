import pytest

from hf_meddiff.formatting import (
    denormalize_box,
    format_box,
    format_reasoning,
    normalize_box,
    parse_answer,
    parse_boxes,
    parse_think,
)


def test_box_text_round_trips():
    text = "left " + format_box([1, 2, 300, 999]) + " and " + format_box([5.4, 6.6, 7, 8])
    assert parse_boxes(text) == [(1, 2, 300, 999), (5, 7, 7, 8)]


def test_malformed_boxes_are_ignored():
    assert parse_boxes("<box>[1,2,3]</box> <box>[a,b,c,d]</box>") == []
    assert parse_boxes(None) == []


def test_normalize_box_maps_pixels_to_0_999_and_back():
    assert normalize_box([0, 0, 64, 32], width=64, height=32) == [0, 0, 999, 999]
    assert denormalize_box([0, 0, 999, 999], 64, 32) == [0.0, 0.0, 64.0, 32.0]


@pytest.mark.parametrize(
    "style,expected",
    [
        ("think_before", "<think>why</think><answer>B</answer>"),
        ("think_after", "<answer>B</answer><think>why</think>"),
        ("no_think", "<answer>B</answer>"),
    ],
)
def test_reasoning_styles(style, expected):
    out = format_reasoning("B", "why", style=style)
    assert out == expected
    assert parse_answer(out) == "B"
    assert parse_think(out) == (None if style == "no_think" else "why")


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="think_before"):
        format_reasoning("B", "x", style="later")


def test_public_names_resolve():
    import hf_meddiff

    assert set(hf_meddiff._LAZY) <= set(hf_meddiff.__all__)
    for name in ("MedDiffConfig", "MedDiffProcessor", "MedDiffImageTokenizer", "train_text_tokenizer"):
        assert getattr(hf_meddiff, name).__name__ == name


def test_one_option_layout_for_prompts_and_the_processor():
    from hf_meddiff.formatting import format_question
    from hf_meddiff.models.meddiff import processing_meddiff, tokens_meddiff

    assert processing_meddiff.format_options is tokens_meddiff.format_options
    assert format_question("Q?", ["CT", "MRI"]) == tokens_meddiff.format_options("Q?", ["CT", "MRI"])


def test_one_task_table():
    from hf_meddiff.constants import IMAGE_TASKS, TASKS
    from hf_meddiff.evaluation import EVAL_TASKS
    from hf_meddiff.models.meddiff.configuration_meddiff import MEDDIFF_TASKS
    from hf_meddiff.models.meddiff.processing_meddiff import PROCESSOR_TASKS

    assert PROCESSOR_TASKS is TASKS and MEDDIFF_TASKS is TASKS and EVAL_TASKS is TASKS
    assert set(IMAGE_TASKS) <= set(TASKS)
