"""Dataset card and the Hub push, offline: HfApi upload calls write into a temp folder."""

import shutil

import pytest
from datasets import Dataset, load_dataset
from huggingface_hub import HfApi

from hf_meddiff.data import make_phantom_dataset
from hf_meddiff.data.hub import push_dataset_to_hub, render_dataset_card
from hf_meddiff.data.medical_io import PHIError


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw.get("repo_type")))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, **kw):
        calls.append(("upload_folder", repo_id, repo_type))
        target = tmp_path / "hub" / repo_id
        shutil.copytree(folder_path, target)
        return str(target)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return tmp_path / "hub", calls


def test_push_writes_parquet_shards_and_card_that_reload(fake_hub):
    hub, calls = fake_hub
    ds = make_phantom_dataset(30, seed=5, image_size=32)
    push_dataset_to_hub(ds, "me/phantom", pretty_name="MedPhantom mini")
    assert calls == [("create_repo", "me/phantom", "dataset"), ("upload_folder", "me/phantom", "dataset")]
    folder = hub / "me" / "phantom"
    reloaded = load_dataset(str(folder))
    assert sorted(reloaded) == sorted(set(ds["split"]))
    assert sum(len(d) for d in reloaded.values()) == 30
    train = reloaded["train"]
    original = ds.filter(lambda s: s == "train", input_columns="split")
    assert train["report"] == original["report"] and train["boxes"] == original["boxes"]
    assert train[0]["image"].tobytes() == original[0]["image"].tobytes()
    card = (folder / "README.md").read_text()
    assert "# MedPhantom mini" in card and "license: apache-2.0" in card and "size_categories: n<1K" in card
    assert "## Privacy" in card and "check_no_phi" in card and "Not for clinical decisions" in card
    for modality in ("CT", "MRI", "X-ray", "OCT"):
        assert modality in card


def test_push_refuses_phi_before_any_upload(fake_hub):
    _, calls = fake_hub
    ds = Dataset.from_dict({"report": ["Patient Name: DOE^JANE"], "split": ["train"]})
    with pytest.raises(PHIError):
        push_dataset_to_hub(ds, "me/leaky")
    assert calls == []


def test_card_for_a_loaded_public_set_describes_sources():
    ds = Dataset.from_dict(
        {
            "modality": ["xray", "ct"],
            "question_type": ["", "diagnosis"],
            "source": ["iu_xray", "slake"],
            "split": ["train", "test"],
        }
    )
    card = render_dataset_card(ds, repo_id="me/mixed", license="other")
    text = str(card)
    assert "iu_xray (1)" in text and "slake (1)" in text and "license: other" in text
    assert card.data.size_categories == "n<1K"
