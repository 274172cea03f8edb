"""Dataset cards and the Hub: render `hub_cards/dataset_card.md`, write Parquet shards, push.

`save_dataset_for_hub(dataset, folder)` writes exactly what `push_dataset_to_hub` uploads - Parquet shards
written by `datasets` (`data/<split>-00000-of-00001.parquet`, image files embedded) and a `README.md`
dataset card whose YAML `configs` point at them - so the folder can be checked, or read back with
`load_dataset(folder)`, before anything leaves the machine. Both refuse a dataset that fails
`check_no_phi`.

Example (offline):

>>> import tempfile
>>> from datasets import load_dataset
>>> from hf_meddiff.data import make_phantom_dataset
>>> from hf_meddiff.data.hub import save_dataset_for_hub
>>> folder = save_dataset_for_hub(make_phantom_dataset(8, image_size=32), tempfile.mkdtemp())
>>> load_dataset(str(folder), split="train").num_rows
8
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from datasets.table import embed_table_storage
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from ..constants import MODALITY_NAMES
from .medical_io import check_no_phi

TEMPLATE_ENV_VAR = "HF_MEDDIFF_DATASET_CARD_TEMPLATE"
DEFAULT_TAGS = ("medical", "hf-meddiff", "visual-question-answering", "report-generation", "grounding")

FIELD_MEANINGS = {
    "id": "unique id within the source",
    "image": "the image (grey-scale `L` or colour `RGB`)",
    "modality": "imaging modality (`ct`, `mri`, `xray`, `ultrasound`, `dermoscopy`, `fundus`, `oct`, `microscopy`)",
    "question": "VQA question (empty for report-only rows)",
    "options": "multiple-choice option texts in letter order A–D (empty for open questions)",
    "answer": "correct option letter, or the answer text for open questions",
    "question_type": "modality / anatomy / diagnosis / grading / location / counting / open",
    "report": "free-text report: `Findings: … Impression: …`",
    "rationale": "grounded step-by-step reasoning citing boxes",
    "boxes": "findings: label + `[x0, y0, x1, y1]` in 0–999",
    "split": "train / validation / test",
    "source": "where the record came from",
    "anatomy": "anatomical region",
    "findings": "finding label per finding",
    "severity": "none / mild / moderate / severe",
    "locations": "image quadrant per finding",
    "num_findings": "number of findings",
    "target": "formatted reasoning target",
    "reasoning_style": "think_before / think_after / no_think",
    "reasoning_source": "annotation / rejection_sampling",
}

PRIVACY_STATEMENT = (
    "No identifying DICOM attribute (patient name or id, birth date, addresses, institution, accession number, "
    "dates, UIDs, …) is copied into the dataset by hf-meddiff's loaders, and every split passed "
    "`hf_meddiff.data.check_no_phi` (column names and values checked for DICOM-style PHI) before this card "
    "was written."
)


def dataset_card_template_path() -> Path:
    """`HF_MEDDIFF_DATASET_CARD_TEMPLATE`, else the packaged `hf_meddiff/hub_cards/dataset_card.md`."""
    env = os.environ.get(TEMPLATE_ENV_VAR)
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"{TEMPLATE_ENV_VAR}={env!r} does not point to a file.")
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "hub_cards" / "dataset_card.md"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "Could not find hub_cards/dataset_card.md next to the hf_meddiff sources; pass template_path= or set "
        f"{TEMPLATE_ENV_VAR}."
    )


def _as_dict(dataset: Dataset | DatasetDict) -> DatasetDict:
    if isinstance(dataset, DatasetDict):
        return dataset
    if "split" in dataset.column_names:
        names = list(dict.fromkeys(dataset["split"]))
        if names and all(n in ("train", "validation", "test") for n in names):
            col = dataset["split"]
            return DatasetDict({n: dataset.select([i for i, s in enumerate(col) if s == n]) for n in names})
    return DatasetDict({"train": dataset})


def _type_name(feature: Any) -> str:
    if isinstance(feature, dict):
        return "struct{" + ", ".join(f"{k}: {_type_name(v)}" for k, v in feature.items()) + "}"
    inner = getattr(feature, "feature", None)
    if inner is not None:
        return f"list[{_type_name(inner)}]"
    if type(feature).__name__ == "Image":
        return "image"
    return str(getattr(feature, "dtype", type(feature).__name__))


def _size_category(n: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return name
    return "n>1M"


def _summary(counter: Counter, names: Mapping[str, str] | None = None) -> str:
    if not counter:
        return "—"
    return ", ".join(f"{(names or {}).get(k, k) or 'unknown'} ({v})" for k, v in counter.most_common())


def render_dataset_card(
    dataset: Dataset | DatasetDict,
    *,
    repo_id: str = "your-name/your-dataset",
    pretty_name: str | None = None,
    description: str | None = None,
    license: str = "apache-2.0",
    intended_use: str | None = None,
    limitations: str | None = None,
    citation: str | None = None,
    generator: str | None = None,
    tags: Sequence[str] = (),
    template_path: str | os.PathLike | None = None,
) -> DatasetCard:
    """Render the dataset card (YAML metadata with `configs`, size category, license, tasks; body with size,
    modalities, question types, fields, licence, intended use and privacy statement).

    Splits: a `DatasetDict` as it is, or a `Dataset` split by its `split` column.
    """
    splits = _as_dict(dataset)
    first = next(iter(splits.values()))
    total = sum(len(d) for d in splits.values())
    modalities, qtypes, sources = Counter(), Counter(), Counter()
    for d in splits.values():
        for col, counter in (("modality", modalities), ("question_type", qtypes), ("source", sources)):
            if col in d.column_names:
                counter.update(d[col])
    qtypes.pop("", None)
    synthetic = set(sources) == {"medphantom"}
    pretty_name = pretty_name or ("MedPhantom" if synthetic else repo_id.split("/")[-1])
    if description is None:
        description = (
            "MedPhantom: procedurally generated, multimodal medical-like cases (hf-meddiff). Each image has zero "
            "or more findings with a label, a box and a severity grade; each row carries a four-option question, "
            "a report and a grounded rationale consistent with the image."
            if synthetic
            else f"A medical multimodal dataset in the hf-meddiff canonical schema ({', '.join(sources) or 'unknown source'})."
        )
    card_data = DatasetCardData(
        language="en",
        license=license,
        pretty_name=pretty_name,
        size_categories=_size_category(total),
        task_categories=["visual-question-answering", "image-to-text"],
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *(["synthetic"] if synthetic else []), *tags])),
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"data/{name}-*"} for name in splits],
            }
        ],
    )
    fields = [
        (name, _type_name(feature), FIELD_MEANINGS.get(name, "")) for name, feature in first.features.items()
    ]
    template = Path(template_path) if template_path is not None else dataset_card_template_path()
    return DatasetCard.from_template(
        card_data,
        template_path=str(template),
        pretty_name=pretty_name,
        description=description,
        repo_id=repo_id,
        num_rows=total,
        split_summary=", ".join(f"{k}: {len(v)}" for k, v in splits.items()),
        first_split=next(iter(splits)),
        modality_summary=_summary(modalities, MODALITY_NAMES),
        question_type_summary=_summary(qtypes),
        source_summary=_summary(sources),
        license=license,
        generator=generator,
        fields=fields,
        intended_use=intended_use
        or "Training and evaluating medical multimodal models (VQA, report generation, grounded reasoning, "
        "report-to-image generation) in research, and testing such pipelines end to end.",
        synthetic=synthetic,
        privacy_statement=PRIVACY_STATEMENT,
        limitations=limitations
        or (
            "Procedural phantoms are far simpler than real images; scores on them say little about clinical data."
            if synthetic
            else "Inherits the biases, label noise and licence terms of the source release."
        ),
        citation=citation,
    )


def save_dataset_for_hub(
    dataset: Dataset | DatasetDict,
    folder: str | os.PathLike,
    *,
    card: DatasetCard | None = None,
    max_shard_size: int = 500 * 2**20,
    allow_phi_columns: Sequence[str] = (),
    **card_kwargs: Any,
) -> Path:
    """Check for PHI, then write `data/<split>-XXXXX-of-YYYYY.parquet` (images embedded) and `README.md`."""
    splits = _as_dict(dataset)
    for d in splits.values():
        check_no_phi(d, allow_columns=allow_phi_columns)
    out = Path(folder)
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, d in splits.items():
        embedded = d.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
        num_shards = max(1, math.ceil((embedded.data.nbytes or 1) / max_shard_size))
        for index in range(num_shards):
            shard = embedded.shard(num_shards=num_shards, index=index, contiguous=True)
            shard.to_parquet(str(out / "data" / f"{name}-{index:05d}-of-{num_shards:05d}.parquet"))
    card = card or render_dataset_card(splits, **card_kwargs)
    card.save(out / "README.md")
    return out


def push_dataset_to_hub(
    dataset: Dataset | DatasetDict,
    repo_id: str,
    *,
    card: DatasetCard | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload dataset with hf-meddiff",
    create_pr: bool = False,
    allow_phi_columns: Sequence[str] = (),
    api: HfApi | None = None,
    **card_kwargs: Any,
) -> Any:
    """Refuse PHI (`check_no_phi`), write the Parquet shards and card (`save_dataset_for_hub`), then create
    the dataset repo and upload the folder with `huggingface_hub.HfApi`. Returns the commit info.

    Card options (`pretty_name`, `license`, `description`, `citation`, ...) go to `render_dataset_card`.
    """
    api = api or HfApi(token=token)
    card_kwargs.setdefault("repo_id", repo_id)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_dataset_for_hub(
            dataset, tmp, card=card, allow_phi_columns=allow_phi_columns, **card_kwargs
        )
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )
