"""`MedDiffImageProcessor`: any supported image (see medical_image_meddiff) -> `pixel_values` [B, 3, S, S] in [-1, 1]
(grey replicated to three channels); `postprocess` turns such tensors back into PIL images. `images_to_tensor` is the
one image-batch converter of the library, for either value range ([-1, 1] for the image tokenizer, [0, 1] for image
metrics and Stable Diffusion rewards).

This file is copied into saved model folders (remote code): it imports only numpy, PIL, torch, transformers and its
siblings at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .medical_image_meddiff import (  # noqa: F401  (the decoders, importable from here as before)
    MEDICAL_SUFFIXES,
    WINDOW_PRESETS,
    ImageDecodeError,
    WindowSpec,
    apply_voi_function,
    apply_window,
    array_to_pil,
    dicom_to_array,
    load_medical_image,
    medical_image_to_array,
    min_max,
    nifti_to_array,
    resolve_window,
)

# ---------------------------------------------------------------------------------------------------
# The image processor
# ---------------------------------------------------------------------------------------------------
_RESAMPLE_MODES = ("bicubic", "bilinear", "nearest", "area")
_RESIZE_MODES = ("pad", "crop", "stretch")


class MedDiffImageProcessor(BaseImageProcessor):
    r"""Turns medical and ordinary images into `pixel_values` for `MedDiffImageTokenizer`.

    Every input is decoded to [0, 1] (DICOM with windowing, NIfTI slices, 16-bit PNG, arrays, tensors, PIL),
    made square (`resize_mode`: "pad" letterboxes with black, "crop" takes the centre, "stretch" ignores the
    aspect ratio), resized to `size` x `size` with antialiasing, grey replicated to three channels, and
    mapped to [-1, 1].

    Args:
        size (`int`): output side in pixels (must match the image tokenizer's `image_size`).
        resample (`str`): "bicubic", "bilinear", "nearest" or "area".
        resize_mode (`str`): "pad", "crop" or "stretch" for non-square images.
        window: default DICOM/NIfTI/HU window, `(centre, width)` or a name from `WINDOW_PRESETS`.
        frame, slice_index, axis, volume: defaults for multi-frame DICOM and NIfTI volumes.

    Example:

    ```python
    >>> import numpy as np
    >>> processor = MedDiffImageProcessor(size=64)
    >>> batch = processor([np.zeros((100, 80), dtype=np.uint8)], return_tensors="pt")
    >>> batch["pixel_values"].shape
    torch.Size([1, 3, 64, 64])
    >>> processor.postprocess(batch["pixel_values"])[0].mode
    'L'

    ```
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int | dict[str, int] = 64,
        resample: str = "bicubic",
        resize_mode: str = "pad",
        window: WindowSpec = None,
        frame: int | None = None,
        slice_index: int | None = None,
        axis: int = 2,
        volume: int | None = None,
        **kwargs: Any,
    ):
        for key in ("image_processor_type", "auto_map", "_processor_class"):
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        if isinstance(size, dict):
            size = int(size.get("height", size.get("shortest_edge", 64)))
        if resample not in _RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {_RESAMPLE_MODES}, got {resample!r}.")
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}.")
        self.size = int(size)
        self.resample = resample
        self.resize_mode = resize_mode
        self.window = (
            list(resolve_window(window)) if window is not None and not isinstance(window, str) else window
        )
        self.frame = frame
        self.slice_index = slice_index
        self.axis = axis
        self.volume = volume

    def to_dict(self) -> dict[str, Any]:
        output = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        output["image_processor_type"] = type(self).__name__
        return output

    def _square(self, image: torch.Tensor, size: int, resample: str, resize_mode: str) -> torch.Tensor:
        """[C, H, W] in [0, 1] -> [C, size, size]."""
        _, height, width = image.shape
        if resize_mode == "pad" and height != width:
            side = max(height, width)
            top, left = (side - height) // 2, (side - width) // 2
            image = F.pad(image, (left, side - width - left, top, side - height - top), value=0.0)
        elif resize_mode == "crop" and height != width:
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            image = image[:, top : top + side, left : left + side]
        if image.shape[-1] == size and image.shape[-2] == size:
            return image
        kwargs = {"align_corners": False, "antialias": True} if resample in ("bicubic", "bilinear") else {}
        resized = F.interpolate(image[None], size=(size, size), mode=resample, **kwargs)[0]
        return resized.clamp(0.0, 1.0)

    def _unit_tensor(
        self, item: Any, name: str, size: int | None, resample: str, resize_mode: str, options: dict[str, Any]
    ) -> torch.Tensor:
        """One image -> [3, S, S] in [0, 1] (`size=None`: its own size, as decoded)."""
        array = medical_image_to_array(item, name=name, **options)
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        if size is not None:
            tensor = self._square(tensor, size, resample, resize_mode)
        return tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor

    def preprocess(
        self,
        images: Any,
        return_tensors: str | None = "pt",
        size: int | None = None,
        resample: str | None = None,
        resize_mode: str | None = None,
        window: WindowSpec = None,
        frame: int | None = None,
        slice_index: int | None = None,
        axis: int | None = None,
        volume: int | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """One image or a list of images -> `BatchFeature(pixel_values=FloatTensor [B, 3, S, S] in [-1, 1])`."""
        if kwargs:
            raise TypeError(f"MedDiffImageProcessor got unexpected arguments {sorted(kwargs)}.")
        size = int(size or self.size)
        resample = resample or self.resample
        resize_mode = resize_mode or self.resize_mode
        options = {
            "window": window if window is not None else self.window,
            "frame": frame if frame is not None else self.frame,
            "slice_index": slice_index if slice_index is not None else self.slice_index,
            "axis": axis if axis is not None else self.axis,
            "volume": volume if volume is not None else self.volume,
        }
        if isinstance(images, (list, tuple)):
            items, names = list(images), [f"images[{i}]" for i in range(len(images))]
        else:
            items, names = [images], ["image"]
        if not items:
            raise ValueError("MedDiffImageProcessor got an empty list of images.")
        pixel_values = [
            self._unit_tensor(item, name, size, resample, resize_mode, options) * 2.0 - 1.0
            for item, name in zip(items, names)
        ]
        batch = torch.stack(pixel_values).contiguous()
        if return_tensors in (None, "np"):
            return BatchFeature({"pixel_values": batch.numpy()}, tensor_type=return_tensors)
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
        return BatchFeature({"pixel_values": batch})

    def postprocess(
        self, pixel_values: torch.Tensor | np.ndarray, output_type: str = "pil", grayscale: bool | None = None
    ) -> list[PIL.Image.Image] | np.ndarray:
        """`pixel_values` [B, 3, S, S] (or [3, S, S]) in [-1, 1] -> list of PIL images (`output_type="pil"`)
        or float array [B, S, S, 3] in [0, 1] (`"np"`). With `grayscale=None`, images whose three channels
        agree (within 1/255) come back as mode "L"."""
        values = torch.as_tensor(pixel_values).detach().cpu().float()
        if values.ndim == 3:
            values = values[None]
        if values.ndim != 4 or values.shape[1] not in (1, 3):
            raise ValueError(
                f"postprocess expects pixel_values [B, 3, H, W], got shape {tuple(values.shape)}."
            )
        values = ((values.clamp(-1, 1) + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()
        if values.shape[-1] == 1:
            values = np.repeat(values, 3, axis=-1)
        if output_type == "np":
            return values
        if output_type != "pil":
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}.")
        images = []
        for image in values:
            grey = grayscale
            if grey is None:
                grey = bool(np.abs(image - image.mean(axis=-1, keepdims=True)).max() <= 1.0 / 255.0)
            images.append(array_to_pil(image.mean(axis=-1) if grey else image))
        return images


MedDiffImageProcessor.register_for_auto_class("AutoImageProcessor")


def images_to_tensor(
    images: Any,
    image_size: int | None,
    batch_size: int = 256,
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
    resample: str = "bicubic",
    resize_mode: str = "pad",
) -> torch.Tensor:
    """Images -> one float tensor `[N, 3, S, S]` in `value_range`, decoded and resized by `MedDiffImageProcessor`.

    Args:
        images: a list of anything the image processor decodes (PIL, NumPy, torch, DICOM / NIfTI paths,
            `datasets.Image` values), a `datasets.Dataset` with an `image` column, or a float tensor `[N, 3, S, S]`
            already in `value_range` (returned as float).
        image_size: the side `S` every image is resized to (`None`: keep the decoded size; then all images must
            share one size).
        value_range: `(-1.0, 1.0)` (what the image tokenizer takes) or `(0.0, 1.0)` (image metrics, Stable
            Diffusion rewards).
        resample, resize_mode: see `MedDiffImageProcessor`.

    Example:

    ```python
    >>> import numpy as np
    >>> images_to_tensor([np.full((8, 6), 255, dtype=np.uint8)], 4, value_range=(0.0, 1.0)).shape
    torch.Size([1, 3, 4, 4])

    ```
    """
    if tuple(value_range) not in ((-1.0, 1.0), (0.0, 1.0)):
        raise ValueError(f"value_range must be (-1.0, 1.0) or (0.0, 1.0), got {value_range!r}.")
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if image_size is not None and (images.shape[-1] != image_size or images.shape[-2] != image_size):
            raise ValueError(
                f"Image tensor has size {tuple(images.shape[-2:])} but the tokenizer needs {image_size}x{image_size}."
            )
        return images.float()
    if hasattr(images, "column_names"):
        if "image" not in images.column_names:
            raise ValueError(f"The dataset has no 'image' column (columns: {images.column_names}).")
        images = images["image"]
    if not isinstance(images, Sequence) and isinstance(images, Iterable):
        images = list(images)
    if len(images) == 0:
        raise ValueError("images_to_tensor needs at least one image, got an empty collection.")
    processor = MedDiffImageProcessor(size=image_size or 64, resample=resample, resize_mode=resize_mode)
    options = {"window": processor.window, "frame": processor.frame, "slice_index": processor.slice_index,
               "axis": processor.axis, "volume": processor.volume}  # fmt: skip
    signed = tuple(value_range) == (-1.0, 1.0)
    tensors = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        for i, item in enumerate(chunk):
            unit = processor._unit_tensor(item, f"images[{i}]", image_size, resample, resize_mode, options)
            tensors.append(unit * 2.0 - 1.0 if signed else unit)
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        raise ValueError(
            f"Images have different sizes {sorted(sizes)}; pass image_size to resize them to one."
        )
    return torch.stack(tensors).contiguous().float()
