"""The answer matcher: the one place that decides whether a free-text model answer matches a gold answer.

VQA accuracy (`hf_meddiff.metrics.vqa`), the accuracy reward (`hf_meddiff.rewards.accuracy_reward`) and the
rejection sampling of reasoning data (`hf_meddiff.data.build_reasoning_dataset`) all use `score_answer`. It
sits in the bottom layer (it needs only the tag table) so that data, metrics and rewards can share it.

- Multiple choice (`options` given, gold = letter): "C", "(C)", "C.", "C) text", "C: text", or the option text itself.
- Yes/no (gold "yes"/"no"): "Yes", "yes.", "No, there is none" (the latter with extra text).
- Open answers: normalised exact match (lower-case, no punctuation / articles / extra spaces) or token F1.

The answer is read from `<answer>…</answer>` when present (see `hf_meddiff.formatting.parse_answer`).

>>> score_answer("<think>Round, dense.</think><answer>(B)</answer>", "B", ["cyst", "nodule", "fracture"])
1.0
>>> score_answer("It is B, a nodule, or maybe C", "B", ["cyst", "nodule", "fracture"])
0.0
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from .constants import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from .formatting import parse_answer

__all__ = [
    "TAGS_PATTERN",
    "YES_NO",
    "extract_answer",
    "match_answer",
    "normalize_answer",
    "score_answer",
    "token_f1",
]

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation})
TAGS_PATTERN = re.compile(
    "|".join(re.escape(t) for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
)
_CLEAN_LETTER = re.compile(r"^\(?\s*([A-Z])\s*\)?\s*[.):]?$")
_LETTER_WITH_TEXT = re.compile(r"^\(?([A-Z])(?:\)|\.|:|\s*-)\s*(.+)$", re.DOTALL)
_LETTER_MENTIONS = (
    re.compile(r"\(([A-Z])\)"),
    re.compile(r"(?<![\w(])([A-Z])[.):](?=\s|$)"),
    re.compile(r"\b(?:option|answer|choice)\s*(?:is|:)?\s*\(?([A-Z])\b(?![\w'])", re.IGNORECASE),
    re.compile(r"^([A-Z])(?=\s|,|$)"),
    # a bare capital letter; "A" and "I" are words, so only the forms above count for them
    re.compile(r"(?<![\w'’-])([B-HJ-Z])(?![\w'’-])"),
)
YES_NO = ("yes", "no")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace.

    >>> normalize_answer("  The Left-lower Lobe. ")
    'left lower lobe'
    """
    if not isinstance(text, str):
        return ""
    text = text.lower().translate(_PUNCT_TABLE)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 of two normalised answers (1.0 when both are empty).

    >>> token_f1("left lower lobe", "lower lobe")
    0.8
    """
    pred, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def extract_answer(completion: str) -> str:
    """The answer part of a completion: the `<answer>` content when present, else the text without tags."""
    if not isinstance(completion, str):
        return ""
    tagged = parse_answer(completion)
    if tagged is not None:
        return tagged
    return TAGS_PATTERN.sub(" ", completion).strip()


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", haystack) is not None


def _choose(answer: str, options: Sequence[str]) -> tuple[set[int], bool]:
    """Indices of the options `answer` points at, and whether it is a clean single answer."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    normalized_options = [normalize_answer(o) for o in options]
    norm = normalize_answer(answer)
    match = _CLEAN_LETTER.match(answer)
    if match and match.group(1) in letters:
        return {letters.index(match.group(1))}, True
    match = _LETTER_WITH_TEXT.match(answer)
    if match and match.group(1) in letters:
        index = letters.index(match.group(1))
        if normalize_answer(match.group(2)) == normalized_options[index]:
            return {index}, True
    if norm and norm in normalized_options:
        return {i for i, o in enumerate(normalized_options) if o == norm}, True
    chosen = set()
    for pattern in _LETTER_MENTIONS:
        chosen.update(
            letters.index(m.group(1).upper())
            for m in pattern.finditer(answer)
            if m.group(1).upper() in letters
        )
    # Option texts mentioned verbatim; a text contained in a longer mentioned option does not count on its own.
    mentioned = [i for i, o in enumerate(normalized_options) if _contains(norm, o)]
    for i in mentioned:
        if not any(j != i and normalized_options[i] in normalized_options[j] for j in mentioned):
            chosen.add(i)
    return chosen, False


def match_answer(completion: str, gold: str, options: Sequence[str] | None = None) -> tuple[bool, bool]:
    """Whether `completion` answers `gold` correctly, and whether it does so cleanly (nothing but the answer).

    Hedged answers that point at several choices (or both "yes" and "no") are wrong.
    """
    answer = extract_answer(completion)
    if not isinstance(gold, str):
        return False, False
    options = [o if isinstance(o, str) else str(o) for o in (options or [])]
    gold_stripped = gold.strip()
    if options and len(gold_stripped) == 1 and gold_stripped.isalpha():
        index = ord(gold_stripped.upper()) - ord("A")
        chosen, clean = _choose(answer, options)
        return chosen == {index}, clean and chosen == {index}
    norm, gold_norm = normalize_answer(answer), normalize_answer(gold)
    if options and gold_norm in [normalize_answer(o) for o in options]:
        # The gold is an option text: accept its letter too.
        index = [normalize_answer(o) for o in options].index(gold_norm)
        chosen, clean = _choose(answer, options)
        return chosen == {index}, clean and chosen == {index}
    if gold_norm in YES_NO:
        if norm in YES_NO:
            return norm == gold_norm, norm == gold_norm
        words = set(norm.split())
        said = [w for w in YES_NO if w in words]
        return said == [gold_norm], False
    if norm == gold_norm:
        return bool(gold_norm), bool(gold_norm)
    return _contains(norm, gold_norm), False


def score_answer(
    completion: str,
    gold: str,
    options: Sequence[str] | None = None,
    graded: bool = False,
    partial_credit: float = 0.5,
    open_metric: str = "exact",
) -> float:
    """Score one answer in [0, 1].

    Args:
        completion: the model output (may hold `<think>`/`<answer>` tags).
        gold: the gold answer (the letter for multiple choice).
        options: option texts in letter order; empty / `None` for yes/no and open questions.
        graded: when `True`, a correct answer with extra text earns `partial_credit` instead of 1.0; when `False`
            it earns 1.0 for multiple choice and yes/no, while open answers need an exact match.
        open_metric: `"exact"` or `"f1"` (token F1) for open questions.
    """
    if open_metric not in ("exact", "f1"):
        raise ValueError(f"open_metric must be 'exact' or 'f1', got {open_metric!r}.")
    correct, clean = match_answer(completion, gold, options)
    is_open = not options and normalize_answer(gold) not in YES_NO
    if is_open and open_metric == "f1" and not clean:
        f1 = token_f1(extract_answer(completion), gold)
        return f1 * partial_credit if graded else f1
    if clean:
        return 1.0
    if not correct or (is_open and not graded):
        return 0.0
    return partial_credit if graded else 1.0
