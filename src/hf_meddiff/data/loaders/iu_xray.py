"""IU X-Ray and MIMIC-CXR in R2Gen's layout (`annotation.json`: `{"train"|"val"|"test": [{id, report,
image_path: [...], split}]}`, images under `images/`): report-generation rows, modality "xray", anatomy "chest".
MIMIC's `subject_id` / `study_id` are never copied."""

from __future__ import annotations

import logging
import os

from .common import (
    Collector,
    Skip,
    canonical_row,
    check_root,
    clean_text,
    hub_image_value,
    hub_rows,
    image_value,
    is_hub_id,
    normalize_split,
    read_json,
    required_field,
)

logger = logging.getLogger(__name__)


def _load_r2gen(root, source, split, images, on_error, return_report, image_dir):
    c = Collector(source, on_error)
    if images not in ("first", "each"):
        raise ValueError(f"images must be 'first' or 'each', got {images!r}.")
    if is_hub_id(root):
        for split_name, rec in hub_rows(root, split):
            try:
                report = clean_text(required_field(c, rec, "report", root, rec.get("id"), allow_empty=False))
                image = rec.get("image") or (rec.get("images") or [None])[0]
                if image is None:
                    c.fail("missing_field", root, rec.get("id"), "image", "the Hub row has no image")
                    raise Skip
                c.rows.append(
                    canonical_row(
                        id=str(rec.get("id", len(c.rows))),
                        image=hub_image_value(image),
                        modality="xray",
                        report=report,
                        split=split_name,
                        source=source,
                        anatomy="chest",
                    )
                )
            except Skip:
                pass
        return c.finish(return_report)
    root = check_root(root, f"load_{source}")
    path = os.path.join(root, "annotation.json")
    try:
        data = read_json(c, path)
    except Skip:
        return c.finish(return_report)
    if not isinstance(data, dict):
        c.fail(
            "unparsable_file",
            path,
            None,
            None,
            "expected an object {'train': [...], 'val': [...], 'test': [...]}",
        )
        return c.finish(return_report)
    wanted = (
        None
        if split is None
        else {normalize_split(s) for s in ([split] if isinstance(split, str) else split)}
    )
    for key, records in data.items():
        split_name = normalize_split(key)
        if wanted is not None and split_name not in wanted:
            continue
        for i, rec in enumerate(records):
            where = f"{key}[{i}]"
            try:
                rid = str(required_field(c, rec, "id", path, where))
                report = clean_text(required_field(c, rec, "report", path, where))
                paths = required_field(c, rec, "image_path", path, where)
                paths = [paths] if isinstance(paths, str) else list(paths)
                chosen = paths[:1] if images == "first" else paths
                values = [
                    image_value(c, os.path.join(root, image_dir, p), path, where, "image_path")
                    for p in chosen
                ]
                for k, value in enumerate(values):
                    c.rows.append(
                        canonical_row(
                            id=rid if images == "first" else f"{rid}/{k}",
                            image=value,
                            modality="xray",
                            report=report,
                            split=split_name,
                            source=source,
                            anatomy="chest",
                        )
                    )
            except Skip:
                continue
    return c.finish(return_report)


def load_iu_xray(
    root: str,
    split: str | list[str] | None = None,
    *,
    images: str = "first",
    image_dir: str = "images",
    on_error: str = "raise",
    return_report: bool = False,
):
    """IU X-Ray in R2Gen's layout: `root/annotation.json` and `root/images/<id>/0.png`.

    Args:
        root: local folder of the release (or a Hub id).
        split: "train", "validation"/"val", "test", a list of them, or None for all.
        images: "first" (one row per study, the first view) or "each" (one row per image, id "<id>/<k>").
        image_dir: folder of the images, relative to `root`.
        on_error: "raise" or "skip" (see the module docstring).
        return_report: also return the `LoadReport`.

    Returns:
        A canonical `Dataset`: report-generation rows (question/options/answer empty), modality "xray".
    """
    return _load_r2gen(root, "iu_xray", split, images, on_error, return_report, image_dir)


def load_mimic_cxr(
    root: str,
    split: str | list[str] | None = None,
    *,
    images: str = "first",
    image_dir: str = "images",
    on_error: str = "raise",
    return_report: bool = False,
):
    """MIMIC-CXR in R2Gen's layout: `root/annotation.json` and `root/images/p10/p1000.../s5.../<dicom_id>.jpg`.

    Same arguments and output as `load_iu_xray`. The identifiers `subject_id` and `study_id` in the
    annotation are not copied into the dataset.
    """
    return _load_r2gen(root, "mimic_cxr", split, images, on_error, return_report, image_dir)
