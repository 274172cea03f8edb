"""Model-based rewards for text-to-image RL (DDPO): callable classes that hold a model.

Every reward is called as `reward(images, prompts, **metadata) -> list[float]`, where `images` is a float
tensor `[B, 3, H, W]` in [0, 1] (or a list of PIL images), `prompts` a list of B strings and `metadata` the
extra per-sample columns the trainer passes (lists of length B, e.g. `attributes`, `boxes`). They run under
`torch.no_grad()` and process the whole batch at once.

- `CLIPScoreReward`: cosine similarity of image and prompt under any transformers CLIP model.
- `OpenCLIPScoreReward`: the same through open_clip (BiomedCLIP-style models), when open_clip is installed.
- `AttributeClassifierReward`: fraction (or mean probability) of the prompt's attributes that a multi-label
  image classifier recognises in the image.
- `RegionReward`: a base reward applied to the crops of the boxes named in the prompt.
- `DescriptionCycleReward`: a MedDiff model describes the image; the description is compared with the prompt.

Example:

```python
>>> import torch
>>> from hf_meddiff.trainer.ddpo.tiny import build_attribute_classifier
>>> from hf_meddiff.rewards.image_rewards import AttributeClassifierReward
>>> reward = AttributeClassifierReward(build_attribute_classifier(["melanoma", "nevus", "severe"]))
>>> scores = reward(torch.rand(2, 3, 32, 32), ["dermoscopy image: melanoma, severe", "dermoscopy image: nevus"])
>>> len(scores), all(0.0 <= s <= 1.0 for s in scores)
(2, True)
```
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..constants import BOX_SCALE
from ..formatting import BOX_PATTERN

__all__ = [
    "AttributeClassifierReward",
    "CLIPScoreReward",
    "DescriptionCycleReward",
    "OpenCLIPScoreReward",
    "RegionReward",
    "find_attributes",
]


def _to_tensor(images: torch.Tensor | Sequence[Image.Image]) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(
                f"Image rewards take images [B, C, H, W]; got a tensor of shape {tuple(images.shape)}."
            )
        images = images.detach().float()
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def _to_uint8_list(images: torch.Tensor) -> list[np.ndarray]:
    return [(img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy() for img in images]


def _device(module: torch.nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_batch(name: str, images: torch.Tensor, prompts: Sequence[str]) -> None:
    if len(images) != len(prompts):
        raise ValueError(
            f"{name} got {len(images)} images but {len(prompts)} prompts; pass one prompt per image."
        )


def find_attributes(prompt: str, attributes: Sequence[str]) -> list[str]:
    """The attribute names that occur in `prompt` as whole words (case-insensitive), longest first.

    >>> find_attributes("Dermoscopy image: melanoma, severe", ["severe", "melanoma", "nevus"])
    ['melanoma', 'severe']
    """
    found, text = [], prompt.lower()
    for name in sorted(attributes, key=len, reverse=True):
        pattern = r"(?<![\w-])" + re.escape(name.lower()) + r"(?![\w-])"
        if re.search(pattern, text):
            found.append(name)
            text = re.sub(pattern, " ", text)
    return sorted(found, key=lambda a: prompt.lower().find(a.lower()))


class CLIPScoreReward:
    """Image-prompt alignment with a transformers CLIP model: `scale * cos(image_embedding, text_embedding)`.

    Args:
        model: a `CLIPModel` (or anything with `get_image_features` / `get_text_features`), or a Hub id / path
            (loaded with `CLIPModel.from_pretrained`; only when you pass one - nothing downloads by default).
        processor: the matching `CLIPProcessor` (loaded from `model` when it is a string).
        scale: multiplies the cosine (CLIPScore uses 2.5 with a clamp at 0; torchmetrics 100).
        clamp_negative: clamp negative cosines to 0 (CLIPScore's definition).

    Example:

    ```python
    >>> import torch
    >>> from hf_meddiff.trainer.ddpo.tiny import build_tiny_clip_model
    >>> model, processor = build_tiny_clip_model()
    >>> reward = CLIPScoreReward(model, processor)
    >>> len(reward(torch.rand(2, 3, 32, 32), ["melanoma", "nevus"]))
    2
    ```
    """

    def __init__(self, model: Any, processor: Any = None, scale: float = 1.0, clamp_negative: bool = False):
        if isinstance(model, str):
            from transformers import CLIPModel, CLIPProcessor

            processor = processor or CLIPProcessor.from_pretrained(model)
            model = CLIPModel.from_pretrained(model)
        if processor is None:
            raise ValueError("CLIPScoreReward needs the model's processor (`processor=CLIPProcessor...`).")
        self.model, self.processor = model.eval(), processor
        self.scale, self.clamp_negative = scale, clamp_negative
        self.__name__ = "clip_score"

    @staticmethod
    def _pooled(output: Any) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.no_grad()
    def __call__(self, images, prompts: Sequence[str], **kwargs) -> list[float]:
        images = _to_tensor(images)
        _check_batch("CLIPScoreReward", images, prompts)
        device = _device(self.model)
        inputs = self.processor(
            text=list(prompts),
            images=_to_uint8_list(images),
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        image_features = self._pooled(
            self.model.get_image_features(pixel_values=inputs["pixel_values"].to(device))
        )
        text_features = self._pooled(
            self.model.get_text_features(
                input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device)
            )
        )
        cosine = torch.nn.functional.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
        if self.clamp_negative:
            cosine = cosine.clamp(min=0)
        return (self.scale * cosine).cpu().tolist()


class OpenCLIPScoreReward:
    """Image-prompt alignment through open_clip, e.g. BiomedCLIP (`hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`).

    Args:
        model_name: an open_clip model name or `hf-hub:` id, loaded with
            `open_clip.create_model_from_pretrained` (needs `pip install open_clip_torch`). Ignored when `model`,
            `preprocess` and `tokenizer` are given.
        model / preprocess / tokenizer: an already-built open_clip model (with `encode_image` / `encode_text`),
            its image transform (PIL -> tensor `[3, h, w]`) and its tokenizer (list[str] -> LongTensor).
        scale: multiplies the cosine similarity.
    """

    def __init__(
        self,
        model_name: str | None = None,
        model: Any = None,
        preprocess: Callable | None = None,
        tokenizer: Callable | None = None,
        scale: float = 1.0,
        context_length: int | None = None,
    ):
        if model is None or preprocess is None or tokenizer is None:
            if model_name is None:
                raise ValueError(
                    "OpenCLIPScoreReward needs `model_name` or all of `model`, `preprocess`, `tokenizer`."
                )
            try:
                import open_clip
            except ImportError as err:
                raise ImportError(
                    "OpenCLIPScoreReward needs open_clip: `pip install open_clip_torch` (BiomedCLIP also needs "
                    "`timm`), or use CLIPScoreReward with a transformers CLIP model."
                ) from err
            model, preprocess = open_clip.create_model_from_pretrained(model_name)
            tokenizer = open_clip.get_tokenizer(model_name)
        self.model, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer
        self.scale, self.context_length = scale, context_length
        self.__name__ = "open_clip_score"

    @torch.no_grad()
    def __call__(self, images, prompts: Sequence[str], **kwargs) -> list[float]:
        images = _to_tensor(images)
        _check_batch("OpenCLIPScoreReward", images, prompts)
        device = _device(self.model)
        pixel_values = torch.stack([self.preprocess(Image.fromarray(a)) for a in _to_uint8_list(images)]).to(
            device
        )
        tokens = self.tokenizer(
            list(prompts), **({"context_length": self.context_length} if self.context_length else {})
        )
        image_features = self.model.encode_image(pixel_values)
        text_features = self.model.encode_text(tokens.to(device))
        cosine = torch.nn.functional.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
        return (self.scale * cosine).cpu().tolist()


class AttributeClassifierReward:
    """The share of a prompt's attributes (diagnosis, severity, artefacts, …) that a classifier sees in the image.

    The classifier is multi-label: `model(pixel_values=2 * images - 1).logits` `[B, K]`, one sigmoid per
    attribute named in `model.config.id2label` (e.g. `hf_meddiff.trainer.ddpo.tiny.build_attribute_classifier`).
    A sample's attributes are its `attributes` metadata when the trainer passes one, else the attribute
    names found in its prompt (`find_attributes`).

    Args:
        model: the classifier (a transformers image-classification model or any module returning logits).
        attributes: attribute names in logit order (default: `model.config.id2label`).
        mode: `"probability"` - mean sigmoid probability of the prompt's attributes (smooth, the default for
            RL); `"fraction"` - fraction with probability above `threshold`.
        threshold: decision threshold for `"fraction"`.
        exclusive_groups: groups of mutually exclusive attributes (e.g. diagnoses); an attribute's score is
            multiplied by one minus the highest probability of the other members of its group, so an image that
            looks like every diagnosis is not rewarded for each.
        image_size: resize images to this side before the classifier (default: keep).
        no_attribute_value: reward for a prompt that names no known attribute.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        attributes: Sequence[str] | None = None,
        mode: str = "probability",
        threshold: float = 0.5,
        exclusive_groups: Sequence[Sequence[str]] = (),
        image_size: int | None = None,
        no_attribute_value: float = 0.0,
    ):
        if mode not in ("probability", "fraction"):
            raise ValueError(f"mode must be 'probability' or 'fraction', got {mode!r}.")
        if attributes is None:
            id2label = getattr(getattr(model, "config", None), "id2label", None)
            if not id2label:
                raise ValueError("Pass `attributes=` (the model has no config.id2label).")
            attributes = [id2label[i] for i in sorted(int(k) for k in id2label)]
        self.model = model.eval()
        self.attributes = list(attributes)
        self.index = {a: i for i, a in enumerate(self.attributes)}
        unknown = [a for group in exclusive_groups for a in group if a not in self.index]
        if unknown:
            raise ValueError(f"exclusive_groups name unknown attributes {unknown}; known: {self.attributes}.")
        self.groups = [list(g) for g in exclusive_groups]
        self.mode, self.threshold = mode, threshold
        self.image_size, self.no_attribute_value = image_size, no_attribute_value
        self.__name__ = "attribute_classifier"

    @torch.no_grad()
    def probabilities(self, images) -> torch.Tensor:
        """Sigmoid probabilities `[B, K]` of every attribute."""
        images = _to_tensor(images).to(_device(self.model))
        if self.image_size and images.shape[-1] != self.image_size:
            images = torch.nn.functional.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", antialias=True
            )
        out = self.model(pixel_values=2 * images - 1)
        logits = out.logits if hasattr(out, "logits") else out
        return torch.sigmoid(logits.float()).cpu()

    @torch.no_grad()
    def __call__(
        self, images, prompts: Sequence[str], attributes: Sequence[Sequence[str]] | None = None, **kwargs
    ) -> list[float]:
        images = _to_tensor(images)
        _check_batch("AttributeClassifierReward", images, prompts)
        probs = self.probabilities(images)
        scores = []
        for b, prompt in enumerate(prompts):
            wanted = (
                list(attributes[b]) if attributes is not None else find_attributes(prompt, self.attributes)
            )
            wanted = [a for a in wanted if a in self.index]
            if not wanted:
                scores.append(float(self.no_attribute_value))
                continue
            values = []
            for name in wanted:
                p = probs[b, self.index[name]]
                for group in self.groups:
                    if name in group:
                        others = [probs[b, self.index[o]] for o in group if o != name]
                        if others:
                            p = p * (1 - max(others))
                values.append(float(p > self.threshold) if self.mode == "fraction" else float(p))
            scores.append(float(np.mean(values)))
        return scores


def _region_texts(prompt: str) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(label text, box) for each `<box>` in `prompt`; the label is the clause just before the box."""
    regions, last = [], 0
    for match in BOX_PATTERN.finditer(prompt):
        clause = re.split(r"[.;:,\n]", prompt[last : match.start()])[-1].strip()
        clause = re.sub(r"\b(at|in|on|with)$", "", clause).strip()
        regions.append((clause or prompt[: match.start()].strip(), tuple(int(g) for g in match.groups())))
        last = match.end()
    return regions


class RegionReward:
    """A base reward on the crops of the boxes a prompt names: region-level alignment.

    Boxes come from the `boxes` metadata (canonical `[{label, bbox}]`, 0..999 xyxy) when given, else from the
    `<box>[x0,y0,x1,y1]</box>` spans of the prompt, each paired with the clause before it
    (`"melanoma <box>[100,100,400,400]</box>"` -> `"melanoma"`). Each crop is resized to the image size and
    scored by `base_reward(crops, region_texts)`; a sample's reward is the mean over its regions.

    Args:
        base_reward: any image reward (`CLIPScoreReward`, `AttributeClassifierReward`, …).
        text_template: formats the region text, e.g. `"dermoscopy image: {label}"`.
        no_box: `"image"` - score the whole image with the prompt when there is no box; or a float value.

    Example:

    ```python
    >>> import torch
    >>> redness = lambda images, prompts, **kw: images[:, 0].mean(dim=(1, 2)).tolist()
    >>> images = torch.zeros(1, 3, 8, 8); images[0, 0, :4, :4] = 1.0
    >>> RegionReward(redness)(images, ["lesion <box>[0,0,499,499]</box>"])
    [1.0]
    ```
    """

    def __init__(self, base_reward: Callable, text_template: str = "{label}", no_box: str | float = "image"):
        self.base_reward, self.text_template, self.no_box = base_reward, text_template, no_box
        self.__name__ = f"region_{getattr(base_reward, '__name__', type(base_reward).__name__)}"

    @torch.no_grad()
    def __call__(
        self, images, prompts: Sequence[str], boxes: Sequence[Sequence[dict]] | None = None, **kwargs
    ) -> list[float]:
        images = _to_tensor(images)
        _check_batch("RegionReward", images, prompts)
        height, width = images.shape[-2:]
        crops, texts, owners = [], [], []
        whole: list[int] = []
        for b, prompt in enumerate(prompts):
            if boxes is not None and boxes[b]:
                regions = [(box["label"], tuple(box["bbox"])) for box in boxes[b]]
            else:
                regions = _region_texts(prompt)
            if not regions:
                whole.append(b)
                continue
            for label, (x0, y0, x1, y1) in regions:
                px0, px1 = int(x0 / BOX_SCALE * width), int(np.ceil(x1 / BOX_SCALE * width))
                py0, py1 = int(y0 / BOX_SCALE * height), int(np.ceil(y1 / BOX_SCALE * height))
                px1, py1 = max(px1, px0 + 1), max(py1, py0 + 1)
                crop = images[b : b + 1, :, py0:py1, px0:px1]
                crops.append(
                    torch.nn.functional.interpolate(
                        crop, size=(height, width), mode="bilinear", align_corners=False
                    )
                )
                texts.append(self.text_template.format(label=label))
                owners.append(b)
        scores = np.full(len(prompts), np.nan)
        if crops:
            values = np.asarray(self.base_reward(torch.cat(crops), texts), dtype=np.float64)
            owners_arr = np.asarray(owners)
            for b in set(owners):
                scores[b] = values[owners_arr == b].mean()
        if whole:
            if self.no_box == "image":
                values = self.base_reward(images[whole], [prompts[b] for b in whole])
                scores[whole] = np.asarray(values, dtype=np.float64)
            else:
                scores[whole] = float(self.no_box)
        return scores.tolist()


_WORD = re.compile(r"[a-z0-9]+")


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-words F1 between two texts (lower-cased alphanumeric tokens).

    >>> round(token_f1("melanoma on the trunk", "dermoscopy image: melanoma"), 3)
    0.286
    """
    pred, ref = _WORD.findall(prediction.lower()), _WORD.findall(reference.lower())
    if not pred or not ref:
        return 0.0
    common = sum(min(pred.count(w), ref.count(w)) for w in set(pred))
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class DescriptionCycleReward:
    """Cycle reward: a MedDiff model describes the generated image and the description is compared with the prompt.

    Args:
        pipeline: a `hf_meddiff.MedDiffPipeline` (`pipe(image=img, question=q).text`), or any callable with
            that signature returning an object with `.text` (a string or list of strings).
        question: what the describer is asked.
        similarity: `f(description, prompt) -> float` (default: bag-of-words F1, `token_f1`). When the trainer
            passes `attributes` metadata, the reward is instead the fraction of those attributes mentioned.
        batched: call the pipeline once with lists of images/questions (else one image at a time).
    """

    def __init__(
        self,
        pipeline: Any,
        question: str = "Describe the findings in this image.",
        similarity: Callable[[str, str], float] = token_f1,
        batched: bool = True,
    ):
        self.pipeline, self.question, self.similarity, self.batched = pipeline, question, similarity, batched
        self.__name__ = "description_cycle"

    @torch.no_grad()
    def describe(self, images) -> list[str]:
        """The pipeline's description of each image."""
        pil = [Image.fromarray(a) for a in _to_uint8_list(_to_tensor(images))]
        if self.batched:
            text = self.pipeline(image=pil, question=[self.question] * len(pil)).text
            texts = [text] if isinstance(text, str) else list(text)
        else:
            texts = []
            for image in pil:
                text = self.pipeline(image=image, question=self.question).text
                texts.append(text if isinstance(text, str) else text[0])
        if len(texts) != len(pil):
            raise ValueError(f"The describer returned {len(texts)} texts for {len(pil)} images.")
        return texts

    @torch.no_grad()
    def __call__(
        self, images, prompts: Sequence[str], attributes: Sequence[Sequence[str]] | None = None, **kwargs
    ) -> list[float]:
        images = _to_tensor(images)
        _check_batch("DescriptionCycleReward", images, prompts)
        descriptions = self.describe(images)
        if attributes is not None:
            return [
                float(np.mean([bool(find_attributes(d, [a])) for a in attrs])) if attrs else 0.0
                for d, attrs in zip(descriptions, attributes)
            ]
        return [float(self.similarity(d, p)) for d, p in zip(descriptions, prompts)]
