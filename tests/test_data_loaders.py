"""Each public-set loader on a small fixture in its native release format, plus bad-input handling."""

import csv
import json
import os

import pytest
from PIL import Image

from hf_meddiff.constants import MODALITIES
from hf_meddiff.data import (
    CANONICAL_COLUMNS,
    DataFormatError,
    get_load_report,
    load_isic,
    load_iu_xray,
    load_mimic_cxr,
    load_omnimedvqa,
    load_pmc_vqa,
    load_slake,
    load_vqa_rad,
    normalize_modality,
)


def _png(path, size=(40, 30), color=128, mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, color).save(path)


def _json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _read(path):
    with open(path) as f:
        return json.load(f)


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _canonical(ds):
    assert set(CANONICAL_COLUMNS) <= set(ds.column_names)
    for row in ds:
        assert row["modality"] in (*MODALITIES, "")
        if row["options"]:
            assert row["answer"] in "ABCD"[: len(row["options"])]
        assert isinstance(row["image"], Image.Image)


# --- R2Gen ------------------------------------------------------------------------------------


def _r2gen(root, mimic=False):
    def rec(i, split):
        rid = f"0{i}aa804e-bde0afdd-112c0b34-7bc16630-4e38401{i}" if mimic else f"CXR{i}_IM-0{i}"
        folder = f"p10/p1000{i}/s5{i}" if mimic else rid
        paths = (
            [f"{folder}/{rid}.jpg", f"{folder}/1.png"] if mimic else [f"{folder}/0.png", f"{folder}/1.png"]
        )
        for p in paths:
            _png(os.path.join(root, "images", p))
        extra = {"study_id": 50000 + i, "subject_id": 10000 + i} if mimic else {}
        return {
            "id": rid,
            **extra,
            "report": f"The heart size is normal.  Case {i}.",
            "image_path": paths,
            "split": split,
        }

    _json(
        os.path.join(root, "annotation.json"),
        {"train": [rec(1, "train"), rec(2, "train")], "val": [rec(3, "val")], "test": [rec(4, "test")]},
    )


def test_iu_xray_and_mimic_from_r2gen_annotation(tmp_path):
    _r2gen(str(tmp_path / "iu"))
    ds = load_iu_xray(str(tmp_path / "iu"))
    _canonical(ds)
    assert len(ds) == 4 and set(ds["split"]) == {"train", "validation", "test"}
    assert ds[0]["report"] == "The heart size is normal. Case 1." and ds[0]["modality"] == "xray"
    assert len(load_iu_xray(str(tmp_path / "iu"), split="val")) == 1
    assert len(load_iu_xray(str(tmp_path / "iu"), images="each")) == 8
    _r2gen(str(tmp_path / "mimic"), mimic=True)
    ds = load_mimic_cxr(str(tmp_path / "mimic"), split="train")
    assert len(ds) == 2 and "subject_id" not in ds.column_names
    assert "10001" not in json.dumps(ds.select_columns(["id", "report"]).to_list())


def test_missing_image_raises_naming_file_row_field_or_is_skipped_and_counted(tmp_path):
    root = str(tmp_path)
    _r2gen(root)
    os.remove(os.path.join(root, "images", "CXR2_IM-02", "0.png"))
    with pytest.raises(
        DataFormatError, match=r"annotation.json, row train\[1\], field 'image_path'.*not found"
    ):
        load_iu_xray(root)
    ds, report = load_iu_xray(root, on_error="skip", return_report=True)
    assert len(ds) == 3 and report.skipped == {"missing_image": 1}
    assert get_load_report(ds).skipped == {"missing_image": 1}


def test_record_without_required_field_and_unparsable_json(tmp_path):
    root = str(tmp_path)
    _r2gen(root)
    data = _read(os.path.join(root, "annotation.json"))
    data["train"][0]["report"] = ""
    _json(os.path.join(root, "annotation.json"), data)
    with pytest.raises(DataFormatError, match=r"row train\[0\], field 'report'"):
        load_iu_xray(root)
    assert get_load_report(load_iu_xray(root, on_error="skip")).skipped == {"missing_field": 1}
    with open(os.path.join(root, "annotation.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(DataFormatError, match="annotation.json.*not valid JSON"):
        load_iu_xray(root)
    ds = load_iu_xray(root, on_error="skip")
    assert len(ds) == 0 and get_load_report(ds).skipped == {"unparsable_file": 1}


# --- VQA-RAD ----------------------------------------------------------------------------------


def test_vqa_rad_native_json(tmp_path):
    root = str(tmp_path)
    for name in ("synpic100.jpg", "synpic200.jpg"):
        _png(os.path.join(root, "VQA_RAD Image Folder", name))
    base = {"qid_linked_id": "x", "image_case_url": "https://medpix.nlm.nih.gov/case?id=1", "evaluation": "given",
            "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL"}  # fmt: skip
    records = [
        {**base, "qid": 0, "phrase_type": "freeform", "image_name": "synpic100.jpg", "image_organ": "HEAD",
         "question": "Is this an MRI?", "question_type": "MODALITY", "answer": "Yes", "answer_type": "CLOSED"},
        {**base, "qid": 1, "phrase_type": "test_freeform", "image_name": "synpic100.jpg", "image_organ": "HEAD",
         "question": "Where is the lesion?", "question_type": "POS", "answer": "left frontal lobe", "answer_type": "OPEN"},
        {**base, "qid": 2, "phrase_type": "para", "image_name": "synpic200.jpg", "image_organ": "CHEST",
         "question": "Is there a mass?", "question_type": "PRES", "answer": "No", "answer_type": "CLOSED"},
    ]  # fmt: skip
    _json(os.path.join(root, "VQA_RAD Dataset Public.json"), records)
    ds, report = load_vqa_rad(root, return_report=True)
    _canonical(ds)
    assert ds["split"] == ["train", "test", "train"]
    assert ds["question_type"] == ["modality", "location", "diagnosis"]
    assert ds["modality"] == ["mri", "mri", ""] and report.notes == {"modality_unknown": 1}
    assert ds[1]["answer"] == "left frontal lobe" and ds[0]["anatomy"] == "head"
    assert len(load_vqa_rad(root, split="test")) == 1


# --- SLAKE ------------------------------------------------------------------------------------


def _slake(root, box=(10, 5, 20, 10)):
    _png(os.path.join(root, "imgs", "xmlab1", "source.jpg"), size=(64, 48), mode="RGB")
    _json(os.path.join(root, "imgs", "xmlab1", "detection.json"), [{"Liver": list(box)}])

    def rec(qid, lang, q, a, ctype, modality="CT"):
        return {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": q, "answer": a, "q_lang": lang,
                "location": "Abdomen", "modality": modality, "answer_type": "OPEN", "base_type": "vqa",
                "content_type": ctype, "triple": ["vhead", "_", "_"], "qid": qid}  # fmt: skip

    _json(os.path.join(root, "train.json"), [rec(0, "en", "Which organ is abnormal?", "Liver", "Organ"),
                                             rec(1, "zh", "哪个器官?", "肝脏", "Organ"),
                                             rec(2, "en", "What modality is used?", "CT", "Modality")])  # fmt: skip
    _json(os.path.join(root, "validate.json"), [rec(3, "en", "How many livers?", "1", "Quantity")])
    _json(
        os.path.join(root, "test.json"), [rec(4, "en", "What color is the liver?", "Gray", "Color", "X-Ray")]
    )


def test_slake_native_json_with_detection_boxes(tmp_path):
    root = str(tmp_path)
    _slake(root)
    ds = load_slake(root)
    _canonical(ds)
    assert len(ds) == 4  # the Chinese question is filtered out
    assert ds["question_type"] == ["anatomy", "modality", "counting", "open"]
    assert ds["modality"] == ["ct", "ct", "ct", "xray"]
    assert ds[0]["boxes"] == [{"label": "Liver", "bbox": [156, 104, 468, 312]}]
    assert len(load_slake(root, language=None, split="train")) == 3


def test_box_outside_image_and_unknown_modality(tmp_path):
    root = str(tmp_path)
    _slake(root, box=(50, 5, 30, 10))  # x + w = 80 > 64
    with pytest.raises(
        DataFormatError, match=r"detection.json, row 0, field 'Liver'.*outside the 64x48 image"
    ):
        load_slake(root, split="train")
    assert get_load_report(load_slake(root, on_error="skip")).skipped == {"box_outside_image": 4}
    _slake(root)
    data = _read(os.path.join(root, "test.json"))
    data[0]["modality"] = "PET"
    _json(os.path.join(root, "test.json"), data)
    with pytest.raises(DataFormatError, match=r"test.json, row 0, field 'modality'.*unknown modality 'PET'"):
        load_slake(root)


# --- OmniMedVQA -------------------------------------------------------------------------------


def test_omnimedvqa_open_access_json(tmp_path):
    root = str(tmp_path)
    _png(os.path.join(root, "Images", "ACRIMA", "Im553_g_ACRIMA.png"), mode="RGB")
    _png(os.path.join(root, "Images", "Chest CT Scan", "000108.png"))
    recs = [
        {"dataset": "ACRIMA", "question_id": "ACRIMA_0000", "question_type": "Disease Diagnosis",
         "question": "What is the diagnosis?", "gt_answer": "Glaucoma.", "image_path": "Images/ACRIMA/Im553_g_ACRIMA.png",
         "option_A": "Normal", "option_B": "Glaucoma", "option_C": "Cataract", "option_D": "Myopia",
         "modality_type": "Fundus Photography"},
        {"dataset": "Chest CT Scan", "question_id": "Chest CT Scan_0001", "question_type": "Modality Recognition",
         "question": "What modality is used?", "gt_answer": "CT", "image_path": "Images/Chest CT Scan/000108.png",
         "option_A": "MR", "option_B": "CT", "modality": "CT(Computed Tomography)"},
    ]  # fmt: skip
    _json(os.path.join(root, "QA_information", "Open-access", "ACRIMA.json"), recs)
    ds = load_omnimedvqa(root)
    _canonical(ds)
    assert ds["answer"] == ["B", "B"] and ds["modality"] == ["fundus", "ct"]
    assert ds["question_type"] == ["diagnosis", "modality"] and ds[1]["options"] == ["MR", "CT"]
    recs[0]["gt_answer"] = "Retinitis"
    _json(os.path.join(root, "QA_information", "Open-access", "ACRIMA.json"), recs)
    with pytest.raises(DataFormatError, match="row 0, field 'gt_answer'.*matches none"):
        load_omnimedvqa(root)


# --- PMC-VQA ----------------------------------------------------------------------------------


def test_pmc_vqa_csv(tmp_path):
    root = str(tmp_path)
    _png(os.path.join(root, "images", "PMC1_fig1.jpg"), mode="RGB")
    _png(os.path.join(root, "images", "PMC2_fig2.jpg"), mode="RGB")
    header = [
        "index",
        "Figure_path",
        "Caption",
        "Question",
        "Answer",
        "Choice A",
        "Choice B",
        "Choice C",
        "Choice D",
        "Answer_label",
        "split",
    ]
    _csv(os.path.join(root, "train.csv"), header, [
        [0, "PMC1_fig1.jpg", "cap", "What imaging modality was used?", "CT scan", " A:MRI ", " B:CT scan ", " C:PET ", " D:X-ray ", "B", "train"],
        [1, "PMC2_fig2.jpg", "cap", "Where is the lesion?", "Left lobe", "A:Left lobe", "B:Right lobe", "C:Apex", "D:Base", "A", "train"],
    ])  # fmt: skip
    _csv(
        os.path.join(root, "test.csv"),
        header,
        [[2, "missing.jpg", "cap", "Q?", "x", "A:x", "B:y", "C:z", "D:w", "A", "test"]],
    )
    ds, report = load_pmc_vqa(root, on_error="skip", return_report=True)
    _canonical(ds)
    assert ds[0]["options"] == ["MRI", "CT scan", "PET", "X-ray"] and ds[0]["answer"] == "B"
    assert ds["question_type"] == ["modality", "location"]
    assert report.skipped == {"missing_image": 1}
    with pytest.raises(DataFormatError, match=r"test.csv, row 2, field 'Figure_path'"):
        load_pmc_vqa(root, split="test")
    with open(os.path.join(root, "train.csv"), "w") as f:
        f.write("Figure_path,Question\nx.jpg,What?\n")
    with pytest.raises(DataFormatError, match="train.csv.*no column"):
        load_pmc_vqa(root, split="train")


# --- ISIC -------------------------------------------------------------------------------------


def test_isic_2019_ground_truth_and_2020_metadata(tmp_path):
    root = str(tmp_path / "2019")
    os.makedirs(root)
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    rows = []
    for i, k in enumerate(["MEL", "NV", "BCC", "DF", "UNK"]):
        _png(os.path.join(root, "ISIC_2019_Training_Input", f"ISIC_000000{i}.jpg"), mode="RGB")
        rows.append([f"ISIC_000000{i}"] + ["1.0" if c == k else "0.0" for c in classes])
    _csv(os.path.join(root, "ISIC_2019_Training_GroundTruth.csv"), ["image", *classes], rows)
    _csv(os.path.join(root, "ISIC_2019_Training_Metadata.csv"), ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
         [[f"ISIC_000000{i}", 55, "anterior torso", f"BCN_{i}", "male"] for i in range(5)])  # fmt: skip
    ds, report = load_isic(root, on_error="skip", return_report=True)
    _canonical(ds)
    assert report.skipped == {"unknown_diagnosis": 1} and len(ds) == 4
    first = ds[0]
    assert first["options"][ord(first["answer"]) - 65] == "melanoma" and len(set(first["options"])) == 4
    assert first["anatomy"] == "anterior torso" and "melanoma" in first["report"]
    assert not {"sex", "age_approx", "lesion_id"} & set(ds.column_names)
    root20 = str(tmp_path / "2020")
    os.makedirs(os.path.join(root20, "train"))
    _png(os.path.join(root20, "train", "ISIC_2637011.jpg"), mode="RGB")
    _png(os.path.join(root20, "train", "ISIC_0015719.jpg"), mode="RGB")
    _csv(os.path.join(root20, "train.csv"),
         ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target"],
         [["ISIC_2637011", "IP_7279968", "male", 45, "head/neck", "nevus", "benign", 0],
          ["ISIC_0015719", "IP_3075186", "female", 45, "upper extremity", "melanoma", "malignant", 1]])  # fmt: skip
    ds = load_isic(root20)
    assert (
        ds["options"][0] in (["nevus", "melanoma"], ["melanoma", "nevus"]) and ds["anatomy"][0] == "head/neck"
    )
    assert "IP_7279968" not in json.dumps(
        ds.select_columns([c for c in ds.column_names if c != "image"]).to_list()
    )


def test_normalize_modality_spellings():
    assert normalize_modality("CT(Computed Tomography)") == "ct"
    assert normalize_modality("X-Ray") == "xray"
    assert normalize_modality("OCT (Optical Coherence Tomography") == "oct"
    assert normalize_modality("Infrared Reflectance Imaging") is None


def test_hub_id_goes_through_load_dataset(monkeypatch):
    import datasets

    fake = datasets.Dataset.from_dict(
        {"image": [Image.new("L", (8, 8))], "question": ["Is this a CT scan?"], "answer": ["yes"]}
    )
    calls = []

    def fake_load_dataset(name, split=None, **kw):
        calls.append((name, split))
        return fake if split else datasets.DatasetDict({"test": fake})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_vqa_rad("someone/vqa-rad")
    assert calls == [("someone/vqa-rad", None)]
    assert ds[0]["modality"] == "ct" and ds[0]["split"] == "test" and ds[0]["answer"] == "yes"
