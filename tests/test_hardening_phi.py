"""No PHI by default: `check_no_phi` catches the common free-text forms (a table of positives and negatives), and
`hf-meddiff data convert` checks by default, opts out only loudly, and saves image bytes, never paths."""

import json

import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from PIL import Image

from hf_meddiff import cli
from hf_meddiff.data import check_no_phi, make_phantom_dataset
from hf_meddiff.data.medical_io import PHIError

# (text, reason it must be refused for)
POSITIVES = [
    ("Patient DOE^JOHN, MRN4711, born 19700101", "dicom_person_name"),
    ("Patient DOE^JOHN, MRN4711, born 19700101", "record_number"),
    ("Patient DOE^JOHN, MRN4711, born 19700101", "date_of_birth"),
    ("Patient John Smith presented with cough.", "patient_name"),
    ("Patient: Jane Doe. Chest PA and lateral.", "patient_name"),
    ("PATIENT: DOE, JOHN", "patient_name"),
    ("Pt. Mary O'Neil, 54 years.", "patient_name"),
    ("Name: Jane Doe", "name_after_label"),
    ("Findings reviewed. Name = J. Smith", "name_after_label"),
    ("Patient name - surname: Miller", "name_after_label"),
    ("Discussed with Mrs. Smith at 10:00.", "title_and_name"),
    ("Results called to Dr. Alvarez.", "title_and_name"),
    ("MRN: 00123456", "record_number"),
    ("mrn 1234567", "record_number"),
    ("Medical record number 998877 on file.", "record_number"),
    ("Patient ID 4455667", "record_number"),
    ("ID: A-123456", "record_number"),
    ("Accession # 77123", "record_number"),
    ("SSN 123-45-6789", "ssn"),
    ("Call 617-555-0199 with results.", "phone_number"),
    ("Call (617) 555-0199.", "phone_number"),
    ("Report sent to jdoe@hospital.org", "email_address"),
    ("DOB: 01/02/1970", "date_of_birth"),
    ("D.O.B. 1970-01-02", "date_of_birth"),
    ("date of birth 2 January 1970", "date_of_birth"),
    ("born on Jan 2, 1970", "date_of_birth"),
    ("Birth date: 02.01.1970", "date_of_birth"),
    ("Compared with the study of 03/12/2019.", "full_date"),
    ("Prior exam 2019-03-12 showed no change.", "full_date"),
    ("Since March 12, 2019 stable.", "full_date"),
    ("A 93-year-old woman with dyspnea.", "age_over_89"),
    ("Study on 20190312.", "dicom_date"),
    ("Patient's Name: anonymous", "dicom_header_field"),
]

NEGATIVES = [
    "No acute cardiopulmonary process.",
    "Patient is a 45-year-old man with cough.",
    "Patient positioning is adequate. Patient History: smoker.",
    "The patient has a 12 mm nodule in the right upper lobe.",
    "Pt. was supine during the exam.",
    "Heart size normal. T2 hyperintense lesion at C5-C6.",
    "Lesion 1 of 3 measures 3.5 x 2.1 x 1.0 cm.",
    "Series 3 image 45: fluid 100 ml in the pleural space.",
    "BI-RADS 4. Grade 2/3 stenosis.",
    "Born at term, now with fever.",
    "Newborn chest radiograph: no pneumothorax.",
    "Drug name: amoxicillin.",
    "<think>Bright spot <box>[123,456,789,999]</box>.</think><answer>B</answer>",
    "What is the modality of this image?\nA. CT\nB. MRI",
    "MS lesions in the periventricular white matter.",
    "The grid 1000 pattern is an artefact.",
    "A 75-year-old with follow-up in 2019.",
    "Findings: XXXX. Impression: normal chest.",
    "Compared with ___ prior study.",
]


@pytest.mark.parametrize("text,reason", POSITIVES)
def test_check_no_phi_catches_free_text_phi(text, reason):
    ds = Dataset.from_dict({"report": ["No acute findings.", text]})
    with pytest.raises(PHIError, match=rf"column 'report', row 1: value looks like {reason} ") as err:
        check_no_phi(ds)
    assert text not in str(err.value)  # the value itself is masked


@pytest.mark.parametrize("text", NEGATIVES)
def test_check_no_phi_passes_clinical_text_without_phi(text):
    check_no_phi(Dataset.from_dict({"report": [text], "question": [text]}))


def test_the_generated_dataset_is_clean():
    check_no_phi(make_phantom_dataset(32, image_size=32))


# --- hf-meddiff data convert ----------------------------------------------------------------------------------
def _iu_xray(root, report):
    (root / "images" / "p10" / "p10000032").mkdir(parents=True)
    Image.effect_noise((40, 40), 30).convert("L").save(root / "images" / "p10" / "p10000032" / "s5041.png")
    annotation = {"train": [{"id": "CXR1", "report": report, "image_path": ["p10/p10000032/s5041.png"]}]}
    (root / "annotation.json").write_text(json.dumps(annotation))
    return root


def test_convert_checks_phi_by_default(tmp_path, capsys):
    src = _iu_xray(tmp_path / "iu", "Patient DOE^JOHN, MRN4711, born 19700101. Heart normal.")
    out = tmp_path / "out"
    assert cli.main(["data", "convert", "iu_xray", "--input", str(src), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refusing to save" in err and "record_number" in err and "--no-check-phi" in err
    assert not out.exists() and not list(tmp_path.glob(".out.convert-*"))


def test_convert_without_the_check_says_so_loudly(tmp_path, capsys):
    src = _iu_xray(tmp_path / "iu", "Patient DOE^JOHN. Heart normal.")
    out = tmp_path / "out"
    argv = ["data", "convert", "iu_xray", "--input", str(src), "--output-dir", str(out), "--no-check-phi"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "WARNING: --no-check-phi: the PHI check is OFF" in captured.err
    assert (out / "data.parquet").exists()


def test_converted_parquet_embeds_image_bytes_and_holds_no_path(tmp_path, capsys):
    src = _iu_xray(tmp_path / "iu", "Heart size is normal.")
    out = tmp_path / "out"
    assert cli.main(["data", "convert", "iu_xray", "--input", str(src), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    table = pq.read_table(out / "data.parquet")
    image = table.column("image").to_pylist()[0]
    assert image["path"] is None and image["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    raw = (out / "data.parquet").read_bytes()
    assert b"p10000032" not in raw and str(tmp_path).encode() not in raw  # no subject id, no source folder
    # The source can move: the saved data still loads.
    (tmp_path / "iu").rename(tmp_path / "moved")
    assert cli.main(["data", "inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_rows"] == 1


def test_convert_skips_and_counts_bad_images_with_on_error_skip(tmp_path, capsys):
    src = _iu_xray(tmp_path / "iu", "Heart size is normal.")
    annotation = json.loads((src / "annotation.json").read_text())
    (src / "images" / "fake.png").write_bytes(b"this is not a PNG")
    annotation["train"].append({"id": "CXR2", "report": "Clear lungs.", "image_path": ["fake.png"]})
    (src / "annotation.json").write_text(json.dumps(annotation))
    out = tmp_path / "out"
    argv = ["data", "convert", "iu_xray", "--input", str(src), "--output-dir", str(out)]
    assert cli.main(argv) == 2
    assert "fake.png" in capsys.readouterr().err
    assert cli.main([*argv, "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert "unreadable_image=1" in captured.err and "Converted 1 records" in captured.out
