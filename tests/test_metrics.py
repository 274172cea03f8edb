"""Specifications of the metrics: hand-computed values, pycocoevalcap agreement, offline `evaluate` modules."""

import doctest
import importlib
import math
import os
import random
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_meddiff.metrics import (
    MODULE_NAMES,
    FindingLabeler,
    answer_length_distribution,
    bleu_scores,
    cider_score,
    clinical_efficacy_scores,
    grounding_scores,
    image_generation_scores,
    meteor_available,
    module_path,
    normalize_report,
    report_generation_scores,
    rouge_l_score,
    vqa_accuracy,
)

# --- report generation -------------------------------------------------------------------------------------


def test_report_scores_hand_computed():
    # hyp 4 tokens, ref 6, every n-gram of the hyp is in the ref: BLEU-n = BP = exp(1 - 6/4)
    scores = report_generation_scores(["The heart is normal"], ["the heart is normal in size"], meteor=False)
    for k in range(1, 5):
        assert scores[f"bleu_{k}"] == pytest.approx(math.exp(-0.5), abs=1e-9)
    r = 4 / 6
    assert scores["rouge_l"] == pytest.approx(2.44 * r / (r + 1.44))
    assert scores["cider"] == 0.0  # one document: idf = log(1) - log(1) = 0
    assert "meteor" not in scores


def test_cider_hand_computed():
    # 2 documents; "a b" vs "a b": unigram and bigram cosines are 1, 3/4-grams empty -> mean 0.5 * 10 = 5
    # "c d" vs "e f": nothing shared -> 0; corpus mean 2.5
    mean, each = cider_score(["a b", "c d"], ["a b", "e f"])
    assert each == pytest.approx([5.0, 0.0])
    assert mean == pytest.approx(2.5)


def test_r2gen_preprocessing():
    assert normalize_report("The heart, lungs: CLEAR.", r2gen=True) == "the heart lungs clear"
    assert normalize_report("a b c d", max_words=2) == "a b"
    plain = report_generation_scores(["heart normal."], ["heart normal"], meteor=False)
    cleaned = report_generation_scores(["heart normal."], ["heart normal"], r2gen=True, meteor=False)
    assert plain["bleu_1"] < 1.0 and cleaned["bleu_1"] == pytest.approx(1.0)


def test_report_scores_refuse_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        report_generation_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        report_generation_scores([], [])


def _random_corpus(rng, vocab, n):
    def sentence():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 20)))

    return [sentence() for _ in range(n)], [[sentence() for _ in range(rng.randint(1, 3))] for _ in range(n)]


def test_bleu_rouge_cider_equal_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    rng = random.Random(0)
    vocab = [
        "the",
        "heart",
        "is",
        "normal",
        "size",
        "no",
        "acute",
        "findings",
        "lungs",
        "are",
        "clear",
        "pleural",
        "effusion",
        "mild",
        "cardiomegaly",
        ".",
    ]
    for trial in range(8):
        hyps, refs = _random_corpus(rng, vocab, rng.randint(1, 25))
        gts = {i: r for i, r in enumerate(refs)}
        res = {i: [h] for i, h in enumerate(hyps)}
        coco_bleu, coco_bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
        ours_bleu, ours_bleu_each = bleu_scores(hyps, refs)
        np.testing.assert_allclose(ours_bleu, coco_bleu, atol=1e-6, rtol=0, err_msg=f"trial {trial}")
        np.testing.assert_allclose(ours_bleu_each, coco_bleu_each, atol=1e-6, rtol=0)
        coco_rouge, coco_rouge_each = Rouge().compute_score(gts, res)
        ours_rouge, ours_rouge_each = rouge_l_score(hyps, refs)
        assert ours_rouge == pytest.approx(coco_rouge, abs=1e-6)
        np.testing.assert_allclose(ours_rouge_each, coco_rouge_each, atol=1e-6, rtol=0)
        coco_cider, coco_cider_each = Cider().compute_score(gts, res)
        ours_cider, ours_cider_each = cider_score(hyps, refs)
        assert ours_cider == pytest.approx(coco_cider, abs=1e-6)
        np.testing.assert_allclose(ours_cider_each, coco_cider_each, atol=1e-6, rtol=0)


def test_report_generation_scores_equal_pycocoevalcap_on_lowercased_inputs():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    predictions = ["The heart is normal.", "No  acute cardiopulmonary process", "Mild cardiomegaly ."]
    references = ["The heart size is normal .", "No acute disease", "Cardiomegaly is mild ."]
    scores = report_generation_scores(predictions, references, meteor=False)
    gts = {i: [" ".join(r.lower().split())] for i, r in enumerate(references)}
    res = {i: [" ".join(p.lower().split())] for i, p in enumerate(predictions)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        assert scores[f"bleu_{k + 1}"] == pytest.approx(bleu[k], abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-6)
    assert scores["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not meteor_available(), reason="METEOR needs java and pycocoevalcap's jar")
@pytest.mark.skipif(
    os.environ.get("HF_MEDDIFF_TEST_METEOR") != "1" and os.environ.get("CI", "").lower() not in ("1", "true"),
    reason="starting METEOR's JVM takes 25-35 s on 2 cores; runs in CI, or set HF_MEDDIFF_TEST_METEOR=1",
)
def test_meteor_equals_pycocoevalcap():
    # Reference values from pycocoevalcap 1.2's own wrapper on this input (one JVM start costs ~10-25 s, so the
    # reference is recorded rather than recomputed):
    #   Meteor().compute_score({i: r for i, r in enumerate(references)}, {i: [p] for i, p in enumerate(predictions)})
    predictions = ["the heart is normal", "no acute disease seen", "mild cardiomegaly"]
    references = [
        ["the heart size is normal"],
        ["no acute disease", "no acute process"],
        ["cardiomegaly is mild"],
    ]
    coco, coco_each = 0.3942644605526874, [0.3622139617230904, 0.48704502558483637, 0.35036496350364965]
    scores = report_generation_scores(predictions, references, return_per_sample=True)
    assert scores["meteor"] == pytest.approx(coco, abs=1e-6)
    np.testing.assert_allclose(scores["per_sample"]["meteor"], coco_each, atol=1e-6)


def test_meteor_is_skipped_with_a_note_without_java(monkeypatch):
    import hf_meddiff.metrics.report_generation as rg

    monkeypatch.setattr(rg.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="METEOR skipped"):
        scores = report_generation_scores(["a b"], ["a b"])
    assert "meteor" not in scores and "java" in scores["meteor_note"]
    with pytest.raises(RuntimeError, match="java"):
        report_generation_scores(["a b"], ["a b"], meteor=True)


# --- evaluate modules --------------------------------------------------------------------------------------


def test_every_evaluate_module_loads_offline_and_computes(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    inputs = {
        "report_generation": dict(
            predictions=["no acute findings"], references=[["no acute findings"]], meteor=False
        ),
        "clinical_efficacy": dict(predictions=["Cardiomegaly."], references=["Cardiomegaly. Effusion."]),
        "vqa_accuracy": dict(predictions=["(B)", "yes"], references=["B", "no"], options=[["x", "y"], []]),
        "grounding": dict(predictions=["<box>[0,0,10,10]</box>"], references=[[[5, 0, 15, 10]]]),
    }
    expected = {
        "report_generation": ("bleu_1", 1.0),
        "clinical_efficacy": ("recall", 0.5),
        "vqa_accuracy": ("accuracy", 0.5),
        "grounding": ("mean_iou", 1 / 3),
    }
    assert set(inputs) == set(MODULE_NAMES)
    for name in MODULE_NAMES:
        metric = evaluate.load(module_path(name))
        result = metric.compute(**inputs[name])
        key, value = expected[name]
        assert result[key] == pytest.approx(value, abs=1e-6), name
    with pytest.raises(ValueError, match="available"):
        module_path("bleu")


# --- clinical efficacy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (
            "Mild cardiomegaly. No pleural effusion or pneumothorax.",
            {"Cardiomegaly": 1, "Pleural Effusion": 0, "Pneumothorax": 0},
        ),
        (
            "Heart size is normal. Lungs are clear. No focal consolidation, effusion, or pneumothorax.",
            {
                "Cardiomegaly": 0,
                "Lung Opacity": 0,
                "Consolidation": 0,
                "Pleural Effusion": 0,
                "Pneumothorax": 0,
                "No Finding": 1,
            },
        ),
        (
            "Possible right lower lobe pneumonia. Pneumothorax is not seen.",
            {"Pneumonia": -1, "Pneumothorax": 0},
        ),
        (
            "Left basilar opacity, atelectasis versus pneumonia.",
            {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1},
        ),
        ("No effusion but there is a small pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 1}),
        ("Endotracheal tube in place. No acute process.", {"Support Devices": 1, "No Finding": 1}),
        ("The pleural effusion has resolved.", {"Pleural Effusion": 0, "No Finding": 1}),
        ("", {"No Finding": 1}),
        ("We can not exclude pneumonia.", {"Pneumonia": -1}),
        ("Pneumothorax is not ruled out.", {"Pneumothorax": -1}),
    ],
)
def test_chexpert_labeller(report, expected):
    labels = FindingLabeler.chexpert()(report)
    assert len(labels) == 14
    assert {k: v for k, v in labels.items() if v is not None} == expected


def test_labeller_vocabulary_is_pluggable_and_knows_medphantom():
    labeler = FindingLabeler.from_names(
        ["nodule", "pleural_effusion"], synonyms={"nodule": ["spot"]}, no_finding=None
    )
    assert labeler("Two nodules. A spot. No pleural effusions.") == {"nodule": 1, "pleural_effusion": 0}
    phantom = FindingLabeler.medphantom()
    assert "cotton wool spot" in phantom.names and "tumor cluster" in phantom.names
    labels = phantom("A tumor cluster is present in the lower right. No cyst is seen.")
    assert labels["tumor cluster"] == 1 and labels["tumor"] is None and labels["cyst"] == 0


def test_labeller_agrees_with_medphantom_findings():
    from hf_meddiff.data.phantom import make_phantom_dataset

    rows = make_phantom_dataset(num_cases=40, seed=3)
    labeler = FindingLabeler.medphantom()
    for row in rows:
        assert labeler.positives(row["report"]) == set(row["findings"]) or (
            not row["findings"] and labeler.positives(row["report"]) == {"No Finding"}
        ), row["report"]


def test_clinical_efficacy_hand_computed():
    predictions = ["Cardiomegaly. Small left pleural effusion.", "No acute process.", "Pneumothorax."]
    references = ["Cardiomegaly without pleural effusion.", "Edema.", "Pneumothorax."]
    scores = clinical_efficacy_scores(predictions, references)
    # positives: pred {Cm, Eff}, {NoF}, {Ptx}; gold {Cm}, {Edema}, {Ptx}
    # TP = Cm + Ptx = 2, FP = Eff + NoF = 2, FN = Edema = 1
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # example-based F1: 2/3, 0, 1
    assert scores["example_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert scores["per_finding"]["Cardiomegaly"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    # macro over the 5 findings that occur: Cm 1, Eff 0, NoF 0, Edema 0, Ptx 1
    assert scores["macro_f1"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        clinical_efficacy_scores(["a"], ["a", "b"])


# --- VQA ----------------------------------------------------------------------------------------------------


def test_vqa_accuracy_tables_hand_computed():
    predictions = ["B", "<answer>(A)</answer>", "yes", "no", "left lobe", "C"]
    references = ["B", "B", "yes", "yes", "left lobe", "C"]
    options = [["x", "y"], ["x", "y"], [], [], [], ["p", "q", "r"]]
    modalities = ["ct", "ct", "mri", "mri", "xray", "xray"]
    qtypes = ["diagnosis", "diagnosis", "open", "open", "location", "diagnosis"]
    trained_on = ["ct", "mri", "ct", "mri", "ct", "mri"]
    result = vqa_accuracy(
        predictions,
        references,
        options=options,
        modalities=modalities,
        question_types=qtypes,
        train_modalities=trained_on,
    )
    assert result["accuracy"] == pytest.approx(4 / 6) and result["n"] == 6
    assert result["per_modality"] == {"ct": 0.5, "mri": 0.5, "xray": 1.0}
    assert result["per_question_type"] == {"diagnosis": pytest.approx(2 / 3), "location": 1.0, "open": 0.5}
    assert result["cross_modality"] == {
        "ct": {"ct": 1.0, "mri": 1.0, "xray": 1.0},
        "mri": {"ct": 0.0, "mri": 0.0, "xray": 1.0},
    }
    with pytest.raises(ValueError, match="`modalities` has 1 entries"):
        vqa_accuracy(["a", "b"], ["a", "b"], modalities=["ct"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        vqa_accuracy(["a", "b"], ["a"])


def test_answer_length_distribution_counts_per_bin():
    predictions = ["B", "one two three", "<think>a b c d e f g h i j</think><answer>B</answer>", "x " * 40]
    result = answer_length_distribution(
        predictions, correct=[True, False, True, True], bins=(0, 4, 16, math.inf)
    )
    # lengths 1, 3, 11, 40
    assert result["bins"] == ["0-4", "4-16", "16-inf"]
    assert result["total"] == [2, 1, 1] and result["correct"] == [1, 1, 1]
    assert result["accuracy"] == [0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="increasing"):
        answer_length_distribution(["a"], bins=(4, 2))


# --- grounding ----------------------------------------------------------------------------------------------


def test_grounding_scores_hand_computed():
    predictions = ["<box>[0,0,10,10]</box><box>[100,100,200,200]</box>", "<box>[5,0,15,10]</box>", "nothing"]
    references = [
        [{"label": "a", "bbox": [0, 0, 10, 10]}],
        [[0, 0, 10, 10]],
        [[0, 0, 10, 10], [20, 20, 30, 30]],
    ]
    scores = grounding_scores(predictions, references)
    # IoUs: 1 (and an extra box), 1/3 (miss at 0.5), nothing -> mean over 4 reference boxes
    assert scores["mean_iou"] == pytest.approx((1 + 1 / 3) / 4)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 4)
    assert grounding_scores(predictions, references, iou_threshold=0.3)["num_hits"] == 2
    with pytest.raises(ValueError, match="Reference 0, box 0"):
        grounding_scores(["x"], [[[10, 10, 0, 0]]])
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        grounding_scores(["x"], [[], []])


# --- images -------------------------------------------------------------------------------------------------


class _MeanStd(torch.nn.Module):
    """A tiny deterministic feature extractor: per-channel mean and std on a 2x2 grid (24 features)."""

    def forward(self, x):
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return torch.cat([pooled, x.flatten(2).std(-1)], dim=1)


def _frechet(a, b):
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _kid(a, b):
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    m = len(a)
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def test_fid_and_kid_match_their_formulas_with_a_custom_extractor():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 16, 16, generator=generator)
    fake = (torch.rand(40, 3, 16, 16, generator=generator) * 0.7 + 0.2).clamp(0, 1)
    extractor = _MeanStd()
    scores = image_generation_scores(
        real, fake, feature_extractor=extractor, kid_subset_size=40, kid_subsets=1
    )
    fr, ff = extractor(real).double().numpy(), extractor(fake).double().numpy()
    assert scores["fid"] == pytest.approx(_frechet(fr, ff), rel=1e-3, abs=1e-6)
    assert scores["kid_mean"] == pytest.approx(_kid(fr, ff), rel=1e-4, abs=1e-8)
    same = image_generation_scores(real, real.clone(), feature_extractor=extractor)
    assert abs(same["fid"]) < 1e-4 and scores["fid"] > 10 * abs(same["fid"])


def test_image_scores_accept_pil_and_refuse_silent_downloads():
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)) for _ in range(6)]
    scores = image_generation_scores(images, images[::-1], feature_extractor=_MeanStd())
    assert abs(scores["fid"]) < 1e-4
    with pytest.raises((ImportError, FileNotFoundError), match="inception_weights|torch-fidelity"):
        image_generation_scores(images, images, feature_extractor="inception")
    with pytest.raises(ValueError, match="Nothing to compute"):
        image_generation_scores(images, images)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_generation_scores(
            torch.rand(4, 3, 8, 8) * 2 - 1, torch.rand(4, 3, 8, 8), feature_extractor=_MeanStd()
        )
    with pytest.raises(ValueError, match="NaN"):
        image_generation_scores(
            torch.full((4, 3, 8, 8), float("nan")), torch.rand(4, 3, 8, 8), feature_extractor=_MeanStd()
        )
    with pytest.raises(ValueError, match="at least 2"):
        image_generation_scores(torch.rand(1, 3, 8, 8), torch.rand(4, 3, 8, 8), feature_extractor=_MeanStd())


def _tiny_clip(tmp_path):
    import json

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=16)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        projection_dim=8,
    )
    return CLIPModel(config).eval(), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def test_clip_score_with_a_tiny_random_clip(tmp_path):
    model, processor = _tiny_clip(tmp_path)
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    prompts = ["chest x ray", "brain mri", "skin lesion"]
    scores = image_generation_scores(
        generated_images=images, prompts=prompts, clip_model=model, clip_processor=processor
    )
    from hf_meddiff.metrics import clip_score

    _, each = clip_score(images, prompts, model, processor)
    inputs = processor(
        text=prompts,
        images=[(i * 255).round().byte().permute(1, 2, 0).numpy() for i in images],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        img = model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    expected = (100 * torch.nn.functional.cosine_similarity(img, txt).clamp(min=0)).tolist()
    assert each == pytest.approx(expected, abs=1e-4)
    assert scores["clip_score"] == pytest.approx(sum(expected) / 3, abs=1e-4)
    with pytest.raises(ValueError, match="one text per image"):
        clip_score(images, prompts[:2], model, processor)


# --- docstring examples -------------------------------------------------------------------------------------


class _FenceParser(doctest.DocTestParser):
    """Docstring examples sit in ```python fences, as in TRL; drop the fence lines before parsing."""

    def parse(self, string, name="<string>"):
        return super().parse(re.sub(r"^\s*```\w*\s*$", "", string, flags=re.M), name)


@pytest.mark.parametrize(
    "module",
    [
        "hf_meddiff.metrics",
        "hf_meddiff.metrics.report_generation",
        "hf_meddiff.metrics.clinical",
        "hf_meddiff.metrics.vqa",
        "hf_meddiff.metrics.grounding",
        "hf_meddiff.metrics.image_generation",
        "hf_meddiff.rewards._utils",
        "hf_meddiff.rewards.accuracy_rewards",
        "hf_meddiff.rewards.format_rewards",
        "hf_meddiff.rewards.other_rewards",
        "hf_meddiff.rewards.grounding_rewards",
        "hf_meddiff.rewards.report_rewards",
        "hf_meddiff.rewards.composite",
    ],
)
def test_docstring_examples_run(module):
    finder = doctest.DocTestFinder(parser=_FenceParser())
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(importlib.import_module(module))
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


# --- arbitrary text -----------------------------------------------------------------------------------------

_texts = st.lists(
    st.text(max_size=60) | st.sampled_from(["no effusion", "<answer>B</answer>", "(C)", ""]),
    min_size=1,
    max_size=4,
)


@settings(max_examples=30, deadline=None)
@given(predictions=_texts, data=st.data())
def test_text_metrics_accept_any_strings(predictions, data):
    references = data.draw(
        st.lists(st.text(max_size=60), min_size=len(predictions), max_size=len(predictions))
    )
    scores = report_generation_scores(predictions, references, meteor=False)
    assert all(math.isfinite(v) and v >= 0 for v in scores.values())
    ce = clinical_efficacy_scores(predictions, references)
    assert 0.0 <= ce["f1"] <= 1.0
    assert (
        0.0
        <= vqa_accuracy(predictions, references, options=[["x", "y"]] * len(predictions))["accuracy"]
        <= 1.0
    )
    assert grounding_scores(predictions, [[]] * len(predictions))["mean_iou"] == 0.0
