"""The image judges of report-to-image: trained on real MedPhantom images they recognise modality and finding on
held-out real images well above chance, save as safetensors + JSON, give a feature space in which two halves of a
real set are closer than real images and noise, and feed the report-to-image table of `hf-meddiff evaluate`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch

from hf_meddiff.data import make_phantom_dataset
from hf_meddiff.evaluation import EvaluationConfig, EvaluationResults
from hf_meddiff.evaluation.judges import finding_labels, judges_for_evaluation, train_judges
from hf_meddiff.evaluation.results import results_to_markdown
from hf_meddiff.evaluation.text_to_image import evaluate_text_to_image
from hf_meddiff.metrics.image_generation import (
    domain_fid_kid,
    extract_features,
    frechet_distance,
    image_generation_scores,
    kernel_distance,
)
from hf_meddiff.metrics.judges import NO_FINDING, ImageJudge, ImageJudges, judge_images

MODALITIES = ("ct", "fundus", "dermoscopy")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom_dataset(480, seed=3, image_size=32, modalities=MODALITIES)


@pytest.fixture(scope="module")
def split(phantom):
    splits = np.asarray(phantom["split"])
    train = phantom.select(np.flatnonzero(splits == "train"))
    heldout = phantom.select(np.flatnonzero(splits != "train"))
    return train, heldout


@pytest.fixture(scope="module")
def judges(split):
    torch.manual_seed(0)
    train, heldout = split
    return train_judges(train, heldout, epochs=10, batch_size=32, progress=False, num_threads=1)


def test_judges_recognise_modality_and_finding_on_heldout_real_images_well_above_chance(judges, split):
    _, heldout = split
    assert judges.modality.labels == sorted(MODALITIES)
    assert judges.info["modality"]["heldout_accuracy"] >= 0.95
    finding = judges.info["finding"]
    assert (
        NO_FINDING in finding["labels"] and len(finding["labels"]) == 10
    )  # 3 modalities x 3 findings + none
    assert finding["heldout_accuracy"] >= finding["chance"] + 0.2, finding
    assert judges.finding.accuracy(heldout["image"], finding_labels(heldout)) == finding["heldout_accuracy"]


def test_judges_round_trip_through_safetensors_and_json(judges, split, tmp_path):
    _, heldout = split
    judges.save(tmp_path / "judges")
    files = sorted(p.relative_to(tmp_path / "judges").as_posix() for p in (tmp_path / "judges").rglob("*.*"))
    assert files == [
        "finding/config.json",
        "finding/model.safetensors",
        "judges.json",
        "modality/config.json",
        "modality/model.safetensors",
    ]
    loaded = ImageJudges.load(tmp_path / "judges")
    x = judge_images(heldout["image"][:16], 32)
    for before, after in ((judges.modality, loaded.modality), (judges.finding, loaded.finding)):
        assert after.config == before.config
        torch.testing.assert_close(after.eval()(x), before.eval()(x))
    assert (
        json.loads((tmp_path / "judges" / "judges.json").read_text())["finding"]["labels"]
        == judges.finding.labels
    )


def test_loading_a_folder_without_judges_says_how_to_train_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf-meddiff judges train"):
        ImageJudges.load(tmp_path)
    (tmp_path / "modality").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors|config.json"):
        ImageJudge.from_pretrained(tmp_path / "modality")


def test_real_halves_are_closer_than_real_and_noise_in_judge_features(judges, split):
    _, heldout = split
    real = judge_images(heldout["image"], 32)
    noise = torch.rand_like(real)
    scores = domain_fid_kid(real, noise, judges.feature_extractor())
    assert scores["fid_floor"] < scores["fid"] / 5
    assert scores["kid_floor_mean"] < scores["kid_mean"] / 5
    assert (scores["n_real"], scores["n_generated"]) == (len(real), len(real))
    # a generator that returns the reference images scores exactly the floor's distances (same halves)
    same = domain_fid_kid(real, real, judges.feature_extractor())
    assert same["fid"] == pytest.approx(same["fid_floor"]) and same["kid_mean"] == pytest.approx(
        same["kid_floor_mean"]
    )


def test_frechet_and_kernel_distances_agree_with_torchmetrics():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    real, fake = torch.rand(60, 3, 16, 16) * 0.6, 0.2 + torch.rand(60, 3, 16, 16) * 0.8
    reference = image_generation_scores(
        real, fake, feature_extractor=encoder, kid_subset_size=60, kid_subsets=1
    )
    a, b = extract_features(real, encoder), extract_features(fake, encoder)
    assert frechet_distance(a, b) == pytest.approx(reference["fid"], rel=1e-3)
    assert kernel_distance(a, b, subset_size=60, subsets=1)[0] == pytest.approx(
        reference["kid_mean"], rel=1e-3
    )


class _EchoPipe:
    """A generator that 'draws' the reference image of each report (or noise): the judges' upper and lower
    bounds."""

    def __init__(self, rows, noise: bool = False):
        self.by_report = dict(zip(rows["report"], rows["image"]))
        self.noise = noise
        self.model = SimpleNamespace(name_or_path=None)

    def __call__(self, prompt, **kwargs):
        images = [self.by_report[p].convert("RGB") for p in prompt]
        if self.noise:
            rng = np.random.default_rng(0)
            images = [PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in images]
        return SimpleNamespace(images=images)


@pytest.mark.parametrize("noise", [False, True])
def test_report_to_image_table_has_judge_rows_beside_real_image_references(judges, split, tmp_path, noise):
    _, heldout = split
    judges.save(tmp_path / "judges")
    config = EvaluationConfig(
        output_dir=str(tmp_path), judges=str(tmp_path / "judges"), image_metrics=True, progress=False
    )
    results = EvaluationResults(summary={})
    evaluate_text_to_image(_EchoPipe(heldout, noise), None, heldout, config, results, tmp_path)
    image = results.summary["image"]
    assert image["n"] == len(heldout)
    if noise:
        assert image["modality_recognised"] < image["modality_accuracy_real"] - 0.3
        assert image["fid_judge"] > 5 * image["fid_judge_floor"]
    else:
        assert image["modality_recognised"] == image["modality_accuracy_real"]
        assert image["finding_recognised"] == image["finding_accuracy_real"]
        assert image["fid_judge"] == pytest.approx(image["fid_judge_floor"])
    text = results_to_markdown(results.summary)
    for row in (
        "modality recognised %",
        "finding recognised %",
        "FID, judge features",
        "KID, judge features",
    ):
        assert f"| {row}" in text
    assert "| report-to-image (n = " in text and "real images (reference / floor)" in text
    assert f"judges from {tmp_path / 'judges'}" in text


class _StubTokenizer:
    """A VQ tokenizer stand-in: `lossless` decodes what it encoded, otherwise every image decodes to grey."""

    image_size, device, dtype = 32, torch.device("cpu"), torch.float32

    def __init__(self, lossless: bool):
        self.lossless = lossless

    def encode(self, pixels):
        return pixels

    def decode(self, codes):
        return codes if self.lossless else torch.zeros_like(codes)


@pytest.mark.parametrize("lossless", [True, False])
def test_report_to_image_states_the_tokenizers_ceiling_from_reconstructed_real_images(
    judges, split, tmp_path, lossless
):
    _, heldout = split
    judges.save(tmp_path / "judges")
    config = EvaluationConfig(output_dir=str(tmp_path), judges=str(tmp_path / "judges"), progress=False)
    results = EvaluationResults(summary={})
    processor = SimpleNamespace(image_tokenizer=_StubTokenizer(lossless))
    evaluate_text_to_image(_EchoPipe(heldout, noise=True), processor, heldout, config, results, tmp_path)
    image = results.summary["image"]
    if lossless:  # a tokenizer that loses nothing: its ceiling is the judges' accuracy on the real images
        assert image["modality_recognised_reconstructed"] == image["modality_accuracy_real"]
        assert image["finding_recognised_reconstructed"] == image["finding_accuracy_real"]
    else:  # grey for every image: the judges recognise at most the share of the one label they give grey
        assert image["modality_recognised_reconstructed"] <= 0.5 < image["modality_accuracy_real"]
    text = results_to_markdown(results.summary)
    assert "real images through the VQ tokenizer (ceiling)" in text
    ceiling = f"{100 * image['modality_recognised_reconstructed']:.1f} %"
    assert any(line.startswith("| modality recognised %") and ceiling in line for line in text.splitlines())


def test_evaluation_trains_judges_on_the_training_split_and_caches_them(tmp_path):
    judges, note = judges_for_evaluation(None, None, None, tmp_path, train=True)
    assert judges is None and "hf-meddiff judges train" in note
    judges, note = judges_for_evaluation(None, None, None, tmp_path, train=False)
    assert judges is None and "skipped" in note
    judges, note = judges_for_evaluation(None, "medphantom", None, tmp_path, num_cases=40, progress=False)
    assert judges is not None and "trained on the train split" in note
    assert (tmp_path / "judges" / "modality" / "model.safetensors").is_file()
    again, note = judges_for_evaluation(None, "medphantom", None, tmp_path, num_cases=40, progress=False)
    assert "cached" in note and again.modality.labels == judges.modality.labels


def test_judges_train_command_writes_judges_and_heldout_accuracy(tmp_path, capsys):
    from hf_meddiff.cli import main
    from hf_meddiff.evaluation import save_canonical

    save_canonical(
        make_phantom_dataset(60, seed=1, image_size=32, modalities=("ct", "oct")), tmp_path / "data"
    )
    out = tmp_path / "judges"
    status = main(
        ["judges", "train", "--data", str(tmp_path / "data"), "--output_dir", str(out), "--epochs", "1",
         "--no_progress"]
    )  # fmt: skip
    assert status == 0
    info = json.loads(capsys.readouterr().out)
    assert info["output_dir"] == str(out) and 0 <= info["modality"]["heldout_accuracy"] <= 1
    assert ImageJudges.load(out).modality.labels == ["ct", "oct"]
    assert main(["judges", "fit"]) == 2


def test_judges_help_lists_the_training_options_without_importing_torch(capsys):
    import subprocess
    import sys

    from hf_meddiff.cli import main

    assert main(["judges", "--help"]) == 0
    assert "hf-meddiff judges train" in capsys.readouterr().out
    code = (
        "import sys\nfrom hf_meddiff.cli import main\ntry:\n    main(['judges', 'train', '--help'])\n"
        "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'help imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "--max_train_samples" in result.stdout and "--num_threads" in result.stdout


@pytest.mark.parametrize("module", ["hf_meddiff.metrics.judges", "hf_meddiff.evaluation.judges"])
def test_docstring_examples_run(module):
    import doctest
    import importlib
    import re

    class FenceParser(doctest.DocTestParser):
        def parse(self, string, name="<string>"):
            return super().parse(re.sub(r"^\s*```\w*\s*$", "", string, flags=re.M), name)

    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(parser=FenceParser()).find(importlib.import_module(module)):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_each_judge_sees_real_images_at_its_own_size(judges, split, tmp_path):
    from hf_meddiff.metrics.judges import JudgeConfig

    _, heldout = split
    small_modality = ImageJudge(JudgeConfig("modality", list(MODALITIES), image_size=16)).eval()
    ImageJudges(small_modality, judges.finding).save(tmp_path / "judges")
    config = EvaluationConfig(
        output_dir=str(tmp_path), judges=str(tmp_path / "judges"), image_metrics=True, progress=False
    )
    results = EvaluationResults(summary={})
    evaluate_text_to_image(_EchoPipe(heldout), None, heldout, config, results, tmp_path)
    expected = judges.finding.accuracy(heldout["image"], finding_labels(heldout))
    assert results.summary["image"]["finding_accuracy_real"] == pytest.approx(expected)
