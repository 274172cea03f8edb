"""PMC-VQA, versions 1 and 2: the release CSVs (`pmc_vqa_files` finds them) and their image folders."""

from __future__ import annotations

import logging
import os
import re

from .common import (
    Collector,
    Skip,
    canonical_row,
    check_root,
    clean_text,
    hub_image_value,
    hub_rows,
    image_value,
    infer_question_type,
    is_hub_id,
    mc_row_fields,
    normalize_modality,
    normalize_split,
    read_csv,
    required_field,
)

logger = logging.getLogger(__name__)


_PMC_CHOICES = ["Choice A", "Choice B", "Choice C", "Choice D"]
# release files by version and split, in the order they are looked for (the README spells version 2 without "_")
PMC_VQA_FILES: dict[int, dict[str, tuple[str, ...]]] = {
    1: {"train": ("train.csv",), "test": ("test.csv",)},
    2: {"train": ("train_2.csv", "train2.csv"), "test": ("test_2.csv", "test2.csv")},
}
PMC_VQA_TEST_CLEAN = "test_clean.csv"
PMC_VQA_IMAGE_DIRS: dict[int, tuple[str, ...]] = {1: ("images",), 2: ("images_2", "images2", "images")}


def pmc_vqa_files(
    root: str, version: int | None = None, test_clean: bool = False
) -> tuple[int, dict[str, str]]:
    """(version, {split: CSV file name}) of a local PMC-VQA release, from the files `root` holds.

    Version 1 is `train.csv` -> train and `test.csv` -> test, or `test_clean.csv` -> test with `test_clean=True`
    (the manually checked test subset). Version 2 (non-compound images) is `train_2.csv` -> train and `test_2.csv`
    -> test (`train2.csv` / `test2.csv` also found). `version=None` picks the version whose files are there,
    version 1 when both are. Splits whose file is absent are left out; nothing found raises `FileNotFoundError`
    naming the folder and every file name looked for.
    """
    if version not in (None, 1, 2):
        raise ValueError(
            f"load_pmc_vqa: version must be 1, 2 or None (whichever the folder holds), got {version!r}."
        )
    if test_clean and version == 2:
        raise ValueError(
            "load_pmc_vqa: test_clean.csv belongs to version 1; drop test_clean or use version=1."
        )

    def candidates(v: int) -> dict[str, tuple[str, ...]]:
        names = dict(PMC_VQA_FILES[v])
        if v == 1 and test_clean:
            names["test"] = (PMC_VQA_TEST_CLEAN,)
        return names

    def found(v: int) -> dict[str, str]:
        return {
            split: next(name for name in names if os.path.isfile(os.path.join(root, name)))
            for split, names in candidates(v).items()
            if any(os.path.isfile(os.path.join(root, name)) for name in names)
        }

    versions = [version] if version is not None else ([1] if test_clean else [1, 2])
    for v in versions:
        files = found(v)
        if files:
            if version is None and v == 1 and found(2):
                logger.info(
                    "load_pmc_vqa: %s holds versions 1 and 2; reading version 1 (pass version=2).", root
                )
            return v, files
    looked_for = [name for v in versions for names in candidates(v).values() for name in names]
    present = sorted(os.listdir(root))
    hint = (
        f" It holds {PMC_VQA_TEST_CLEAN}: pass test_clean=True to read it as the test split."
        if PMC_VQA_TEST_CLEAN in present and not test_clean
        else ""
    )
    raise FileNotFoundError(
        f"load_pmc_vqa: no PMC-VQA CSV in {root!r}; looked for {', '.join(looked_for)}"
        f"{'' if test_clean or versions == [2] else f' ({PMC_VQA_TEST_CLEAN} with test_clean=True)'}. The folder holds "
        f"{present[:20]}{' ...' if len(present) > 20 else ''}.{hint} Unpack the release there, or name the files "
        "with files={'train': 'train.csv', 'test': 'test.csv'}."
    )


def load_pmc_vqa(
    root: str,
    split: str | None = None,
    *,
    version: int | None = None,
    test_clean: bool = False,
    files: dict[str, str] | None = None,
    image_dir: str | None = None,
    on_error: str = "raise",
    return_report: bool = False,
):
    """PMC-VQA: CSVs (columns Figure_path, Question, Answer, Choice A..D, Answer_label) with images in a folder.

    Which CSV is which split (see `pmc_vqa_files`): version 1 `train.csv` -> train, `test.csv` -> test
    (`test_clean=True`: `test_clean.csv` -> test), images in `images/`; version 2 `train_2.csv` -> train,
    `test_2.csv` -> test, images in `images_2/` (else `images/`). `version=None` reads the version the folder
    holds (1 when both). `files` replaces the mapping (e.g. `{"test": "test_2.csv"}`; version and test_clean are
    then unused) and `image_dir` the image folder. A requested `split` whose file is absent raises, naming it.

    Choices lose their "A:" prefix. The modality is guessed from modality words in the question and choices (""
    when none, counted as `modality_unknown`); the question type likewise. Row ids are
    `pmc_vqa-<file name without .csv>-<index>`.
    """
    c = Collector("pmc_vqa", on_error)
    if is_hub_id(root):
        pairs = [(s, rec, root, i, None) for i, (s, rec) in enumerate(hub_rows(root, split))]
    else:
        root = check_root(root, "load_pmc_vqa")
        if files is None:
            version, files = pmc_vqa_files(root, version, test_clean)
            if split is not None and normalize_split(split) not in files:
                wanted = PMC_VQA_FILES[version].get(normalize_split(split), ())
                if version == 1 and test_clean and normalize_split(split) == "test":
                    wanted = (PMC_VQA_TEST_CLEAN,)
                raise FileNotFoundError(
                    f"load_pmc_vqa: split {split!r} of version {version} needs {' or '.join(wanted) or 'a file'} "
                    f"in {root!r}, which is not there; it holds {sorted(files.values())}."
                )
        if image_dir is None:
            dirs = PMC_VQA_IMAGE_DIRS[version or 1]
            image_dir = next((d for d in dirs if os.path.isdir(os.path.join(root, d))), dirs[0])
        pairs = []
        for split_name, name in files.items():
            if split is not None and normalize_split(split) != split_name:
                continue
            path = os.path.join(root, name)
            try:
                rows = read_csv(c, path, ["Figure_path", "Question", *_PMC_CHOICES])
            except Skip:
                continue
            pairs += [
                (split_name, rec, path, i + 2, root) for i, rec in enumerate(rows)
            ]  # +2: header, 1-based
    for split_name, rec, path, line, local_root in pairs:
        try:
            question = clean_text(required_field(c, rec, "Question", path, line))
            clean = {k: re.sub(r"^\s*[A-D]\s*[:.)]\s*", "", str(rec.get(k) or "")) for k in _PMC_CHOICES}
            answer_key = "Answer_label" if rec.get("Answer_label") else "Answer"
            merged = {
                **rec,
                **clean,
                answer_key: re.sub(r"^\s*([A-D])\s*[:.)].*$", r"\1", str(rec.get(answer_key) or "")),
            }
            options, letter = mc_row_fields(c, merged, path, line, _PMC_CHOICES, answer_key)
            if local_root is None:
                image = hub_image_value(rec["image"])
            else:
                figure = required_field(c, rec, "Figure_path", path, line)
                image = image_value(c, os.path.join(local_root, image_dir, figure), path, line, "Figure_path")
            modality = normalize_modality(question + " " + " ".join(options)) or ""
            if not modality:
                c.report.notes["modality_unknown"] += 1
            c.rows.append(
                canonical_row(
                    id=f"pmc_vqa-{_pmc_file_stem(path, split_name)}-{rec.get('index') or line}",
                    image=image,
                    modality=modality,
                    question=question,
                    options=options,
                    answer=letter,
                    question_type=infer_question_type(question),
                    split=split_name,
                    source="pmc_vqa",
                )
            )
        except Skip:
            continue
    return c.finish(return_report)


def _pmc_file_stem(path: str, split_name: str) -> str:
    name = os.path.basename(str(path))
    return name[: -len(".csv")] if name.endswith(".csv") else split_name
