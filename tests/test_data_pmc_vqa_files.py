"""PMC-VQA: every CSV of the public release is found and mapped to its split (version 1 `train.csv` / `test.csv` /
`test_clean.csv`, version 2 `train_2.csv` / `test_2.csv`); an empty folder names every file looked for."""

import csv
import os

import pytest
from PIL import Image

from hf_meddiff.data import load_pmc_vqa
from hf_meddiff.data.loaders import pmc_vqa_files

HEADER = [
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


def _release(root, names, image_dir="images"):
    """One CSV per name, each with one row whose question names the file (so a row says where it came from)."""
    for i, name in enumerate(names):
        figure = f"PMC{i}_F1.jpg"
        path = os.path.join(root, image_dir, figure)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("RGB", (32, 24), 128).save(path)
        with open(os.path.join(root, name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            writer.writerow(
                [i, figure, "cap", f"Which CT finding in {name}?", "Nodule", " A:Nodule ", " B:Mass ", " C:Cyst ",
                 " D:None ", "A", "train"]
            )  # fmt: skip


def _sources(ds):
    return {row["split"]: row["question"].split(" in ")[1].rstrip("?") for row in ds}


def test_version_1_maps_train_and_test_and_test_clean_on_request(tmp_path):
    root = str(tmp_path)
    _release(root, ["train.csv", "test.csv", "test_clean.csv"])
    assert _sources(load_pmc_vqa(root)) == {"train": "train.csv", "test": "test.csv"}
    clean = load_pmc_vqa(root, split="test", test_clean=True)
    assert _sources(clean) == {"test": "test_clean.csv"}
    assert clean[0]["id"].startswith("pmc_vqa-test_clean-")
    assert pmc_vqa_files(root, test_clean=True) == (1, {"train": "train.csv", "test": "test_clean.csv"})


def test_version_2_files_and_image_folder(tmp_path):
    root = str(tmp_path)
    _release(root, ["train_2.csv", "test_2.csv"], image_dir="images_2")
    ds = load_pmc_vqa(root)
    assert _sources(ds) == {"train": "train_2.csv", "test": "test_2.csv"}
    assert ds[0]["options"] == ["Nodule", "Mass", "Cyst", "None"] and ds[0]["answer"] == "A"
    assert pmc_vqa_files(root) == (2, {"train": "train_2.csv", "test": "test_2.csv"})


def test_both_versions_read_version_1_unless_asked(tmp_path):
    root = str(tmp_path)
    _release(root, ["train.csv", "test.csv", "train_2.csv", "test_2.csv"])
    assert _sources(load_pmc_vqa(root))["train"] == "train.csv"
    assert _sources(load_pmc_vqa(root, version=2)) == {"train": "train_2.csv", "test": "test_2.csv"}
    with pytest.raises(ValueError, match="test_clean.csv belongs to version 1"):
        load_pmc_vqa(root, version=2, test_clean=True)


def test_a_folder_with_only_test_clean_reads_it_when_asked_and_says_so_otherwise(tmp_path):
    root = str(tmp_path)
    _release(root, ["test_clean.csv"])
    with pytest.raises(FileNotFoundError, match="test_clean=True"):
        load_pmc_vqa(root)
    assert _sources(load_pmc_vqa(root, test_clean=True)) == {"test": "test_clean.csv"}


def test_missing_requested_split_names_its_file(tmp_path):
    root = str(tmp_path)
    _release(root, ["train.csv"])
    assert _sources(load_pmc_vqa(root)) == {"train": "train.csv"}, "absent splits are left out"
    with pytest.raises(FileNotFoundError, match=r"split 'test' of version 1 needs test.csv"):
        load_pmc_vqa(root, split="test")


def test_nothing_found_names_the_folder_and_every_file_looked_for(tmp_path):
    root = str(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError) as err:
        load_pmc_vqa(root)
    message = str(err.value)
    assert root in message and "notes.txt" in message
    for name in ("train.csv", "test.csv", "train_2.csv", "test_2.csv", "train2.csv", "test2.csv"):
        assert name in message
