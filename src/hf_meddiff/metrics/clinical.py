"""Clinical efficacy: a rule-based, negation-aware finding labeller and CE precision / recall / F1.

The default vocabulary is the 14 CheXpert observations of chest X-ray reports. Each observation is a `Finding`: a name,
regular expressions that mention it, and optional patterns that state it is *absent* ("heart size is normal" is a
negative mention of cardiomegaly). A `FindingLabeler` splits a report into sentences and labels every finding:

- `1` positive, `0` negative (negated: "no", "without", "negative for", "free of", "… is not seen", "… has resolved"),
  `-1` uncertain ("possible", "may represent", "cannot be excluded", …), `None` not mentioned.

Negation and uncertainty cues scope over the rest of their clause (a list such as "no effusion, consolidation or
pneumothorax" negates all three) and stop at "but", "however", "although", ";" and sentence ends.

The vocabulary is pluggable: `FindingLabeler.from_names(["nodule", "pleural_effusion"])` builds a labeller for any
finding names (MedPhantom's included), with simple plural handling and optional synonyms.

>>> labeler = FindingLabeler.chexpert()
>>> labels = labeler("Mild cardiomegaly. No pleural effusion or pneumothorax.")
>>> labels["Cardiomegaly"], labels["Pleural Effusion"], labels["Pneumothorax"], labels["Edema"]
(1, 0, 0, None)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..constants import MEDPHANTOM_FINDINGS

__all__ = [
    "CHEXPERT_FINDINGS",
    "Finding",
    "FindingLabeler",
    "clinical_efficacy_scores",
]


@dataclass(frozen=True)
class Finding:
    """One observation of a finding vocabulary.

    Args:
        name: display name ("Pleural Effusion").
        patterns: regular expressions (case-insensitive) that mention the finding.
        negative_patterns: expressions that by themselves say the finding is absent ("heart size is normal").
    """

    name: str
    patterns: tuple[str, ...]
    negative_patterns: tuple[str, ...] = field(default_factory=tuple)


NO_FINDING = "No Finding"

CHEXPERT_FINDINGS: tuple[Finding, ...] = (
    Finding(
        "Enlarged Cardiomediastinum",
        (
            r"enlarged (?:cardio)?mediastin\w*",
            r"(?:cardio)?mediastin\w* (?:silhouette |contours? )?(?:is |are )?(?:enlarged|widened|widening|prominent)",
            r"mediastinal widening",
            r"widened mediastinum",
        ),
        (
            r"(?:cardio)?mediastinal (?:silhouette|contours?) (?:is |are )?(?:normal|unremarkable|within normal limits)",
        ),
    ),
    Finding(
        "Cardiomegaly",
        (
            r"cardiomegaly",
            r"(?:heart|cardiac silhouette|cardiac shadow) (?:size )?(?:is |appears )?(?:mildly |moderately |severely )?(?:enlarged|large)",
            r"enlarged (?:heart|cardiac silhouette)",
            r"cardiac enlargement",
        ),
        (
            r"(?:heart|cardiac) size (?:is )?(?:normal|within normal limits|upper limits of normal)",
            r"normal (?:heart|cardiac) size",
            r"normal[- ]sized heart",
            r"heart is normal in size",
        ),
    ),
    Finding(
        "Lung Opacity",
        (
            r"opacit\w*",
            r"opacification",
            r"infiltrat\w*",
            r"(?:air[- ]?space|parenchymal) disease",
            r"haziness",
        ),
        (r"lungs? (?:are |is )?clear", r"clear lungs?"),
    ),
    Finding(
        "Lung Lesion", (r"nodules?", r"nodular", r"mass(?:es)?", r"lesions?", r"tumou?rs?", r"neoplasms?")
    ),
    Finding(
        "Edema",
        (r"edema", r"oedema", r"vascular congestion", r"pulmonary congestion", r"heart failure", r"chf"),
    ),
    Finding("Consolidation", (r"consolidat\w*",)),
    Finding("Pneumonia", (r"pneumoni\w*", r"infection", r"infectious process")),
    Finding("Atelectasis", (r"atelecta\w*", r"collapse")),
    Finding("Pneumothorax", (r"pneumothora\w*", r"pneumothoraces")),
    Finding(
        "Pleural Effusion",
        (r"effusions?", r"pleural fluid", r"hydrothorax", r"fluid in the (?:pleural|costophrenic)"),
        (r"costophrenic (?:angles?|sulci|recess\w*) (?:are |is )?(?:sharp|clear)",),
    ),
    Finding(
        "Pleural Other", (r"pleural thickening", r"fibrothorax", r"pleural scar\w*", r"pleural plaques?")
    ),
    Finding("Fracture", (r"fractures?", r"fractured")),
    Finding(
        "Support Devices",
        (
            r"(?:endotracheal|et|nasogastric|ng|enteric|feeding|chest|tracheostomy) tubes?",
            r"(?:central (?:venous )?)?(?:line|catheter|picc)s?",
            r"pacemaker",
            r"pacer",
            r"(?:icd|defibrillator)",
            r"sternotomy wires?",
            r"(?:surgical )?clips",
            r"stents?",
            r"devices?",
        ),
    ),
)

_NEGATION_PRE = (
    r"no",
    r"not",
    r"without",
    r"negative for",
    r"free of",
    r"clear of",
    r"absence of",
    r"absent",
    r"resolution of",
    r"resolved",
    r"rule out",
    r"ruled out",
    r"no evidence of",
    r"no signs? of",
    r"neither",
    r"nor",
    r"never",
    r"removal of",
    r"removed",
)
_NEGATION_POST = (
    r"(?:is|are|was|were)\s+(?:not\s+(?:seen|present|identified|visualized|noted|demonstrated|evident)|absent|resolved|gone)",
    r"(?:has|have)\s+(?:resolved|cleared|been removed)",
    r"not\s+(?:seen|present|identified|visualized|demonstrated)",
    r"(?:is|are)\s+(?:no longer)",
)
_UNCERTAIN_PRE = (
    r"possible",
    r"possibly",
    r"probable",
    r"probably",
    r"may",
    r"might",
    r"could",
    r"questionable",
    r"question of",
    r"suspicious for",
    r"suspected",
    r"suggestive of",
    r"suggests?",
    r"concerning for",
    r"cannot (?:be )?(?:excluded|ruled out)",
    r"can not (?:be )?(?:excluded|ruled out)",
    r"not (?:be )?excluded",
    r"versus",
    r"vs\.?",
    r"likely",
    r"borderline",
    r"equivocal",
    r"differential",
)
_UNCERTAIN_POST = (
    r"(?:cannot|can not|could not|may not) (?:be )?(?:excluded|ruled out)",
    r"(?:is|are) (?:not )?(?:excluded)",
    r"(?:is|are) (?:possible|suspected|questionable|likely)",
    r"(?:versus|vs\.?)",
)
# Hedged negations ("cannot exclude", "not ruled out") are uncertainty, checked before plain negation.
_HEDGED = r"(?:cannot|can not|could not|can't|not)\s+(?:be\s+)?(?:exclude[ds]?|rule[ds]?\s+out|ruled\s+out)"
_SCOPE_BREAK = r"\b(?:but|however|although|though|which|aside from|except)\b|[;:]"


def _compile(alternatives: Iterable[str]) -> re.Pattern:
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)


class FindingLabeler:
    """Negation- and uncertainty-aware rule labeller of findings in free-text reports.

    Args:
        findings (`Sequence[Finding]`): the vocabulary.
        no_finding (`str` or `None`, defaults to `"No Finding"`): name of the extra "no finding" label, positive when
            no other finding (except `exclude_from_no_finding`) is positive or uncertain. `None` leaves it out.
        exclude_from_no_finding (`Sequence[str]`): findings that do not count against "no finding"
            (CheXpert: "Support Devices").

    Example:
    ```python
    >>> from hf_meddiff.metrics import FindingLabeler
    >>> labeler = FindingLabeler.from_names(["nodule", "pleural_effusion"], no_finding=None)
    >>> labeler("Two nodules in the left lung. Possible pleural effusion.")
    {'nodule': 1, 'pleural_effusion': -1}
    ```
    """

    def __init__(
        self,
        findings: Sequence[Finding],
        no_finding: str | None = NO_FINDING,
        exclude_from_no_finding: Sequence[str] = ("Support Devices",),
    ):
        names = [f.name for f in findings]
        if len(set(names)) != len(names):
            raise ValueError(f"Finding names must be unique, got {names}.")
        self.findings = tuple(findings)
        self.no_finding = no_finding
        self.exclude_from_no_finding = set(exclude_from_no_finding)
        self._mention = [_compile(f.patterns) for f in self.findings]
        self._negative = [
            _compile(f.negative_patterns) if f.negative_patterns else None for f in self.findings
        ]
        self._neg_pre = _compile(_NEGATION_PRE)
        self._unc_pre = _compile(_UNCERTAIN_PRE)
        self._neg_post = re.compile(r"^\s*(?:" + "|".join(_NEGATION_POST) + r")\b", re.IGNORECASE)
        self._unc_post = re.compile(r"^\s*(?:" + "|".join(_UNCERTAIN_POST) + r")\b", re.IGNORECASE)
        self._break = re.compile(_SCOPE_BREAK, re.IGNORECASE)
        self._hedged = re.compile(_HEDGED, re.IGNORECASE)

    @classmethod
    def chexpert(cls) -> FindingLabeler:
        """The 14 CheXpert observations (13 findings + "No Finding")."""
        return cls(CHEXPERT_FINDINGS)

    @classmethod
    def from_names(
        cls,
        names: Iterable[str],
        synonyms: Mapping[str, Iterable[str]] | None = None,
        no_finding: str | None = NO_FINDING,
        exclude_from_no_finding: Sequence[str] = (),
    ) -> FindingLabeler:
        """A labeller for arbitrary finding names ("pleural_effusion" matches "pleural effusion(s)").

        `synonyms` maps a name to extra phrases (plain text, not regex) that also mention it.
        """
        synonyms = dict(synonyms or {})
        findings = []
        for name in names:
            phrases = [name.replace("_", " ").replace("-", " ")] + list(synonyms.get(name, ()))
            patterns = tuple(_phrase_pattern(phrase) for phrase in phrases)
            findings.append(Finding(name, patterns))
        return cls(findings, no_finding=no_finding, exclude_from_no_finding=exclude_from_no_finding)

    @classmethod
    def medphantom(
        cls, modalities: Iterable[str] | None = None, no_finding: str | None = NO_FINDING
    ) -> FindingLabeler:
        """The MedPhantom finding vocabulary (`hf_meddiff.constants.MEDPHANTOM_FINDINGS`), all modalities or some."""
        chosen = list(modalities) if modalities is not None else list(MEDPHANTOM_FINDINGS)
        unknown = [m for m in chosen if m not in MEDPHANTOM_FINDINGS]
        if unknown:
            raise ValueError(
                f"Unknown MedPhantom modalities {unknown}; available: {sorted(MEDPHANTOM_FINDINGS)}."
            )
        names = dict.fromkeys(f for m in chosen for f in MEDPHANTOM_FINDINGS[m])
        return cls.from_names(names, no_finding=no_finding)

    @property
    def names(self) -> list[str]:
        """Label names in output order (findings, then "no finding" when enabled)."""
        return [f.name for f in self.findings] + ([self.no_finding] if self.no_finding else [])

    def _clause_label(self, sentence: str, start: int, end: int) -> int:
        # Cues before the mention count only inside the same clause (after the last scope break).
        before = sentence[:start]
        breaks = list(self._break.finditer(before))
        clause = before[breaks[-1].end() :] if breaks else before
        after = sentence[end:]
        cut = self._break.search(after)
        after_clause = after[: cut.start()] if cut else after
        if self._hedged.search(clause) or self._hedged.search(after_clause):
            return -1
        if self._neg_pre.search(clause) or self._neg_post.search(_skip_list(after_clause)):
            return 0
        if self._unc_pre.search(clause) or self._unc_post.search(_skip_list(after_clause)):
            return -1
        return 1

    def __call__(self, report: str) -> dict[str, int | None]:
        """Label one report: `{finding name: 1 | 0 | -1 | None}`."""
        if not isinstance(report, str):
            report = ""
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", report.lower()) if s.strip()]
        found: list[list[int]] = [[] for _ in self.findings]
        for sentence in sentences:
            spans = [
                (k, m.start(), m.end())
                for k, mention in enumerate(self._mention)
                for m in mention.finditer(sentence)
            ]
            for k, start, end in spans:
                # "tumor cluster" mentions the finding "tumor cluster", not also "tumor".
                if any(o != k and s <= start and end <= e and e - s > end - start for o, s, e in spans):
                    continue
                found[k].append(self._clause_label(sentence, start, end))
            for k, negative in enumerate(self._negative):
                if negative is not None and negative.search(sentence):
                    found[k].append(0)
        labels: dict[str, int | None] = {}
        for finding, values in zip(self.findings, found):
            labels[finding.name] = 1 if 1 in values else -1 if -1 in values else 0 if 0 in values else None
        if self.no_finding:
            abnormal = any(
                labels[f.name] in (1, -1) for f in self.findings if f.name not in self.exclude_from_no_finding
            )
            labels[self.no_finding] = None if abnormal else 1
        return labels

    def is_informative(self, report: str) -> bool:
        """Whether `report` says anything the labeller can read: a finding mentioned (positive, negative or
        uncertain) or a statement of normality ("normal", "unremarkable", "no acute ...", "clear", ...). Junk text,
        tokens and empty strings are not: they must not earn "no finding" credit in a generated report.

        >>> labeler = FindingLabeler.chexpert()
        >>> labeler.is_informative("No acute process."), labeler.is_informative("asdf <|mask|> !!")
        (True, False)
        """
        if not isinstance(report, str) or not report.strip():
            return False
        if _NORMAL_STATEMENT.search(report.lower()):
            return True
        labels = self(report)
        return any(labels[f.name] is not None for f in self.findings)

    def positives(self, report: str, uncertain_as_positive: bool = False) -> set[str]:
        """Names of the findings labelled positive (and uncertain, when asked) in `report`."""
        accepted = (1, -1) if uncertain_as_positive else (1,)
        return {name for name, label in self(report).items() if label in accepted}


# Statements that a study is normal, which make a report without any finding mention informative.
_NORMAL_STATEMENT = re.compile(
    r"\b(?:normal|unremarkable|clear|negative|stable|unchanged|no acute|no (?:focal |significant |active )?"
    r"(?:abnormalit\w*|disease|findings?|process|pathology)|within normal limits|abnormalit\w*)\b"
)


def _phrase_pattern(phrase: str) -> str:
    words = [re.escape(w) for w in phrase.lower().split()]
    if not words:
        raise ValueError(f"Empty finding phrase {phrase!r}.")
    words[-1] = words[-1] + r"(?:e?s)?"
    return r"[\s-]+".join(words)


# A list of words ("effusion or pneumothorax") before a verb; each word ends at a word boundary, so matching is linear.
_LIST_PREFIX = re.compile(
    r"^(?:[\s,]*(?:(?:and|or)\s+)?[a-z]+\b)*?(?=\s+(?:is|are|was|were|has|have|not|cannot|can|could|may)\b)"
)


def _skip_list(after_clause: str) -> str:
    # "effusion or pneumothorax is not seen" -> look past the trailing list of nouns for the verb phrase.
    return _LIST_PREFIX.sub("", after_clause, count=1)


def clinical_efficacy_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    labeler: FindingLabeler | None = None,
    uncertain_as_positive: bool = False,
) -> dict[str, float | dict[str, float]]:
    """Clinical-efficacy precision / recall / F1 of generated reports against reference reports.

    Both sides are labelled with `labeler` (default: the 14 CheXpert observations); a finding counts as present when
    labelled positive (and uncertain, with `uncertain_as_positive=True`). Micro scores pool true/false positives and
    false negatives over all reports and findings; macro scores average the per-finding scores over findings that occur
    in the references or predictions; example-based scores average per-report set P/R/F1 (1.0 when both are empty).
    A prediction that says nothing the labeller can read (`FindingLabeler.is_informative`: junk text, tokens, "")
    has no positives, so it earns no "no finding" credit.

    Returns:
        `dict` with `precision`, `recall`, `f1` (micro), `macro_precision`, `macro_recall`, `macro_f1`,
        `example_precision`, `example_recall`, `example_f1`, and `per_finding` (`{name: {precision, recall, f1,
        support}}`).

    Example:
    ```python
    >>> from hf_meddiff.metrics import clinical_efficacy_scores
    >>> scores = clinical_efficacy_scores(
    ...     ["Cardiomegaly. Small left pleural effusion."], ["Cardiomegaly without pleural effusion."]
    ... )
    >>> scores["precision"], scores["recall"], round(scores["f1"], 4)
    (0.5, 1.0, 0.6667)
    ```
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references; they must pair up."
        )
    if len(predictions) == 0:
        raise ValueError("Got no predictions; pass at least one prediction/reference pair.")
    labeler = labeler or FindingLabeler.chexpert()
    names = labeler.names
    tp = dict.fromkeys(names, 0)
    fp = dict.fromkeys(names, 0)
    fn = dict.fromkeys(names, 0)
    example = []
    for prediction, reference in zip(predictions, references):
        informative = labeler.is_informative(prediction)
        pred = labeler.positives(prediction, uncertain_as_positive) if informative else set()
        gold = labeler.positives(reference, uncertain_as_positive)
        for name in pred & gold:
            tp[name] += 1
        for name in pred - gold:
            fp[name] += 1
        for name in gold - pred:
            fn[name] += 1
        example.append(_prf(len(pred & gold), len(pred - gold), len(gold - pred), empty=1.0))
    micro = _prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    per_finding = {}
    for name in names:
        p, r, f = _prf(tp[name], fp[name], fn[name])
        per_finding[name] = {"precision": p, "recall": r, "f1": f, "support": tp[name] + fn[name]}
    active = [n for n in names if tp[n] + fp[n] + fn[n] > 0]
    macro = [
        sum(per_finding[n][k] for n in active) / len(active) if active else 0.0
        for k in ("precision", "recall", "f1")
    ]
    n = len(example)
    return {
        "precision": micro[0],
        "recall": micro[1],
        "f1": micro[2],
        "macro_precision": macro[0],
        "macro_recall": macro[1],
        "macro_f1": macro[2],
        "example_precision": sum(e[0] for e in example) / n,
        "example_recall": sum(e[1] for e in example) / n,
        "example_f1": sum(e[2] for e in example) / n,
        "per_finding": per_finding,
    }


def _prf(tp: int, fp: int, fn: int, empty: float = 0.0) -> tuple[float, float, float]:
    if tp + fp + fn == 0:
        return empty, empty, empty
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
