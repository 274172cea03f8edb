"""A saved MedDiff folder is self-contained: it loads with `trust_remote_code=True` where hf_meddiff is absent."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion

# Runs in a fresh Python whose import system refuses `hf_meddiff`, so only the files inside the folder can
# define the model.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class BlockHfMeddiff(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_meddiff" or name.startswith("hf_meddiff."):
                raise ImportError(f"{name} is blocked: the folder must carry its own code")
            return None

    sys.meta_path.insert(0, BlockHfMeddiff())
    try:
        import hf_meddiff  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker did not block hf_meddiff")

    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    folder, resaved, tensors = sys.argv[1:]
    data = torch.load(tensors)
    ids, mask = data["input_ids"], data["attention_mask"]

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert type(config).__name__ == "MedDiffConfig", type(config)
    assert config.vocab_size == data["vocab_size"]

    model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__name__ == "MedDiffForMaskedDiffusion", type(model)
    assert not type(model).__module__.startswith("hf_meddiff"), type(model).__module__
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    assert torch.equal(logits, data["logits"]), (logits - data["logits"]).abs().max()

    model.save_pretrained(resaved)
    again = AutoModelForMaskedLM.from_pretrained(resaved, trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.equal(again(ids, attention_mask=mask).logits, data["logits"])

    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(base).__name__ == "MedDiffModel", type(base)
    with torch.no_grad():
        hidden = base(ids, attention_mask=mask).last_hidden_state
    assert torch.equal(hidden, data["hidden"]), (hidden - data["hidden"]).abs().max()
    print("REMOTE-OK", type(model).__module__)
    """
)


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code_without_hf_meddiff(tmp_path):
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()
    folder = tmp_path / "meddiff-tiny"
    model.save_pretrained(folder)

    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_meddiff.MedDiffConfig",
        "AutoModel": "modeling_meddiff.MedDiffModel",
        "AutoModelForMaskedLM": "modeling_meddiff.MedDiffForMaskedDiffusion",
    }
    for module_file in ("configuration_meddiff.py", "modeling_meddiff.py", "tokens_meddiff.py"):
        assert (folder / module_file).is_file(), module_file
    for module_file in folder.glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+hf_meddiff", module_file.read_text(), re.M), (
            module_file.name
        )
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))

    ids = torch.tensor([[0, 0, 1, 9, 5, 150, 160, 6, 40, 41], [1, 9, 5, 131, 140, 6, 50, 51, 52, 2]])
    mask = (torch.arange(10) >= torch.tensor([[2], [0]])).long()
    with torch.no_grad():
        data = {
            "input_ids": ids,
            "attention_mask": mask,
            "vocab_size": model.config.vocab_size,
            "logits": model(ids, attention_mask=mask).logits,
            "hidden": model.model(ids, attention_mask=mask).last_hidden_state,
        }
    torch.save(data, tmp_path / "tensors.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)

    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1"
    )
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "resaved"), str(tmp_path / "tensors.pt")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REMOTE-OK transformers_modules." in result.stdout
