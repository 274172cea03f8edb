"""MedDiffProcessor: image processor + text tokenizer + image tokenizer -> MedDiff token sequences.

Sequence layouts (docs/internals.md):

- understanding (vqa / report / reasoning):
  `<|bos|> <|mmu|> <|soi|> [g*g image ids] <|eoi|> <|user|> question <|assistant|> RESPONSE`
- text-to-image (t2i): `<|bos|> <|t2i|> <|user|> report <|assistant|> <|soi|> [g*g image ids] <|eoi|>`,
  the image ids being the RESPONSE.

A text RESPONSE is the target text + `<|eos|>` (optionally EOS-padded to `response_length`).

This file is copied into saved model folders (remote code): it imports only the standard library,
numpy, PIL, torch, transformers and its siblings.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import AutoTokenizer, BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_meddiff import MedDiffImageProcessor
from .image_tokenizer_meddiff import MedDiffImageTokenizer
from .tokens_meddiff import (
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    EOI_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SOI_TOKEN,
    TASK_TOKENS,
    TASKS,
    USER_TOKEN,
    format_options,
)

PROCESSOR_TASKS = TASKS  # the order of `task_ids`
IMAGE_TOKENIZER_SUBFOLDER = "image_tokenizer"
DEFAULT_REPORT_PROMPT = "Write the radiology report for this image."


class MedDiffProcessor(ProcessorMixin):
    r"""Builds MedDiff task sequences from images and text, and decodes mixed outputs.

    Args:
        image_processor (`MedDiffImageProcessor`): images (PIL / NumPy / torch / DICOM / NIfTI) -> pixel_values.
        tokenizer (`PreTrainedTokenizerFast`): the text tokenizer (special tokens at ids 0..16, see
            `hf_meddiff.text_tokenizer.train_text_tokenizer`).
        image_token_offset (`int`, *optional*): id of VQ code 0; defaults to `len(tokenizer)`.
        max_length (`int`, *optional*): the model's number of positions; longer sequences raise an error.
        image_tokenizer (`MedDiffImageTokenizer`, *optional*, keyword): the VQ codec. Without it, pass
            precomputed `image_ids` (VQ codes) instead of images. Saved to / loaded from `image_tokenizer/`.

    Example:

    ```python
    >>> from hf_meddiff import MedDiffImageTokenizer, MedDiffImageProcessor, MedDiffProcessor
    >>> from hf_meddiff.text_tokenizer import train_text_tokenizer
    >>> tok = train_text_tokenizer(["What is the modality? CT MRI X-ray"] * 8, vocab_size=300)
    >>> vq = MedDiffImageTokenizer.from_config_preset("tiny")
    >>> processor = MedDiffProcessor(MedDiffImageProcessor(size=32), tok, image_tokenizer=vq)
    >>> import numpy as np
    >>> batch = processor(images=[np.zeros((32, 32))], text=["What is the modality?"],
    ...                   options=[["CT", "MRI"]], responses=["A"], task="vqa")
    >>> batch["input_ids"].shape[0], int(batch["task_ids"][0])
    (1, 0)

    ```
    """

    valid_processor_kwargs = None

    def __init__(
        self,
        image_processor: MedDiffImageProcessor | None = None,
        tokenizer: Any = None,
        image_token_offset: int | None = None,
        max_length: int | None = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ):
        image_tokenizer = kwargs.pop("image_tokenizer", None)
        if image_processor is None:
            image_processor = MedDiffImageProcessor()
        if tokenizer is None:
            raise ValueError("MedDiffProcessor needs a text tokenizer (see hf_meddiff.text_tokenizer).")
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        missing = [t for t in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, MASK_TOKEN, SOI_TOKEN, EOI_TOKEN, USER_TOKEN,
                               ASSISTANT_TOKEN, *TASK_TOKENS.values()) if t not in tokenizer.get_vocab()]  # fmt: skip
        if missing:
            raise ValueError(
                f"The text tokenizer lacks the MedDiff special tokens {missing}; train one with "
                "hf_meddiff.text_tokenizer.train_text_tokenizer or add them with tokenizer.add_special_tokens."
            )
        self.image_token_offset = int(image_token_offset) if image_token_offset is not None else None
        self.max_length = int(max_length) if max_length is not None else None
        self.image_tokenizer = image_tokenizer
        self.image_tokenizer: MedDiffImageTokenizer | None
        if image_tokenizer is not None and image_tokenizer.image_size != image_processor.size:
            raise ValueError(
                f"The image processor resizes to {image_processor.size} px but the image tokenizer expects "
                f"{image_tokenizer.image_size} px; use MedDiffImageProcessor(size={image_tokenizer.image_size})."
            )

    # --- vocabulary ----------------------------------------------------------------------------------
    def _id(self, token: str) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(token))

    @property
    def text_vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def offset(self) -> int:
        """Id of VQ code 0 (`image_token_offset`, default `len(tokenizer)`)."""
        return self.image_token_offset if self.image_token_offset is not None else self.text_vocab_size

    @property
    def grid_size(self) -> int | None:
        return self.image_tokenizer.grid_size if self.image_tokenizer is not None else None

    @property
    def num_image_tokens(self) -> int | None:
        return self.image_tokenizer.num_image_tokens if self.image_tokenizer is not None else None

    def model_config_kwargs(self) -> dict[str, int]:
        """Vocabulary-layout fields for `MedDiffConfig.from_preset(name, **processor.model_config_kwargs())`."""
        if self.image_tokenizer is None:
            raise ValueError("model_config_kwargs needs the image tokenizer (codebook and grid sizes).")
        return {
            "text_vocab_size": self.text_vocab_size,
            "image_codebook_size": self.image_tokenizer.codebook_size,
            "image_grid_size": self.image_tokenizer.grid_size,
            "image_token_offset": self.offset,
            "mask_token_id": self._id(MASK_TOKEN),
            "pad_token_id": self._id(PAD_TOKEN),
            "bos_token_id": self._id(BOS_TOKEN),
            "eos_token_id": self._id(EOS_TOKEN),
            "soi_token_id": self._id(SOI_TOKEN),
            "eoi_token_id": self._id(EOI_TOKEN),
            "mmu_token_id": self._id(TASK_TOKENS["mmu"]),
            "t2i_token_id": self._id(TASK_TOKENS["t2i"]),
        }

    # --- images <-> codes --------------------------------------------------------------------------------
    def _require_image_tokenizer(self) -> MedDiffImageTokenizer:
        if self.image_tokenizer is None:
            raise ValueError(
                "This MedDiffProcessor has no image tokenizer: pass `image_tokenizer=` when building it, or give "
                "precomputed `image_ids` (VQ codes) instead of images."
            )
        return self.image_tokenizer

    @torch.no_grad()
    def encode_images(self, images: Any, batch_size: int = 64, **image_kwargs: Any) -> torch.LongTensor:
        """Images (one or a list) -> VQ codes LongTensor [B, g*g] (no offset); cache these as `image_ids`."""
        vq = self._require_image_tokenizer()
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        codes = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pixel_values = self.image_processor(chunk, return_tensors="pt", **image_kwargs)["pixel_values"]
            codes.append(vq.encode(pixel_values).cpu())
        return torch.cat(codes)

    def _image_codes(self, images: Any, image_ids: Any, batch: int, name: str) -> list[list[int]] | None:
        if images is not None and image_ids is not None:
            raise ValueError("Pass either `images` or precomputed `image_ids`, not both.")
        if images is None and image_ids is None:
            return None
        if image_ids is not None:
            codes = [list(map(int, torch.as_tensor(row).reshape(-1).tolist())) for row in image_ids]
        else:
            codes = self.encode_images(images).tolist()
        if len(codes) != batch:
            raise ValueError(f"Got {len(codes)} {name} for {batch} samples; give one per sample.")
        expected = self.num_image_tokens
        codebook = self.image_tokenizer.codebook_size if self.image_tokenizer is not None else None
        for i, row in enumerate(codes):
            if expected is not None and len(row) != expected:
                raise ValueError(
                    f"image_ids[{i}] has {len(row)} codes but the image tokenizer makes {expected} "
                    f"({self.grid_size}x{self.grid_size}) per image."
                )
            if row and (min(row) < 0 or (codebook is not None and max(row) >= codebook)):
                raise ValueError(
                    f"image_ids[{i}] holds values {min(row)}..{max(row)} outside the codebook 0..{codebook - 1}; "
                    "image_ids are VQ codes (as from encode_images), the processor adds image_token_offset."
                )
        return codes

    # --- sequence layouts ------------------------------------------------------------------------------
    def _control_ids(self) -> set[int]:
        """Ids of the tokens that shape a sequence (BOS/EOS/PAD/MASK, image and turn markers, task tokens)."""
        tokens = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, MASK_TOKEN, SOI_TOKEN, EOI_TOKEN, USER_TOKEN, ASSISTANT_TOKEN,
                  *TASK_TOKENS.values())  # fmt: skip
        return {self._id(t) for t in tokens}

    def _text_ids(self, text: str, index: int = 0, field: str = "text") -> list[int]:
        """User text -> token ids, always as text: a literal `<|mask|>`, `<|assistant|>`, `<|eos|>`, `<|soi|>` ...
        inside a question, report or answer is split into ordinary text tokens (`split_special_tokens=True`), so
        a dataset cannot steer the sequence layout; only the processor places control tokens. The reasoning and
        grounding tags (`<think>`, `<answer>`, `<box>` ...) stay single tokens: they are text, not layout."""
        if not text:
            return []
        if not isinstance(text, str):
            raise TypeError(
                f"Sample {index}: {field} must be a string, got {type(text).__name__} ({text!r:.80})."
            )
        ids = list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        control = self._control_ids().intersection(ids)
        if control:  # a tokenizer that ignores split_special_tokens: refuse rather than let the text steer
            names = sorted(self.tokenizer.convert_ids_to_tokens(sorted(control)))
            raise ValueError(
                f"Sample {index}: the {field} contains the control token(s) {names}, and this tokenizer does not "
                "split them into text. Remove them from the data (they are placed by the processor only)."
            )
        return ids

    def _response_ids(
        self, target: str, response_length: int | None, truncation: bool, index: int
    ) -> list[int]:
        eos = self._id(EOS_TOKEN)
        ids = self._text_ids(target, index, "response") + [eos]
        if response_length is None:
            return ids
        if len(ids) > response_length:
            if not truncation:
                raise ValueError(
                    f"Sample {index}: the response is {len(ids)} tokens (with EOS) but response_length is "
                    f"{response_length}; raise response_length or pass truncation=True."
                )
            ids = ids[: response_length - 1] + [eos]
        return ids + [eos] * (response_length - len(ids))

    def build_sequence(
        self,
        task: str,
        prompt_text: str,
        image_codes: list[int] | None,
        response: str | None,
        *,
        add_response: bool = True,
        response_length: int | None = None,
        truncation: bool = False,
        index: int = 0,
    ) -> tuple[list[int], list[bool]]:
        """One sample's token ids and response mask in the layout of `task` (see the module docstring).

        Understanding prompts without a response end at `<|assistant|>`; a t2i prompt without an image gets
        `g*g` `<|mask|>` tokens between `<|soi|>` and `<|eoi|>` (marked as response, to be generated)."""
        if task not in PROCESSOR_TASKS:
            raise ValueError(f"Unknown task {task!r} for sample {index}; use one of {PROCESSOR_TASKS}.")
        bos, soi, eoi = self._id(BOS_TOKEN), self._id(SOI_TOKEN), self._id(EOI_TOKEN)
        user, assistant = self._id(USER_TOKEN), self._id(ASSISTANT_TOKEN)
        if task == "t2i":
            text_ids = self._text_ids(prompt_text, index, "text")
            prompt = [bos, self._id(TASK_TOKENS["t2i"]), user, *text_ids, assistant, soi]
            if image_codes is None:
                if add_response:
                    raise ValueError(
                        f"Sample {index}: a t2i training sample needs its target image (or image_ids)."
                    )
                count = self._require_image_tokenizer().num_image_tokens
                body = [self._id(MASK_TOKEN)] * count
            else:
                body = [code + self.offset for code in image_codes]
            ids = prompt + body + [eoi]
            mask = [False] * len(prompt) + [True] * len(body) + [False]
            return ids, mask
        if image_codes is None:
            raise ValueError(f"Sample {index}: the {task!r} task needs an image (or image_ids).")
        prompt = [bos, self._id(TASK_TOKENS["mmu"]), soi, *(code + self.offset for code in image_codes), eoi]
        prompt += [user, *self._text_ids(prompt_text, index, "text"), assistant]
        if not add_response:
            return prompt, [False] * len(prompt)
        if response is None:
            raise ValueError(
                f"Sample {index}: add_response=True needs a response (answer / report / reasoning)."
            )
        body = self._response_ids(response, response_length, truncation, index)
        return prompt + body, [False] * len(prompt) + [True] * len(body)

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        *,
        responses: str | Sequence[str] | None = None,
        task: str | Sequence[str] = "vqa",
        options: Sequence[Sequence[str] | None] | None = None,
        image_ids: Any = None,
        add_response: bool | None = None,
        padding_side: str | None = None,
        response_length: int | None = None,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Build a padded batch of task sequences.

        Args:
            images: one image or a list (any input `MedDiffImageProcessor` takes); for t2i these are targets.
            text: the question (vqa / reasoning), an instruction (report; defaults to `DEFAULT_REPORT_PROMPT`)
                or the report to draw (t2i). One string or one per sample.
            responses: target texts (answer, report, reasoning text such as `format_reasoning(...)`).
            task: a task name from `("vqa", "report", "t2i", "reasoning")` or one per sample.
            options: per sample, multiple-choice option texts rendered as "A. ...\\nB. ..." after the question.
            image_ids: precomputed VQ codes [B, g*g] instead of `images` (cache them with `encode_images`).
            add_response: include the response (training). Defaults to True when `responses` are given (or
                t2i images). False gives generation prompts.
            padding_side: "right" (default for training) or "left" (default for prompts).
            response_length: pad every text response with EOS to this many tokens.
            truncation: cut responses longer than `response_length` (otherwise an error).
            max_length: position limit (default: the processor's `max_length`); longer sequences raise.

        Returns:
            `BatchFeature` with `input_ids` [B, L], `attention_mask` [B, L], `response_mask` [B, L] (bool),
            `labels` [B, L] (input ids on the response, -100 elsewhere; only with responses) and `task_ids` [B].
        """
        if kwargs:
            raise TypeError(f"MedDiffProcessor got unexpected arguments {sorted(kwargs)}.")
        texts = [text] if isinstance(text, str) or text is None else list(text)
        tasks_given = [task] if isinstance(task, str) else list(task)
        n_images = None
        if images is not None:
            n_images = len(images) if isinstance(images, (list, tuple)) else 1
        elif image_ids is not None:
            n_images = len(image_ids) if not torch.is_tensor(image_ids) or image_ids.ndim > 1 else 1
            if torch.is_tensor(image_ids) and image_ids.ndim == 1:
                image_ids = image_ids[None]
        resp_list = (
            None if responses is None else ([responses] if isinstance(responses, str) else list(responses))
        )
        batch = max(len(texts), len(tasks_given), n_images or 0, len(resp_list or []))
        if len(texts) == 1 and batch > 1:
            texts = texts * batch
        if len(tasks_given) == 1 and batch > 1:
            tasks_given = tasks_given * batch
        for name, values in (("text", texts), ("task", tasks_given), ("responses", resp_list)):
            if values is not None and len(values) != batch:
                raise ValueError(f"Got {len(values)} {name} for a batch of {batch}; give one per sample.")
        if options is not None and len(options) != batch:
            raise ValueError(f"Got {len(options)} option lists for a batch of {batch}; give one per sample.")
        if images is not None and not isinstance(images, (list, tuple)):
            images = [images]
        codes = self._image_codes(images, image_ids, batch, "images" if images is not None else "image_ids")
        if add_response is None:
            add_response = resp_list is not None or (
                all(t == "t2i" for t in tasks_given) and codes is not None
            )
        padding_side = padding_side or ("right" if add_response else "left")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        limit = max_length if max_length is not None else self.max_length

        sequences, masks = [], []
        for i in range(batch):
            sample_task = tasks_given[i]
            prompt_text = texts[i]
            if sample_task == "report" and not prompt_text:
                prompt_text = DEFAULT_REPORT_PROMPT
            if prompt_text is None:
                raise ValueError(f"Sample {i}: the {sample_task!r} task needs text (a question or a report).")
            if sample_task != "t2i" and options is not None:
                prompt_text = format_options(prompt_text, options[i])
            ids, mask = self.build_sequence(
                sample_task,
                prompt_text,
                codes[i] if codes is not None else None,
                resp_list[i] if resp_list is not None else None,
                add_response=add_response,
                response_length=response_length,
                truncation=truncation,
                index=i,
            )
            if limit is not None and len(ids) > limit:
                raise ValueError(
                    f"Sample {i} ({sample_task}) is {len(ids)} tokens long, more than the limit of {limit} "
                    "positions (the model's max_position_embeddings); shorten the text, lower response_length "
                    "or use a model with more positions."
                )
            sequences.append(ids)
            masks.append(mask)
        return self._pad(
            sequences, masks, tasks_given, padding_side, with_labels=add_response, tensors=return_tensors
        )

    def _pad(
        self,
        sequences: list[list[int]],
        masks: list[list[bool]],
        tasks: list[str],
        padding_side: str,
        with_labels: bool,
        tensors: str,
    ) -> BatchFeature:
        pad = self._id(PAD_TOKEN)
        length = max(len(s) for s in sequences)
        batch = len(sequences)
        input_ids = torch.full((batch, length), pad, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        response_mask = torch.zeros((batch, length), dtype=torch.bool)
        for i, (ids, mask) in enumerate(zip(sequences, masks)):
            span = slice(0, len(ids)) if padding_side == "right" else slice(length - len(ids), length)
            input_ids[i, span] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, span] = 1
            response_mask[i, span] = torch.tensor(mask, dtype=torch.bool)
        data = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask,
            "task_ids": torch.tensor([PROCESSOR_TASKS.index(t) for t in tasks], dtype=torch.long),
        }
        if with_labels:
            data["labels"] = torch.where(response_mask, input_ids, torch.full_like(input_ids, -100))
        if tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        elif tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {tensors!r}.")
        return BatchFeature(data)

    # --- decoding ------------------------------------------------------------------------------------
    def _split(self, ids: Sequence[int]) -> tuple[list[int], list[list[int]]]:
        """Text ids of the response (after the last `<|assistant|>` if any, before the first EOS) and runs of
        image codes (offset removed)."""
        ids = [int(t) for t in ids]
        eos, assistant = self._id(EOS_TOKEN), self._id(ASSISTANT_TOKEN)
        if assistant in ids:
            ids = ids[len(ids) - ids[::-1].index(assistant) :]
        codebook = self.image_tokenizer.codebook_size if self.image_tokenizer is not None else None
        end = self.offset + codebook if codebook is not None else None
        text_ids, runs, current = [], [], []
        for token in ids:
            token = int(token)
            is_image = token >= self.offset and (end is None or token < end)
            if is_image:
                current.append(token - self.offset)
                continue
            if current:
                runs.append(current)
                current = []
            if token == eos:
                break
            if token < self.text_vocab_size:
                text_ids.append(token)
        if current:
            runs.append(current)
        return text_ids, runs

    def decode_images(self, token_ids: Any) -> list[PIL.Image.Image]:
        """Vocabulary image ids [B, g*g] (VQ code + offset) -> list of PIL images."""
        vq = self._require_image_tokenizer()
        ids = torch.as_tensor(token_ids).long()
        if ids.ndim == 1:
            ids = ids[None]
        pixel_values = vq.decode(ids - self.offset)
        return self.image_processor.postprocess(pixel_values)

    def batch_decode(
        self, sequences: Any, skip_special_tokens: bool = True, return_images: bool = False, **kwargs: Any
    ) -> list[str] | list[dict[str, Any]]:
        """Decode mixed outputs (completions or whole sequences). Text: the response (tokens after the last
        `<|assistant|>` when the sequence has one) up to the first `<|eos|>`, image tokens removed, special
        tokens skipped (tags such as `<answer>` kept). With `return_images=True` each item is
        `{"text": str, "images": [PIL.Image, ...]}`, one image per complete run of g*g image tokens."""
        if torch.is_tensor(sequences) or isinstance(sequences, np.ndarray):
            sequences = sequences.tolist()
        if sequences and isinstance(sequences[0], int):
            sequences = [sequences]
        results = []
        for row in sequences:
            text_ids, runs = self._split(row)
            text = self.tokenizer.decode(text_ids, skip_special_tokens=skip_special_tokens, **kwargs)
            if not return_images:
                results.append(text)
                continue
            images = []
            if runs:
                vq = self._require_image_tokenizer()
                for run in runs:
                    if len(run) % vq.num_image_tokens != 0:
                        warnings.warn(
                            f"Skipping a run of {len(run)} image tokens: an image is {vq.num_image_tokens} tokens.",
                            stacklevel=2,
                        )
                        continue
                    chunks = torch.tensor(run).reshape(-1, vq.num_image_tokens)
                    images.extend(self.image_processor.postprocess(vq.decode(chunks)))
            results.append({"text": text, "images": images})
        return results

    def decode(
        self, sequence: Any, skip_special_tokens: bool = True, return_images: bool = False, **kwargs: Any
    ) -> str | dict[str, Any]:
        """Decode one sequence (see `batch_decode`)."""
        if torch.is_tensor(sequence) or isinstance(sequence, np.ndarray):
            sequence = sequence.tolist()
        return self.batch_decode([sequence], skip_special_tokens, return_images, **kwargs)[0]

    # --- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        image_tokenizer = self.__dict__.pop("image_tokenizer", None)
        try:
            return super().to_dict()
        finally:
            self.image_tokenizer = image_tokenizer

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any):
        """Save the tokenizer, image processor and processor config, and the image tokenizer to
        `image_tokenizer/` (a diffusers VQModel folder)."""
        if push_to_hub:
            raise NotImplementedError(
                "Save locally, then push the folder with hf_meddiff.hub or huggingface_hub."
            )
        files = super().save_pretrained(save_directory, **kwargs)
        if self.image_tokenizer is not None:
            self.image_tokenizer.save_pretrained(os.path.join(save_directory, IMAGE_TOKENIZER_SUBFOLDER))
        return files

    @classmethod
    def _get_arguments_from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        processor_dict: dict | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        # The image processor class is this file's sibling, so loading needs neither the Auto registration nor
        # trust_remote_code for it; the tokenizer is a plain PreTrainedTokenizerFast.
        kwargs = {k: v for k, v in kwargs.items() if k not in ("_from_auto", "trust_remote_code")}
        subfolder = kwargs.pop("subfolder", "") or ""
        config = (processor_dict or {}).get("image_processor")
        if isinstance(config, dict):
            image_processor = MedDiffImageProcessor(**{k: v for k, v in config.items() if k != "auto_map"})
        else:
            image_processor = MedDiffImageProcessor.from_pretrained(
                pretrained_model_name_or_path, subfolder=subfolder, **kwargs
            )
        # The tokenizer files carry the processor's `auto_map` but no tokenizer class of ours: the tokenizer is
        # always a library class, so never run (or ask about) remote code for it. An empty config stops
        # AutoTokenizer from probing the folder's MedDiff config (refused without remote code, then replaced by a
        # base config that logs "instantiate a model of type ``").
        from transformers import PreTrainedConfig

        tokenizer = AutoTokenizer.from_pretrained(
            pretrained_model_name_or_path,
            subfolder=subfolder,
            trust_remote_code=False,
            config=PreTrainedConfig(),
            **kwargs,
        )
        return [image_processor, tokenizer]

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> MedDiffProcessor:
        """Load the processor and, when present, the image tokenizer from `image_tokenizer/`."""
        image_tokenizer = kwargs.pop("image_tokenizer", None)
        kwargs.pop("trust_remote_code", None)
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if image_tokenizer is None:
            image_tokenizer = _load_image_tokenizer(pretrained_model_name_or_path, kwargs)
        processor.image_tokenizer = image_tokenizer
        return processor


def _load_image_tokenizer(path: str | os.PathLike, kwargs: dict[str, Any]) -> MedDiffImageTokenizer | None:
    subfolder = os.path.join(kwargs.get("subfolder") or "", IMAGE_TOKENIZER_SUBFOLDER)
    hub_keys = ("cache_dir", "revision", "token", "local_files_only", "force_download")
    hub_kwargs = {k: kwargs[k] for k in hub_keys if k in kwargs}
    if os.path.isdir(str(path)):
        if not os.path.isfile(os.path.join(str(path), subfolder, "config.json")):
            return None
        return MedDiffImageTokenizer.from_pretrained(path, subfolder=subfolder)
    try:
        return MedDiffImageTokenizer.from_pretrained(path, subfolder=subfolder, **hub_kwargs)
    except (OSError, ValueError):
        return None


MedDiffProcessor.register_for_auto_class("AutoProcessor")
