"""Report-generation metrics: BLEU-1..4, ROUGE-L, CIDEr-D and METEOR, as the COCO caption toolkit computes them.

The implementations are our own and agree with `pycocoevalcap` 1.2 to within 1e-6 on the same inputs (lower-cased,
whitespace-tokenised strings): corpus-level BLEU with the "closest" reference length and coco's tiny/small smoothing
constants, ROUGE-L (LCS F-measure with beta = 1.2, best precision and best recall over the references), and CIDEr-D
(tf-idf n-gram vectors with document frequencies over the evaluated references, clipping, a Gaussian length penalty
with sigma = 6 and the x10 scale). METEOR runs the `meteor-1.5.jar` shipped inside `pycocoevalcap` when both that
package and a `java` executable are present; otherwise it is left out with a note.

>>> scores = report_generation_scores(["the heart is normal"], ["the heart is normal in size"], meteor=False)
>>> round(scores["bleu_1"], 4), round(scores["rouge_l"], 4)
(0.6065, 0.7722)
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import warnings
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "bleu_scores",
    "cider_score",
    "meteor_available",
    "meteor_score",
    "normalize_report",
    "report_generation_scores",
    "rouge_l_score",
]

_PUNCT = re.compile(r"[^\w\s]|_")


def normalize_report(text: str, r2gen: bool = False, max_words: int | None = None) -> str:
    """Lower-case and whitespace-tokenise a report (tokens joined by single spaces).

    With `r2gen=True` this reproduces R2Gen's cleaning for IU X-Ray / MIMIC-CXR: lower-case, drop punctuation, collapse
    whitespace; `max_words` then truncates to that many words (R2Gen uses `max_seq_length` 60 / 100).

    >>> normalize_report("  The Heart  is normal. ")
    'the heart is normal.'
    >>> normalize_report("The heart, lungs: clear.", r2gen=True, max_words=3)
    'the heart lungs'
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text.lower()
    if r2gen:
        text = _PUNCT.sub(" ", text.replace("..", "."))
    words = text.split()
    if max_words is not None:
        words = words[:max_words]
    return " ".join(words)


def _ngrams(words: Sequence[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _check_pairs(predictions: Sequence, references: Sequence) -> list[list[str]]:
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references; pass one reference (or a list of "
            "references) per prediction."
        )
    if len(predictions) == 0:
        raise ValueError("Got no predictions; pass at least one prediction/reference pair.")
    refs = []
    for i, ref in enumerate(references):
        ref_list = [ref] if isinstance(ref, str) else list(ref)
        if not ref_list:
            raise ValueError(f"Reference {i} is an empty list; give each prediction at least one reference.")
        refs.append(ref_list)
    return refs


def bleu_scores(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], max_order: int = 4
) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..`max_order` and per-sentence BLEU, as coco's `Bleu(4)` with `option="closest"` computes them.

    Inputs are already-normalised strings (see `normalize_report`); tokens are `str.split()`.

    Returns:
        `(corpus, per_sentence)`: `corpus[k]` is BLEU-(k+1); `per_sentence[k][i]` is BLEU-(k+1) of prediction i.
    """
    refs = _check_pairs(predictions, references)
    tiny, small = 1e-15, 1e-9
    total_guess, total_correct = [0] * max_order, [0] * max_order
    total_test, total_ref = 0, 0
    per_sentence: list[list[float]] = [[] for _ in range(max_order)]
    for hyp, ref_list in zip(predictions, refs):
        hyp_words = hyp.split()
        max_ref_counts: Counter = Counter()
        ref_lens = []
        for ref in ref_list:
            words = ref.split()
            ref_lens.append(len(words))
            for gram, count in _ngrams(words, max_order).items():
                max_ref_counts[gram] = max(max_ref_counts[gram], count)
        test_len = len(hyp_words)
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]
        guess = [max(0, test_len - k) for k in range(max_order)]
        correct = [0] * max_order
        for gram, count in _ngrams(hyp_words, max_order).items():
            correct[len(gram) - 1] += min(max_ref_counts.get(gram, 0), count)
        total_test += test_len
        total_ref += ref_len
        product = 1.0
        for k in range(max_order):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
            product *= (correct[k] + tiny) / (guess[k] + small)
            per_sentence[k].append(product ** (1.0 / (k + 1)))
        ratio = (test_len + tiny) / (ref_len + small)
        if ratio < 1:
            for k in range(max_order):
                per_sentence[k][-1] *= math.exp(1 - 1 / ratio)
    corpus = []
    product = 1.0
    for k in range(max_order):
        product *= (total_correct[k] + tiny) / (total_guess[k] + small)
        corpus.append(product ** (1.0 / (k + 1)))
    ratio = (total_test + tiny) / (total_ref + small)
    if ratio < 1:
        corpus = [value * math.exp(1 - 1 / ratio) for value in corpus]
    return corpus, per_sentence


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            current[j] = previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


def rouge_l_score(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], beta: float = 1.2
) -> tuple[float, list[float]]:
    """ROUGE-L F-measure (coco: best precision and best recall over the references, `beta` = 1.2).

    Returns `(mean, per_sentence)`. Tokens are `str.split(" ")`, as coco does.
    """
    refs = _check_pairs(predictions, references)
    scores = []
    for hyp, ref_list in zip(predictions, refs):
        hyp_tokens = hyp.split(" ")
        precisions, recalls = [], []
        for ref in ref_list:
            ref_tokens = ref.split(" ")
            lcs = _lcs_length(ref_tokens, hyp_tokens)
            precisions.append(lcs / len(hyp_tokens))
            recalls.append(lcs / len(ref_tokens))
        p, r = max(precisions), max(recalls)
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p != 0 and r != 0 else 0.0)
    return sum(scores) / len(scores), scores


def cider_score(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    max_order: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """CIDEr-D as coco's `Cider()` computes it; document frequencies come from the evaluated references.

    Returns `(mean, per_sentence)`. Note coco's length penalty compares the number of *bigrams* of hypothesis and
    reference; this reproduces it.
    """
    refs = _check_pairs(predictions, references)
    hyp_counts = [_ngrams(hyp.split(), max_order) for hyp in predictions]
    ref_counts = [[_ngrams(ref.split(), max_order) for ref in ref_list] for ref_list in refs]
    doc_freq: Counter = Counter()
    for counts_of_refs in ref_counts:
        for gram in {gram for counts in counts_of_refs for gram in counts}:
            doc_freq[gram] += 1
    log_num_docs = math.log(float(len(ref_counts)))

    def to_vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(max_order)]
        norm = [0.0] * max_order
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            value = float(tf) * (log_num_docs - math.log(max(1.0, doc_freq.get(gram, 0.0))))
            vec[k][gram] = value
            norm[k] += value**2
            if k == 1:
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    scores = []
    for hyp, counts_of_refs in zip(hyp_counts, ref_counts):
        vec, norm, length = to_vector(hyp)
        total = [0.0] * max_order
        for ref in counts_of_refs:
            vec_ref, norm_ref, length_ref = to_vector(ref)
            penalty = math.exp(-(float(length - length_ref) ** 2) / (2 * sigma**2))
            for k in range(max_order):
                value = sum(
                    min(v, vec_ref[k].get(g, 0.0)) * vec_ref[k].get(g, 0.0) for g, v in vec[k].items()
                )
                if norm[k] != 0 and norm_ref[k] != 0:
                    value /= norm[k] * norm_ref[k]
                total[k] += value * penalty
        scores.append(sum(total) / max_order / len(counts_of_refs) * 10.0)
    return sum(scores) / len(scores), scores


def _meteor_jar() -> str | None:
    try:
        spec = importlib.util.find_spec("pycocoevalcap.meteor")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        jar = os.path.join(folder, "meteor-1.5.jar")
        if os.path.isfile(jar):
            return jar
    return None


def meteor_available() -> bool:
    """True when METEOR can run: `java` on PATH and `pycocoevalcap`'s `meteor-1.5.jar` installed."""
    return shutil.which("java") is not None and _meteor_jar() is not None


def meteor_score(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], timeout: float = 300.0
) -> tuple[float, list[float]]:
    """METEOR 1.5 through the jar shipped in `pycocoevalcap` (needs Java), with coco's arguments
    (`-stdio -l en -norm`). Returns `(corpus, per_sentence)`.

    Raises:
        RuntimeError: when Java or the jar is missing (check with `meteor_available()` first).
    """
    refs = _check_pairs(predictions, references)
    jar = _meteor_jar()
    if shutil.which("java") is None or jar is None:
        raise RuntimeError(
            "METEOR needs a `java` executable on PATH and `pip install pycocoevalcap` (which ships meteor-1.5.jar)."
        )
    process = subprocess.Popen(
        ["java", "-jar", "-Xmx2G", os.path.basename(jar), "-", "-", "-stdio", "-l", "en", "-norm"],
        cwd=os.path.dirname(jar),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )

    def ask(line: str) -> str:
        process.stdin.write((line + "\n").encode("utf-8"))
        process.stdin.flush()
        answer = process.stdout.readline().decode("utf-8").strip()
        if not answer:
            raise RuntimeError(f"METEOR jar {jar} stopped answering (input line: {line[:200]!r}).")
        return answer

    try:
        stats = []
        for hyp, ref_list in zip(predictions, refs):
            hyp = hyp.replace("|||", "").replace("  ", " ")
            stats.append(ask(" ||| ".join(("SCORE", " ||| ".join(ref_list), hyp))))
        per_sentence = [float(ask("EVAL ||| " + " ||| ".join(stats)))]
        per_sentence += [float(process.stdout.readline().decode().strip()) for _ in range(len(stats) - 1)]
        corpus = float(process.stdout.readline().decode().strip())
    finally:
        process.stdin.close()
        process.kill()
        process.wait(timeout=timeout)
    return corpus, per_sentence


def report_generation_scores(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    r2gen: bool = False,
    max_words: int | None = None,
    meteor: bool | None = None,
    return_per_sample: bool = False,
) -> dict[str, float | list[float] | str]:
    """BLEU-1..4, ROUGE-L, CIDEr and (when Java is present) METEOR of generated reports against references.

    Args:
        predictions (`list[str]`): generated reports.
        references (`list[str]` or `list[list[str]]`): one reference (or several) per prediction.
        r2gen (`bool`, defaults to `False`): apply R2Gen's cleaning (strip punctuation) on top of lower-casing.
        max_words (`int`, *optional*): truncate every text to this many words (R2Gen: 60 IU X-Ray, 100 MIMIC-CXR).
        meteor (`bool`, *optional*): `True` requires METEOR (error if Java is missing), `False` skips it, `None`
            (default) computes it when available and otherwise adds a `meteor_note`.
        return_per_sample (`bool`): also return `per_sample` scores (`{"bleu_4": [...], ...}`).

    Returns:
        `dict` with `bleu_1` … `bleu_4`, `rouge_l`, `cider`, and `meteor` or `meteor_note`.

    Example:
    ```python
    >>> from hf_meddiff.metrics import report_generation_scores
    >>> scores = report_generation_scores(["no acute findings"], ["no acute findings"], meteor=False)
    >>> round(scores["bleu_1"], 6), scores["rouge_l"]
    (1.0, 1.0)
    ```
    """
    refs = _check_pairs(predictions, references)
    hyps = [normalize_report(p, r2gen=r2gen, max_words=max_words) for p in predictions]
    refs = [[normalize_report(r, r2gen=r2gen, max_words=max_words) for r in ref_list] for ref_list in refs]
    bleu, bleu_each = bleu_scores(hyps, refs)
    rouge, rouge_each = rouge_l_score(hyps, refs)
    cider, cider_each = cider_score(hyps, refs)
    scores: dict = {f"bleu_{k + 1}": float(bleu[k]) for k in range(4)}
    scores.update(rouge_l=float(rouge), cider=float(cider))
    per_sample = {f"bleu_{k + 1}": bleu_each[k] for k in range(4)}
    per_sample.update(rouge_l=rouge_each, cider=cider_each)
    if meteor is None:
        meteor = meteor_available()
        if not meteor:
            scores["meteor_note"] = (
                "METEOR skipped: it needs `java` on PATH and pycocoevalcap's meteor-1.5.jar."
            )
            warnings.warn(scores["meteor_note"], stacklevel=2)
    if meteor:
        scores["meteor"], per_sample["meteor"] = meteor_score(hyps, refs)
    if return_per_sample:
        scores["per_sample"] = per_sample
    return scores
