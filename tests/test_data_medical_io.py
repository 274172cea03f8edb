"""Medical image IO on real files shipped by pydicom and nibabel, and the PHI refusal."""

import json
import os
import shutil

import numpy as np
import pytest
from datasets import Dataset

from hf_meddiff.data import check_no_phi, make_phantom_dataset
from hf_meddiff.data.medical_io import (
    PHIError,
    dicom_to_array,
    load_medical_folder,
    load_medical_image,
    nifti_to_array,
    safe_dicom_metadata,
)

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")
from pydicom.data import get_testdata_file  # noqa: E402

NIFTI = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")


def test_ct_rescale_and_window_presets():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip((hu - (50 - 200)) / 400, 0, 1)  # soft tissue: centre 50, width 400
    got = dicom_to_array(path, window="soft_tissue")
    assert got.shape == (128, 128) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 0.01
    assert not np.allclose(got, dicom_to_array(path, window="bone"))


def test_monochrome1_is_inverted_and_multiframe_frames_differ():
    ds = pydicom.dcmread(get_testdata_file("6278"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    mono1 = dicom_to_array(ds, window=(2000, 4000))
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert np.allclose(mono1, 1.0 - dicom_to_array(ds, window=(2000, 4000)), atol=1e-6)
    dose = get_testdata_file("rtdose.dcm")
    first, later = dicom_to_array(dose, frame=0), dicom_to_array(dose, frame=7)
    assert first.shape == later.shape == (10, 10) and not np.allclose(first, later)


def test_nifti_axis_and_slice_choice():
    shape = nibabel.load(NIFTI).shape  # (33, 41, 25)
    for axis in range(3):
        arr = nifti_to_array(NIFTI, axis=axis, slice_index=2)
        assert sorted(arr.shape) == sorted(s for i, s in enumerate(shape) if i != axis)
    assert not np.allclose(nifti_to_array(NIFTI, slice_index=5), nifti_to_array(NIFTI, slice_index=15))
    assert load_medical_image(NIFTI).mode == "L"


def test_medical_folder_copies_no_identifying_dicom_attribute(tmp_path):
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), tmp_path / name)
    shutil.copy(NIFTI, tmp_path / "anatomical.nii")  # NIfTI has no modality: skipped and counted
    ds, report = load_medical_folder(str(tmp_path), on_error="skip", return_report=True)
    assert sorted(ds["modality"]) == ["ct", "mri"] and report.skipped == {"unknown_modality": 1}
    check_no_phi(ds)
    text = json.dumps(
        ds.cast_column("image", ds.features["image"].__class__(decode=False)).to_list(), default=str
    )
    for phi in (
        "CompressedSamples",
        "1CT1",
        "4MR1",
        "JFK IMAGING",
        "20040119",
        "TOSHIBA",
        "CT_small",
        "1.3.6.1",
    ):
        assert phi not in text
    header = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    meta = safe_dicom_metadata(header)
    assert meta["Modality"] == "CT" and "PatientName" not in meta and "StudyDate" not in meta
    assert len(load_medical_folder(str(tmp_path), modality="mri")) == 3


def test_check_no_phi_refuses_phi_columns_and_values():
    check_no_phi(make_phantom_dataset(16, image_size=32))  # the generator is clean
    with pytest.raises(PHIError, match="column 'PatientName'"):
        check_no_phi(Dataset.from_dict({"PatientName": ["anon"], "report": ["ok"]}))
    with pytest.raises(PHIError, match='column "Patient\'s Birth Date"'):
        check_no_phi(Dataset.from_dict({"Patient's Birth Date": ["x"]}))
    cases = {
        "dicom_person_name": "Seen by DOE^JOHN today.",
        "dicom_header_field": "Patient ID: 12345",
        "dicom_phi_tag": "(0010,0010) PN anon",
        "dicom_date": "Study on 20190312.",
        "dicom_uid": "uid 1.2.840.113619.2.55.3.604688119",
    }
    for reason, value in cases.items():
        ds = Dataset.from_dict({"report": ["clean text", value]})
        with pytest.raises(PHIError, match=rf"column 'report', row 1: value looks like {reason}") as err:
            check_no_phi(ds)
        assert value not in str(err.value)  # the PHI itself is masked in the message
        check_no_phi(ds, allow_columns=["report"])
    nested = Dataset.from_dict(
        {"boxes": [[{"label": "ok", "bbox": [1, 2, 3, 4]}], [{"label": "SMITH^ANN", "bbox": [1, 2, 3, 4]}]]}
    )
    with pytest.raises(PHIError, match=r"column 'boxes.label', row 1"):
        check_no_phi(nested)
    with pytest.raises(PHIError, match="row 0"):
        check_no_phi(Dataset.from_dict({"report": ["ok", "DOE^JOHN"]}).select([1]))
