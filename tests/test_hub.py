"""Model card rendering and the offline push round trip (uploads intercepted into a local folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
from hf_meddiff.hub import (
    NOT_FOR_CLINICAL_USE,
    eval_results_from_summary,
    push_meddiff_to_hub,
    render_model_card,
)

SUMMARY = {
    "dataset": {"name": "MedPhantom", "type": "medphantom", "split": "test", "num_samples": 12},
    "vqa": {"accuracy": 0.5, "chance": 0.25, "n": 12, "per_modality": {"ct": {"accuracy": 1.0, "n": 2}}},
    "report": {"bleu_1": 0.41, "bleu_4": 0.12, "rouge_l": 0.33, "clinical_efficacy": {"f1": 0.2}},
}


def test_card_has_metadata_model_index_and_clinical_warning():
    card = render_model_card(
        model_name="meddiff-phantom",
        repo_id="me/meddiff-phantom",
        datasets=["medphantom"],
        eval_results=SUMMARY,
        training_recipe={"learning_rate": 3e-4, "max_steps": 200},
        base_model="me/meddiff-base",
    )
    reparsed = ModelCard(str(card))  # what the Hub would parse
    data = reparsed.data.to_dict()
    assert data["license"] == "apache-2.0"
    assert data["library_name"] == "hf-meddiff"
    assert data["pipeline_tag"] == "any-to-any"
    assert data["base_model"] == "me/meddiff-base"
    assert data["datasets"] == ["medphantom"]
    assert "medical" in data["tags"]
    results = {(r.task_type, r.metric_type): r.metric_value for r in reparsed.data.eval_results}
    assert results[("visual-question-answering", "accuracy")] == 0.5
    assert results[("image-to-text", "bleu_1")] == 0.41
    assert results[("image-to-text", "ce_f1")] == 0.2
    assert ("visual-question-answering", "n") not in results  # counts are not metrics
    body = reparsed.text
    assert NOT_FOR_CLINICAL_USE in body
    assert body.index(NOT_FOR_CLINICAL_USE) < body.index("## Model description")
    assert "| Report generation | BLEU-1 | 0.4100 |" in body
    assert "max_steps: 200" in body
    assert "me/meddiff-base" in body


def test_card_without_results_says_so():
    card = render_model_card(model_name="bare")
    assert card.data.eval_results is None
    assert "No evaluation results were recorded" in card.text
    assert NOT_FOR_CLINICAL_USE in card.text


def test_eval_results_skip_unknown_sections_and_non_numbers():
    results = eval_results_from_summary(
        {"dataset": {"name": "x"}, "misc": {"a": 1}, "vqa": {"accuracy": "n/a"}}
    )
    assert results == []


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Intercept HfApi so a push copies the folder into tmp_path/hub/<repo_id>."""
    hub = tmp_path / "hub"
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        (hub / repo_id).mkdir(parents=True, exist_ok=True)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls.append(("upload_folder", repo_id, kwargs))
        shutil.copytree(folder_path, hub / repo_id, dirs_exist_ok=True)
        return "commit-info"

    def forbidden(self, *args, **kwargs):
        raise AssertionError("the push must go through create_repo + upload_folder only")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "create_commit", forbidden)
    monkeypatch.setattr(HfApi, "upload_file", forbidden)
    return hub, calls


@pytest.fixture(scope="module")
def processor():
    from hf_meddiff import MedDiffImageProcessor, MedDiffImageTokenizer, MedDiffProcessor
    from hf_meddiff.text_tokenizer import train_text_tokenizer

    torch.manual_seed(0)
    texts = [
        "Which modality is shown? CT MRI X-ray ultrasound",
        "Findings: round nodule in the upper left.",
    ] * 8
    tokenizer = train_text_tokenizer(texts, vocab_size=300)
    image_tokenizer = MedDiffImageTokenizer.from_config_preset("tiny")
    return MedDiffProcessor(MedDiffImageProcessor(size=32), tokenizer, image_tokenizer=image_tokenizer)


def _tiny_model(processor=None):
    torch.manual_seed(0)
    kwargs = processor.model_config_kwargs() if processor is not None else {}
    return MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny", **kwargs)).eval()


def _image():
    return (torch.arange(32 * 32).reshape(32, 32) % 251).to(torch.uint8).numpy()


def test_push_round_trip_reloads_with_auto_classes(fake_hub, tmp_path, processor):
    from transformers import AutoModelForMaskedLM, AutoProcessor

    from hf_meddiff import MedDiffGenerationConfig

    hub, calls = fake_hub
    model = _tiny_model(processor)
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(SUMMARY))
    generation_config = MedDiffGenerationConfig(gen_length=16, block_length=8, steps=8)
    commit = push_meddiff_to_hub(
        model,
        processor,
        "me/tiny-meddiff",
        generation_config=generation_config,
        eval_results=results_file,
        private=True,
    )
    assert commit == "commit-info"
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][2]["private"] is True
    folder = hub / "me" / "tiny-meddiff"
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "README.md",
        "generation_config.json",
        "image_tokenizer",
    } <= names
    assert {"processor_config.json", "tokenizer.json"} <= names

    reloaded_processor = AutoProcessor.from_pretrained(folder)
    assert type(reloaded_processor) is type(processor)
    torch.testing.assert_close(
        reloaded_processor.encode_images([_image()]), processor.encode_images([_image()])
    )
    assert (
        reloaded_processor.tokenizer("Findings: round nodule")["input_ids"]
        == processor.tokenizer("Findings: round nodule")["input_ids"]
    )
    assert MedDiffGenerationConfig.from_pretrained(folder).gen_length == 16

    reloaded = AutoModelForMaskedLM.from_pretrained(folder).eval()
    assert type(reloaded) is MedDiffForMaskedDiffusion
    ids = torch.randint(0, model.config.vocab_size, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results[0].metric_value == 0.5
    assert "tiny-meddiff" in card.text and NOT_FOR_CLINICAL_USE in card.text


def test_push_rejects_bad_repo_id_and_missing_results(fake_hub, tmp_path):
    model = _tiny_model()
    with pytest.raises(ValueError, match="user/name"):
        push_meddiff_to_hub(model, None, "a/b/c")
    with pytest.raises(FileNotFoundError, match="hf-meddiff evaluate"):
        push_meddiff_to_hub(model, None, "me/x", eval_results=tmp_path / "missing.json")
    assert not (fake_hub[0] / "me" / "x").exists()


BLOCK_HF_MEDDIFF = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_meddiff" or name.startswith("hf_meddiff."):
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
sys.meta_path.insert(0, _Block())
"""


@pytest.mark.slow
def test_pushed_folder_loads_with_remote_code_without_hf_meddiff(fake_hub, tmp_path, processor):
    hub, _ = fake_hub
    model = _tiny_model(processor)
    push_meddiff_to_hub(model, processor, "me/remote")
    folder = hub / "me" / "remote"
    with torch.no_grad():
        expected = model(input_ids=torch.arange(10)[None]).logits[0, :, :5].tolist()
    expected_codes = processor.encode_images([_image()]).tolist()
    script = BLOCK_HF_MEDDIFF + textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModelForMaskedLM, AutoProcessor
        try:
            import hf_meddiff
            raise SystemExit("hf_meddiff should not be importable here")
        except ModuleNotFoundError:
            pass
        model = AutoModelForMaskedLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(input_ids=torch.arange(10)[None]).logits[0, :, :5]
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        image = (torch.arange(32 * 32).reshape(32, 32) % 251).to(torch.uint8).numpy()
        codes = processor.encode_images([image]).tolist()
        print(chr(10) + "RESULT:" + json.dumps({{"cls": type(model).__name__, "module": type(model).__module__, "logits": logits.tolist(),
                          "processor": type(processor).__name__, "processor_module": type(processor).__module__,
                          "codes": codes}}))
        """
    )
    env = {**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wish to run the custom code" not in proc.stdout + proc.stderr  # trust_remote_code=True is enough
    out = json.loads(
        next(line for line in proc.stdout.splitlines() if line.startswith("RESULT:"))[len("RESULT:") :]
    )
    assert out["cls"] == "MedDiffForMaskedDiffusion"
    assert not out["module"].startswith("hf_meddiff")
    torch.testing.assert_close(torch.tensor(out["logits"]), torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert out["processor"] == "MedDiffProcessor" and not out["processor_module"].startswith("hf_meddiff")
    assert out["codes"] == expected_codes
