"""MedPhantom text: the report (findings + impression, with paraphrase variety), the four-option question and the
grounded rationale citing the finding boxes, all written from the same case parameters as the image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...constants import MODALITY_NAMES, OPTION_LETTERS, QUESTION_TYPES
from ...formatting import format_box
from .specs import ALL_ANATOMIES, MODALITY_SPECS, NORMAL_OPTION, QUADRANTS, SEVERITIES

# ------------------------------------------------------------------------------------------------
# Text: reports, questions, rationales
# ------------------------------------------------------------------------------------------------

_SIZE_WORDS = {"mild": "small", "moderate": "medium-sized", "severe": "large"}
_MARGIN_WORDS = {"mild": "smooth", "moderate": "lobulated", "severe": "irregular"}
_CONTRAST_WORDS = {"mild": "faint", "moderate": "clear", "severe": "marked"}
_COUNT_WORDS = ("no", "one", "two", "three")

_INTRO = (
    "{Mod} image of the {anat}.",
    "{Mod} study of the {anat}.",
    "This {mod} image shows the {anat}.",
    "{Mod} of the {anat} is provided.",
)
_FINDING = (
    "A {size} {label} is seen in the {loc}.",
    "There is a {size} {label} in the {loc}.",
    "The {loc} shows a {size} {label}.",
    "{A_label} is present in the {loc}, {size} with {margin} margins.",
    "In the {loc} there is {a_label} with {margin} margins.",
)
_NORMAL_FINDING = (
    "No focal lesion is seen.",
    "No abnormality is identified.",
    "The {anat} appears normal.",
    "There is no focal abnormality.",
)
_CLOSING = ("The remaining structures are unremarkable.", "Otherwise normal appearance.", "")
_IMPRESSION = (
    "{Sev} {label}.",
    "Findings consistent with {sev} {label}.",
    "{Count} {sev} {label} lesion{s}.",
    "{Sev} {label} in the {loc}.",
)
_IMPRESSION_NORMAL = ("No acute abnormality.", "Normal {mod} of the {anat}.", "Normal study.")

_QUESTIONS = {
    "modality": (
        "What imaging modality is shown?",
        "Which modality was used for this image?",
        "What type of image is this?",
    ),
    "anatomy": (
        "Which anatomical region is shown?",
        "What body part is imaged?",
        "Which structure does this image show?",
    ),
    "diagnosis": (
        "What is the most likely diagnosis?",
        "Which abnormality is present?",
        "What finding is seen in this image?",
    ),
    "grading": (
        "What is the severity of the {label}?",
        "How severe is the {label}?",
        "What grade is the {label}?",
    ),
    "location": (
        "Where is the {label} located?",
        "In which part of the image is the {label}?",
        "Where is the abnormality?",
    ),
    "counting": (
        "How many lesions are visible?",
        "How many abnormal areas are there?",
        "What is the number of lesions?",
    ),
    "open": (
        "What is the most likely diagnosis?",
        "Which abnormality is present?",
        "What finding is seen in this image?",
    ),
}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _a(word: str) -> str:
    """'a nodule', 'an abscess', 'an MRI', 'an X-ray', 'a CT'."""
    acronym = word[:2].isupper() or word[:2] == "X-"
    vowel = word[:1] in ("AEFHILMNORSX" if acronym else "aeiouAEIOU")
    return ("an " if vowel else "a ") + word


@dataclass
class PhantomCase:
    """One case with everything the text grammar needs (all fields are plain Python)."""

    modality: str
    anatomy: str
    label: str
    severity: str
    locations: list[str]
    boxes: list[list[int]]  # normalised 0..999 xyxy
    question_type: str


def phantom_report(case: PhantomCase, rng: np.random.Generator) -> str:
    """'Findings: … Impression: …' written from the case with paraphrase variety."""
    mod = MODALITY_NAMES[case.modality]
    fill = {"mod": mod, "Mod": _cap(mod), "anat": case.anatomy}
    parts = [rng.choice(_INTRO).format(**fill)]
    sev = case.severity
    if case.locations:
        for loc in case.locations:
            parts.append(
                rng.choice(_FINDING).format(
                    size=_SIZE_WORDS[sev],
                    label=case.label,
                    a_label=_a(case.label),
                    A_label=_cap(_a(case.label)),
                    loc=loc,
                    margin=_MARGIN_WORDS[sev],
                )
            )
        n = len(case.locations)
        templates = _IMPRESSION[:3] if n > 1 else _IMPRESSION
        impression = rng.choice(templates).format(
            Sev=_cap(sev),
            sev=sev,
            label=case.label,
            Count=_cap(_COUNT_WORDS[n]),
            s="s" if n > 1 else "",
            loc=case.locations[0],
        )
    else:
        parts.append(rng.choice(_NORMAL_FINDING).format(**fill))
        impression = rng.choice(_IMPRESSION_NORMAL).format(**fill)
    closing = rng.choice(_CLOSING)
    if closing:
        parts.append(closing)
    return "Findings: " + " ".join(parts) + " Impression: " + impression


def _options(correct: str, pool: Sequence[str], rng: np.random.Generator) -> tuple[list[str], str]:
    distractors = [p for p in pool if p != correct]
    picks = (
        list(rng.choice(distractors, size=3, replace=False)) if len(distractors) > 3 else list(distractors)
    )
    opts = [correct, *(str(p) for p in picks)]
    order = rng.permutation(len(opts))
    opts = [opts[k] for k in order]
    return opts, OPTION_LETTERS[opts.index(correct)]


def phantom_question(case: PhantomCase, rng: np.random.Generator) -> tuple[str, list[str], str, str]:
    """(question, options, answer letter or text, correct option text) for the case's question type."""
    spec = MODALITY_SPECS[case.modality]
    qt = case.question_type
    q = str(rng.choice(_QUESTIONS[qt])).format(label=case.label)
    n = len(case.locations)
    if qt == "modality":
        correct, pool = MODALITY_NAMES[case.modality], list(MODALITY_NAMES.values())
    elif qt == "anatomy":
        others = [a for a in ALL_ANATOMIES if a not in spec.anatomies]
        correct, pool = case.anatomy, [*spec.anatomies, str(rng.choice(others))]
    elif qt in ("diagnosis", "open"):
        correct, pool = (case.label if n else NORMAL_OPTION), [*spec.findings, NORMAL_OPTION]
    elif qt == "grading":
        correct, pool = case.severity, [*SEVERITIES, "none"]
    elif qt == "location":
        correct, pool = case.locations[0], list(QUADRANTS)
    elif qt == "counting":
        correct, pool = str(n), ["0", "1", "2", "3"]
    else:
        raise ValueError(f"Unknown question type {qt!r}; use one of {QUESTION_TYPES}.")
    if qt == "open":
        return q, [], correct, correct
    opts, letter = _options(correct, pool, rng)
    return q, opts, letter, correct


def phantom_rationale(case: PhantomCase, answer: str, correct_text: str) -> str:
    """Grounded step-by-step reasoning that cites each finding's box and ends with the answer."""
    mod = MODALITY_NAMES[case.modality]
    steps = [f"The image is {_a(mod)} of the {case.anatomy}."]
    sev = case.severity
    for loc, box in zip(case.locations, case.boxes):
        steps.append(
            f"{_cap(_a(case.label))} is visible at {format_box(box)} in the {loc}; it is {_SIZE_WORDS[sev]} "
            f"with {_MARGIN_WORDS[sev]} margins and {_CONTRAST_WORDS[sev]} contrast."
        )
    if not case.locations:
        steps.append("No focal lesion is visible.")
    qt = case.question_type
    n = len(case.locations)
    if qt == "modality":
        steps.append(f"The appearance is typical of {mod}.")
    elif qt == "anatomy":
        steps.append(f"The visible structures are those of the {case.anatomy}.")
    elif qt in ("diagnosis", "open"):
        steps.append(f"The appearance fits {case.label}." if n else "The study is normal.")
    elif qt == "grading":
        steps.append(f"The size, contrast and margins indicate a {sev} grade.")
    elif qt == "location":
        steps.append(f"The lesion lies in the {case.locations[0]} of the image.")
    elif qt == "counting":
        steps.append(f"Counting the lesions gives {_COUNT_WORDS[n]}.")
    tail = (
        f"So the answer is {answer}."
        if answer == correct_text
        else f"So the answer is {answer} ({correct_text})."
    )
    steps.append(tail)
    return " ".join(steps)
