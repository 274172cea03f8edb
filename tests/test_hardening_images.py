"""Images are checked where they enter: loaders decode each image at load time (a truncated or fake image is named
with its file and row, or skipped and counted), and the image processor turns every bad input (decompression bombs,
headers that promise more rows than the file holds, NaN / inf / complex / object arrays) into a clear error that
names the input. A relative local folder that does not exist is reported as missing, not tried on the Hub."""

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from hf_meddiff.data import DataFormatError, get_load_report, load_iu_xray, load_vqa_rad
from hf_meddiff.data.medical_io import load_medical_folder
from hf_meddiff.models.meddiff.image_processing_meddiff import (
    ImageDecodeError,
    MedDiffImageProcessor,
    images_to_tensor,
)
from hf_meddiff.models.meddiff.medical_image_meddiff import verify_image


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png(width: int, height: int, rows_present: int | None = None) -> bytes:
    """A grey 8-bit PNG whose header says width x height but whose data holds `rows_present` rows."""
    rows = height if rows_present is None else rows_present
    raw = b"".join(b"\x00" + bytes((x * 7 + y) % 256 for x in range(width)) for y in range(rows))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _jpeg(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.effect_noise(size, 60).convert("L").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


BAD_FILES = {
    "truncated.png": _png(64, 64)[:300],
    "short_rows.png": _png(64, 64, rows_present=10),  # the header promises 64 rows, the data holds 10
    "truncated.jpg": _jpeg()[:-400],
    "fake.jpg": b"<html>not an image</html>",
    "empty.png": b"",
    "bomb.png": _png(40000, 40000, rows_present=1),  # 1.6e9 pixels promised by a few hundred bytes
}


def _iu_xray_with(root, bad_name: str, data: bytes):
    images = root / "images"
    images.mkdir(parents=True)
    PIL.Image.effect_noise((40, 40), 30).convert("L").save(images / "good.png")
    (images / bad_name).write_bytes(data)
    annotation = {
        "train": [
            {"id": "ok", "report": "Clear lungs.", "image_path": ["good.png"]},
            {"id": "bad", "report": "Clear lungs.", "image_path": [bad_name]},
        ]
    }
    (root / "annotation.json").write_text(json.dumps(annotation))
    return root


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_image_is_named_at_load_time_with_file_and_row(tmp_path, name):
    root = _iu_xray_with(tmp_path / "iu", name, BAD_FILES[name])
    with pytest.raises(
        DataFormatError, match=rf"annotation\.json, row train\[1\], field 'image_path': .*{name}"
    ):
        load_iu_xray(str(root))


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_image_is_skipped_and_counted(tmp_path, name):
    root = _iu_xray_with(tmp_path / "iu", name, BAD_FILES[name])
    ds, report = load_iu_xray(str(root), on_error="skip", return_report=True)
    assert len(ds) == 1 and ds[0]["id"] == "ok"
    assert report.skipped == {"unreadable_image": 1}
    assert get_load_report(ds).skipped == {"unreadable_image": 1}
    assert name in report.examples[0]


def test_a_shared_bad_image_counts_once_per_row(tmp_path):
    root = tmp_path / "vqa_rad"
    (root / "VQA_RAD Image Folder").mkdir(parents=True)
    (root / "VQA_RAD Image Folder" / "synpic1.jpg").write_bytes(BAD_FILES["truncated.jpg"])
    records = [
        {
            "qid": i,
            "image_name": "synpic1.jpg",
            "question": "Is this a CT?",
            "answer": "yes",
            "phrase_type": "freeform",
        }
        for i in range(3)
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    _, report = load_vqa_rad(str(root), on_error="skip", return_report=True)
    assert report.skipped == {"unreadable_image": 3}


def test_decompression_bomb_names_the_pixel_count_and_how_to_allow_it(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(BAD_FILES["bomb.png"])
    with pytest.raises(ImageDecodeError, match=r"bomb\.png: the image has 1,600,000,000 pixels") as err:
        MedDiffImageProcessor(size=32)([str(path)])
    assert "PIL.Image.MAX_IMAGE_PIXELS = 1600000000" in str(err.value)


def test_the_pixel_limit_is_the_one_pil_knob(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(_png(100, 100))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageDecodeError, match=r"10,000 pixels .*, more than the limit of 5,000"):
        verify_image(str(path))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 20000)
    assert verify_image(str(path)) == (100, 100)


@pytest.mark.parametrize(
    "name", ["truncated.png", "short_rows.png", "truncated.jpg", "fake.jpg", "empty.png"]
)
def test_bad_image_bytes_are_named_by_the_processor(name):
    with pytest.raises(ImageDecodeError, match=rf"{name}"):
        MedDiffImageProcessor(size=32)([{"bytes": BAD_FILES[name], "path": name}])


BAD_ARRAYS = {
    "all_nan": (np.full((8, 8), np.nan), r"images\[0\]: every value of the image .* is NaN or infinite"),
    "all_inf": (np.full((8, 8), np.inf, dtype=np.float32), r"images\[0\]: every value .* NaN or infinite"),
    "complex": (np.ones((8, 8), dtype=np.complex64), r"images\[0\]: the image array holds complex numbers"),
    "object": (np.array([[1, None], [2, 3]], dtype=object), r"images\[0\]: the image array has dtype object"),
    "strings": (np.array([["a", "b"], ["c", "d"]]), r"images\[0\]: the image array has dtype <U1"),
    "complex_tensor": (
        torch.ones(8, 8, dtype=torch.complex64),
        r"images\[0\]: the image array holds complex",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_ARRAYS))
def test_bad_arrays_are_clear_errors_naming_the_input(kind):
    array, pattern = BAD_ARRAYS[kind]
    with pytest.raises(ImageDecodeError, match=pattern):
        MedDiffImageProcessor(size=16)([array])
    with pytest.raises(ImageDecodeError, match=pattern):
        images_to_tensor([array], 16)


def test_some_nan_values_warn_and_show_as_the_lowest_value():
    array = np.linspace(0, 100, 64).reshape(8, 8)
    array[0, :3] = np.nan
    array[1, 0] = np.inf
    with pytest.warns(UserWarning, match=r"images\[0\]: 4 of 64 values are NaN or infinite"):
        pixels = MedDiffImageProcessor(size=8)([array])["pixel_values"]
    assert torch.isfinite(pixels).all()
    assert pixels[0, 0, 0, 0] == -1.0 and pixels[0, 0, 1, 0] == 1.0  # NaN -> lowest, +inf -> highest


def test_a_truncated_nifti_file_is_named(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    source = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
    data = Path(source).read_bytes()
    path = tmp_path / "cut.nii"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageDecodeError, match=r"cut\.nii: cannot read the voxels of the slice"):
        MedDiffImageProcessor(size=32)([str(path)])


def test_load_medical_folder_counts_unreadable_files(tmp_path):
    PIL.Image.effect_noise((32, 32), 30).convert("L").save(tmp_path / "good.png")
    (tmp_path / "cut.png").write_bytes(BAD_FILES["truncated.png"])
    ds, report = load_medical_folder(str(tmp_path), modality="xray", on_error="skip", return_report=True)
    assert len(ds) == 1 and report.skipped == {"unreadable_image": 1}


# --- a missing relative folder is not tried on the Hub --------------------------------------------------------
def test_a_missing_relative_folder_is_reported_as_missing(tmp_path, monkeypatch):
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub must not be tried for a local path")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"root folder 'data/vqa_rad' does not exist .*looked for /"):
        load_vqa_rad("data/vqa_rad")
    with pytest.raises(FileNotFoundError, match=r"root folder './vqa_rad' does not exist"):
        load_vqa_rad("./vqa_rad")


def test_an_unreachable_hub_id_says_it_is_neither_local_nor_on_the_hub(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"'someone/vqa_rad' is not a local folder .*Hub dataset id failed"
    ):
        load_vqa_rad("someone/vqa_rad")


@pytest.mark.parametrize("name", ["truncated.jpg", "fake.jpg", "short_rows.png"])
def test_open_image_names_bad_image_values(name):
    from hf_meddiff.data.medical_io import open_image

    with pytest.raises(ImageDecodeError, match=rf"{name}: "):
        open_image({"bytes": BAD_FILES[name], "path": name})
