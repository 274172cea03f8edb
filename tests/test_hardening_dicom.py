"""Real DICOM from real scanners: every file with pixel data in pydicom's own test files and in the `pydicom-data`
package decodes through MedDiffImageProcessor or fails with a clear error naming the file and the reason; VOI LUT
sequences and per-frame windows are applied; broken headers get clear errors, never AttributeError.

The corpus is read from the installed packages' folders only (never downloaded). Counts for the closing note:
`python -m pytest -q -s tests/test_hardening_dicom.py -k corpus`.
"""

import copy
import glob
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from hf_meddiff.models.meddiff.image_processing_meddiff import (
    ImageDecodeError,
    MedDiffImageProcessor,
    apply_window,
    dicom_to_array,
)

PYDICOM_TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _pydicom_data_dir() -> str | None:
    try:
        import data_store  # the pydicom-data package
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(data_store.__file__), "data")
    return path if os.path.isdir(path) else None


def _files_with_pixel_data(root: str) -> list[str]:
    found = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        if not os.path.isfile(path) or path.endswith(
            (".py", ".pyc", ".json", ".txt", ".dump", ".icc", ".gz")
        ):
            continue
        try:
            ds = pydicom.dcmread(path, force=True, defer_size="1 KB")
        except Exception:  # noqa: BLE001 - not DICOM at all: not part of the corpus
            continue
        if any(key in ds for key in _PIXEL_KEYWORDS):
            found.append(path)
    return found


def _run_corpus(files: list[str]) -> dict:
    """Decode each file through MedDiffImageProcessor; sort the outcomes into decoded / clear error / crash."""
    processor = MedDiffImageProcessor(size=32)
    outcome = {"decoded": [], "clear": [], "crash": []}
    for path in files:
        base = os.path.basename(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pixels = processor([path])["pixel_values"]
        except (ImageDecodeError, RuntimeError, ImportError) as err:
            kind = "clear" if base in str(err) and "Traceback" not in str(err) else "crash"
            outcome[kind].append(f"{base}: {type(err).__name__}: {str(err)[:300]}")
            continue
        except Exception as err:  # noqa: BLE001 - anything else is a crash by definition
            outcome["crash"].append(f"{base}: {type(err).__name__}: {str(err)[:300]}")
            continue
        if pixels.shape != (1, 3, 32, 32) or not bool(pixels.isfinite().all()) or pixels.abs().max() > 1:
            outcome["crash"].append(
                f"{base}: bad output {tuple(pixels.shape)} in [{pixels.min()}, {pixels.max()}]"
            )
        else:
            outcome["decoded"].append(base)
    return outcome


def _report(label: str, outcome: dict, seconds: float) -> str:
    counts = {k: len(v) for k, v in outcome.items()}
    lines = [
        f"DICOM corpus {label}: {sum(counts.values())} files with pixel data: decoded {counts['decoded']} / "
        f"clear error {counts['clear']} / crash {counts['crash']} ({seconds:.1f} s)"
    ]
    lines += [f"  clear error: {line}" for line in outcome["clear"]]
    lines += [f"  CRASH: {line}" for line in outcome["crash"]]
    return "\n".join(lines)


def test_corpus_pydicom_test_files_decode_or_fail_clearly():
    files = _files_with_pixel_data(PYDICOM_TEST_FILES)
    assert len(files) >= 90  # pydicom 3.0 ships 95 files with pixel data
    start = time.perf_counter()
    outcome = _run_corpus(files)
    report = _report("pydicom test files", outcome, time.perf_counter() - start)
    print(report)
    assert not outcome["crash"], report
    assert len(outcome["decoded"]) >= 0.9 * len(files), report


def test_corpus_pydicom_data_package_decodes_or_fails_clearly():
    root = _pydicom_data_dir()
    if root is None:
        pytest.skip("pydicom-data is not installed (pip install pydicom-data; it is in the test extra)")
    files = _files_with_pixel_data(root)
    assert len(files) >= 60  # 68 files in pydicom-data 1.0.0
    start = time.perf_counter()
    outcome = _run_corpus(files)
    report = _report("pydicom-data", outcome, time.perf_counter() - start)
    print(report)
    assert not outcome["crash"], report
    assert len(outcome["decoded"]) >= 0.9 * len(files), report


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline (libjpeg or Pillow)
        "JPEGLSNearLossless_08.dcm",  # JPEG-LS (pylibjpeg-libjpeg)
        "MR_small_jp2klossless.dcm",  # JPEG 2000 (pylibjpeg-openjpeg)
        "MR_small_RLE.dcm",  # RLE lossless (pylibjpeg-rle or pydicom's own)
        "JPEG-LL.dcm",  # JPEG lossless process 14 (pylibjpeg-libjpeg)
    ],
)
def test_compressed_transfer_syntaxes_decode_with_the_medical_extra(name):
    pytest.importorskip("libjpeg", reason="pylibjpeg-libjpeg (hf-meddiff[medical]) is not installed")
    pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg (hf-meddiff[medical]) is not installed")
    out = dicom_to_array(get_testdata_file(name))
    assert out.dtype == np.float32 and np.isfinite(out).all() and out.std() > 0.01


# --- VOI LUT sequences and per-frame windows ----------------------------------------------------------------
def test_a_voi_lut_sequence_is_applied():
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = get_testdata_file("vlut_04.dcm")
    ds = pydicom.dcmread(path)
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    expected = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds) / (2**bits - 1)
    np.testing.assert_allclose(dicom_to_array(path), expected, atol=1e-6)


def test_a_synthetic_voi_lut_overrides_min_max_and_a_window_argument_overrides_the_lut():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for key in ("WindowCenter", "WindowWidth"):
        if key in ds:
            del ds[key]
    item = pydicom.Dataset()
    item.LUTDescriptor = [2, 0, 8]  # two entries from stored value 0: a threshold LUT
    item.LUTData = [0, 255]
    ds.VOILUTSequence = pydicom.Sequence([item])
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = dicom_to_array(ds)
    np.testing.assert_array_equal(out, (np.round(hu) >= 1).astype(np.float32))
    np.testing.assert_allclose(dicom_to_array(ds, window=(40, 400)), apply_window(hu, 40, 400), atol=1e-6)


def test_shared_functional_group_window_and_rescale_apply_to_every_frame():
    path = get_testdata_file("eCT_Supplemental.dcm")  # enhanced CT: window 49/102, intercept -1024 (shared)
    ds = pydicom.dcmread(path)
    for frame in (0, 1):
        hu = ds.pixel_array[frame].astype(np.float64) - 1024.0
        np.testing.assert_allclose(
            dicom_to_array(path, frame=frame), apply_window(hu, 49.0, 102.0), atol=1e-6
        )


def test_per_frame_windows_win_over_the_shared_one():
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    windows = [(0.0, 2000.0), (300.0, 50.0)]
    for group, (center, width) in zip(ds.PerFrameFunctionalGroupsSequence, windows):
        voi = pydicom.Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        group.FrameVOILUTSequence = pydicom.Sequence([voi])
    frames = ds.pixel_array
    for frame, (center, width) in enumerate(windows):
        hu = frames[frame].astype(np.float64) - 1024.0
        np.testing.assert_allclose(
            dicom_to_array(ds, frame=frame), apply_window(hu, center, width), atol=1e-6
        )


def test_sigmoid_voi_lut_function():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 400, "SIGMOID"
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(dicom_to_array(ds), 1 / (1 + np.exp(-4 * (hu - 40) / 400)), atol=1e-6)


# --- broken headers: clear errors, never AttributeError -----------------------------------------------------
def test_missing_transfer_syntax_is_inferred_for_native_pixel_data():
    out = dicom_to_array(get_testdata_file("OT-PAL-8-face.dcm"))  # no file meta at all, palette colour
    assert out.shape == (480, 640, 3) and out.std() > 0.05


def test_missing_transfer_syntax_with_compressed_pixel_data_is_a_clear_error(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    del ds.file_meta["TransferSyntaxUID"]
    with pytest.raises(
        ImageDecodeError, match=r"compressed \(encapsulated\).*no \(0002,0010\) Transfer Syntax UID"
    ):
        dicom_to_array(ds)


@pytest.mark.parametrize("keyword", ["BitsAllocated", "Rows", "PhotometricInterpretation"])
def test_a_missing_pixel_module_element_is_named(tmp_path, keyword):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds[keyword]
    path = tmp_path / f"no_{keyword}.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageDecodeError, match=rf"no_{keyword}\.dcm: .*lacks .*{keyword}"):
        dicom_to_array(str(path))


def test_a_header_that_promises_more_rows_than_the_file_holds(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Rows * 4
    path = tmp_path / "short.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(
        ImageDecodeError, match=r"short\.dcm: could not decode the pixel data .*less than expected"
    ):
        MedDiffImageProcessor(size=32)([str(path)])


def test_a_dicom_decompression_bomb_names_the_pixel_count_and_the_fix(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns = 60000, 60000
    with pytest.raises(
        ImageDecodeError, match=r"3,600,000,000 pixels .*PIL\.Image\.MAX_IMAGE_PIXELS = 3600000000"
    ):
        dicom_to_array(ds)


def test_a_truncated_dicom_file_is_named(tmp_path):
    data = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\.dcm"):
        MedDiffImageProcessor(size=32)([str(path)])


def test_a_frame_out_of_range_and_a_user_dataset_is_not_modified():
    ds = pydicom.dcmread(get_testdata_file("OT-PAL-8-face.dcm"), force=True)
    before = copy.deepcopy(ds.file_meta)
    dicom_to_array(ds)
    assert ds.file_meta == before  # the inferred transfer syntax lives on a copy
    with pytest.raises(IndexError, match="single-frame"):
        dicom_to_array(ds, frame=3)
