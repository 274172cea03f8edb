"""VQA answer matching, accuracy tables (overall, per modality, per question type, cross-group generalisation) and the
answer-length distribution used in the think / no-think analysis.

`score_answer` is the one place that decides whether a free-text model answer matches a gold answer; the accuracy
reward (`hf_meddiff.rewards.accuracy_reward`) uses it too.

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

import math
import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence

from ..constants import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from ..formatting import parse_answer

__all__ = [
    "answer_length_distribution",
    "extract_answer",
    "match_answer",
    "normalize_answer",
    "score_answer",
    "token_f1",
    "vqa_accuracy",
]

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation})
_TAGS = re.compile("|".join(re.escape(t) for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)))
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
    return _TAGS.sub(" ", completion).strip()


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


def _check_lengths(name: str, values: Sequence | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise ValueError(
            f"`{name}` has {len(values)} entries but there are {n} predictions; give one per prediction."
        )


def vqa_accuracy(
    predictions: Sequence[str],
    references: Sequence[str],
    options: Sequence[Sequence[str]] | None = None,
    modalities: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
    train_modalities: Sequence[str] | None = None,
    train_question_types: Sequence[str] | None = None,
    open_metric: str = "exact",
) -> dict:
    """VQA accuracy, overall and broken down, with cross-group generalisation tables.

    Args:
        predictions: model outputs (free text, tags allowed).
        references: gold answers (letters for multiple choice).
        options: per-example option lists (empty for open / yes-no questions).
        modalities / question_types: per-example test group, for `per_modality` / `per_question_type`.
        train_modalities / train_question_types: per-example group the producing model was trained on. Concatenate
            the predictions of several models (one per training group) to get the generalisation tables
            `cross_modality[train][test]` / `cross_question_type[train][test]`.

    Returns:
        `dict` with `accuracy`, `n`, and when the groups are given `per_modality`, `per_question_type`,
        `cross_modality`, `cross_question_type` (accuracies in [0, 1]).

    Example:
    ```python
    >>> from hf_meddiff.metrics import vqa_accuracy
    >>> result = vqa_accuracy(["A", "<answer>no</answer>", "C"], ["A", "yes", "B"],
    ...                       options=[["cyst", "mass"], [], ["x", "y", "z"]], modalities=["ct", "ct", "mri"])
    >>> round(result["accuracy"], 4), result["per_modality"]
    (0.3333, {'ct': 0.5, 'mri': 0.0})
    ```
    """
    n = len(predictions)
    if len(references) != n:
        raise ValueError(f"Got {n} predictions but {len(references)} references; they must pair up.")
    for name, values in (
        ("options", options),
        ("modalities", modalities),
        ("question_types", question_types),
        ("train_modalities", train_modalities),
        ("train_question_types", train_question_types),
    ):
        _check_lengths(name, values, n)
    if n == 0:
        raise ValueError("Got no predictions; pass at least one prediction/reference pair.")
    scores = [
        score_answer(p, r, options[i] if options is not None else None, open_metric=open_metric)
        for i, (p, r) in enumerate(zip(predictions, references))
    ]
    result: dict = {"accuracy": sum(scores) / n, "n": n}

    def by_group(groups: Sequence[str]) -> dict[str, float]:
        sums, counts = defaultdict(float), defaultdict(int)
        for group, score in zip(groups, scores):
            sums[group] += score
            counts[group] += 1
        return {g: sums[g] / counts[g] for g in sorted(sums)}

    def cross(train: Sequence[str], test: Sequence[str]) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for t in sorted(set(train)):
            idx = [i for i in range(n) if train[i] == t]
            sums, counts = defaultdict(float), defaultdict(int)
            for i in idx:
                sums[test[i]] += scores[i]
                counts[test[i]] += 1
            table[t] = {g: sums[g] / counts[g] for g in sorted(sums)}
        return table

    if modalities is not None:
        result["per_modality"] = by_group(modalities)
    if question_types is not None:
        result["per_question_type"] = by_group(question_types)
    if train_modalities is not None:
        if modalities is None:
            raise ValueError("`train_modalities` needs `modalities` (the test modality of each example).")
        result["cross_modality"] = cross(train_modalities, modalities)
    if train_question_types is not None:
        if question_types is None:
            raise ValueError("`train_question_types` needs `question_types` (the test type of each example).")
        result["cross_question_type"] = cross(train_question_types, question_types)
    return result


def answer_length_distribution(
    predictions: Sequence[str],
    correct: Sequence[bool | float] | None = None,
    bins: Sequence[float] = (0, 8, 16, 32, 64, 128, 256, math.inf),
    tokenizer=None,
) -> dict[str, list]:
    """How many answers (and correct answers) fall into each length bin.

    Length is the number of whitespace words of the whole completion (think and answer), or of tokens when a
    `tokenizer` (anything with `encode` or `__call__` returning `input_ids`) is given. Bin i is
    `[bins[i], bins[i + 1])`.

    Returns:
        `{"bins": ["0-8", ...], "edges": [...], "total": [...], "correct": [...], "accuracy": [...]}` (`correct` and
        `accuracy` only when `correct` is given; `accuracy` is `None` for empty bins).

    Example:
    ```python
    >>> from hf_meddiff.metrics import answer_length_distribution
    >>> answer_length_distribution(["B", "<think>a b c d e f g h i</think><answer>B</answer>"], [True, False], bins=(0, 8, 16))
    {'bins': ['0-8', '8-16'], 'edges': [0, 8, 16], 'total': [1, 1], 'correct': [1, 0], 'accuracy': [1.0, 0.0]}
    ```
    """
    edges = list(bins)
    if len(edges) < 2 or any(b >= a for a, b in zip(edges[1:], edges[:-1])):
        raise ValueError(f"`bins` must be at least two increasing edges, got {edges}.")
    _check_lengths("correct", correct, len(predictions))

    def length(text: str) -> int:
        if not isinstance(text, str):
            return 0
        if tokenizer is None:
            return len(_TAGS.sub(" ", text).split())
        if hasattr(tokenizer, "encode"):
            return len(tokenizer.encode(text, add_special_tokens=False))
        return len(tokenizer(text)["input_ids"])

    def label(lo: float, hi: float) -> str:
        fmt = lambda v: "inf" if math.isinf(v) else str(int(v)) if float(v).is_integer() else str(v)  # noqa: E731
        return f"{fmt(lo)}-{fmt(hi)}"

    total = [0] * (len(edges) - 1)
    right = [0] * (len(edges) - 1)
    for i, text in enumerate(predictions):
        size = length(text)
        for b in range(len(edges) - 1):
            if edges[b] <= size < edges[b + 1]:
                total[b] += 1
                if correct is not None and bool(correct[i]):
                    right[b] += 1
                break
    result: dict[str, list] = {
        "bins": [label(edges[b], edges[b + 1]) for b in range(len(total))],
        "edges": edges,
        "total": total,
    }
    if correct is not None:
        result["correct"] = right
        result["accuracy"] = [r / t if t else None for r, t in zip(right, total)]
    return result
