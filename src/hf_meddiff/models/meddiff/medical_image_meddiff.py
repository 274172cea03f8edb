"""Medical image decoding: DICOM (rescale, windowing, MONOCHROME1, multi-frame), NIfTI (axis / slice / volume),
16-bit PNG, PIL images, arrays and tensors -> float32 arrays in [0, 1]: `[H, W]` for grey images, `[H, W, 3]` for
colour. `MedDiffImageProcessor` (image_processing_meddiff) builds on these.

This file is copied into saved model folders (remote code): it imports only numpy, PIL and torch at module
level; pydicom and nibabel are imported when a DICOM / NIfTI input arrives.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

# Window presets (centre, width) in Hounsfield units for CT; usual radiology reading windows.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "soft_tissue": (50.0, 400.0),
}

WindowSpec = str | tuple[float, float] | Sequence[float] | None
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
MEDICAL_SUFFIXES = _DICOM_SUFFIXES + _NIFTI_SUFFIXES  # decoded here, not by PIL

# Decoder packages pydicom can use, by compressed transfer syntax name fragment.
_DECODER_HINTS = (
    ("JPEG-LS", "pip install pyjpegls  (or: pip install pylibjpeg pylibjpeg-libjpeg)"),
    ("JPEG 2000", "pip install pylibjpeg pylibjpeg-openjpeg"),
    ("JPEG", "pip install pylibjpeg pylibjpeg-libjpeg"),
    ("RLE", "pip install pylibjpeg pylibjpeg-rle"),
)


# ---------------------------------------------------------------------------------------------------
# Windowing
# ---------------------------------------------------------------------------------------------------
def resolve_window(window: WindowSpec) -> tuple[float, float] | None:
    """`"lung"` / `(centre, width)` / None -> `(centre, width)` or None."""
    if window is None:
        return None
    if isinstance(window, str):
        key = window.lower().replace("-", "_").replace(" ", "_")
        if key not in WINDOW_PRESETS:
            raise ValueError(
                f"Unknown window preset {window!r}; use one of {sorted(WINDOW_PRESETS)} or (centre, width)."
            )
        return WINDOW_PRESETS[key]
    values = [float(v) for v in window]
    if len(values) != 2 or values[1] <= 0:
        raise ValueError(f"A window is (centre, width) with width > 0, got {tuple(window)!r}.")
    return values[0], values[1]


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI windowing (PS3.3 C.11.2.1.2.1) to [0, 1]:
    `y = ((x - (c - 0.5)) / (w - 1) + 0.5)`, clipped to [0, 1] (a width <= 1 is a threshold at c - 0.5)."""
    values = np.asarray(values, dtype=np.float64)
    if width <= 1:
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0).astype(np.float32)


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the array's own minimum and maximum (a constant array becomes zeros)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _scale(values: np.ndarray, window: WindowSpec) -> np.ndarray:
    resolved = resolve_window(window)
    return apply_window(values, *resolved) if resolved is not None else min_max(values)


# ---------------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------------
def _import_pydicom():
    try:
        import pydicom
    except ImportError as err:
        raise ImportError(
            "Reading DICOM needs pydicom: pip install pydicom (or hf-meddiff[medical])."
        ) from err
    return pydicom


def _read_dicom(path: str | os.PathLike):
    pydicom = _import_pydicom()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DICOM file not found: {path}")
    try:
        return pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        pass  # no 128-byte preamble: try again without it below
    except Exception as err:
        raise ValueError(f"{path} is not a readable DICOM file: {err}") from err
    try:
        ds = pydicom.dcmread(path, force=True)
        if not any(key in ds for key in ("SOPClassUID", "Rows", "PixelData", "Modality")):
            raise ValueError("no DICOM image or identification elements found")
        return ds
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable DICOM file ({err}). Check that it is a DICOM Part 10 file, not a "
            "DICOMDIR, a zip archive or an image in another format."
        ) from err


def _dicom_pixels(ds: Any, name: str) -> np.ndarray:
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        modality = ds.get("Modality", "?")
        raise ValueError(
            f"{name} has no pixel data (Modality {modality}, SOP class {ds.get('SOPClassUID', '?')}); it may be "
            "a structured report, an RT structure set or a DICOMDIR. Pass an image DICOM file instead."
        )
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError) as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", str(syntax))
        message = str(err)
        if "missing" in message.lower() or "plugin" in message.lower() or "support" in message.lower():
            hint = next(
                (h for key, h in _DECODER_HINTS if key.lower() in syntax_name.lower()),
                "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)",
            )
            raise RuntimeError(
                f"{name} uses the compressed transfer syntax '{syntax_name}' and no installed decoder can read "
                f"it. Install one: {hint}. (pydicom: {' '.join(message.split())})"
            ) from err
        raise ValueError(f"Could not decode the pixel data of {name}: {message}") from err
    except ValueError as err:
        raise ValueError(f"Could not decode the pixel data of {name}: {err}") from err


def dicom_to_array(
    ds_or_path: Any,
    *,
    window: WindowSpec = None,
    frame: int | None = None,
) -> np.ndarray:
    """Decode a DICOM image to float32 in [0, 1]: `[H, W]` (grey) or `[H, W, 3]` (colour).

    Grey images: stored values -> modality LUT (RescaleSlope/RescaleIntercept, e.g. Hounsfield units for CT)
    -> window, chosen as: the `window` argument (`(centre, width)` or a name from `WINDOW_PRESETS`) > the
    file's own WindowCenter/WindowWidth (first value when several) > min-max of the image. MONOCHROME1
    images (high values dark) are inverted so that the output is always "high = bright". Colour images
    (RGB, YBR converted to RGB, PALETTE COLOR through its LUT) are scaled by their bit depth; `window` does
    not apply to them.

    Multi-frame files: `frame` picks a frame (0-based); without it the middle frame `n // 2` is returned.

    Args:
        ds_or_path: a path to a DICOM file or a `pydicom.Dataset`.
        window: `(centre, width)`, a preset name or None.
        frame: frame index for multi-frame files.

    Example:

    ```python
    >>> from pydicom.data import get_testdata_file
    >>> arr = dicom_to_array(get_testdata_file("CT_small.dcm"), window="abdomen")
    >>> arr.shape, arr.dtype, float(arr.min()) >= 0.0, float(arr.max()) <= 1.0
    ((128, 128), dtype('float32'), True, True)

    ```
    """
    pydicom = _import_pydicom()
    if isinstance(ds_or_path, (str, os.PathLike)):
        name = str(ds_or_path)
        ds = _read_dicom(ds_or_path)
    elif isinstance(ds_or_path, pydicom.Dataset):
        ds = ds_or_path
        name = str(getattr(ds, "filename", None) or "the DICOM dataset")
    else:
        raise TypeError(
            f"dicom_to_array expects a path or a pydicom.Dataset, got {type(ds_or_path).__name__}."
        )

    pixels = _dicom_pixels(ds, name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    num_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if num_frames > 1:
        index = num_frames // 2 if frame is None else int(frame)
        if not -num_frames <= index < num_frames:
            raise IndexError(
                f"{name} has {num_frames} frames; frame={frame} is out of range 0..{num_frames - 1}."
            )
        pixels = pixels[index]
    elif frame not in (None, 0, -1):
        raise IndexError(
            f"{name} is a single-frame image; frame={frame} does not exist (use frame=None or 0)."
        )

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(pixels, ds).astype(np.float64)
        return np.clip(rgb / (65535.0 if rgb.max() > 255 else 255.0), 0, 1).astype(np.float32)
    if samples == 3 or pixels.ndim == 3:
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
        return np.clip(pixels.astype(np.float64) / (2.0**bits - 1), 0, 1).astype(np.float32)

    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(pixels, ds).astype(np.float64)
    resolved = resolve_window(window)
    if resolved is None and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = ds.WindowCenter, ds.WindowWidth
        center = float(center[0] if isinstance(center, Sequence) and not isinstance(center, str) else center)
        width = float(width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width)
        resolved = (center, width) if width > 0 else None
    out = apply_window(values, *resolved) if resolved is not None else min_max(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------------
def nifti_to_array(
    img_or_path: Any,
    *,
    slice_index: int | None = None,
    axis: int = 2,
    volume: int | None = None,
    window: WindowSpec = None,
) -> np.ndarray:
    """One 2-D slice of a NIfTI image as float32 [H, W] in [0, 1].

    A 3-D volume gives the slice `slice_index` along `axis` (0 sagittal, 1 coronal, 2 axial for RAS-ordered
    data; default: the middle slice). A 4-D series needs `volume` (index along the 4th axis) unless that axis
    has length 1. The slice is rotated by 90 degrees (`np.rot90`) so the first voxel axis runs left to right
    and the second bottom to top, as radiology viewers display it. Intensities (after the header's
    scl_slope/scl_inter) are windowed with `window` (`(centre, width)` or a preset name) or min-max scaled
    over the slice.

    Example:

    ```python
    >>> import os, nibabel
    >>> path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
    >>> nifti_to_array(path).shape  # volume (33, 41, 25): middle axial slice, rotated for display
    (41, 33)

    ```
    """
    try:
        import nibabel
    except ImportError as err:
        raise ImportError(
            "Reading NIfTI needs nibabel: pip install nibabel (or hf-meddiff[medical])."
        ) from err
    if isinstance(img_or_path, (str, os.PathLike)):
        name = str(img_or_path)
        if not os.path.isfile(name):
            raise FileNotFoundError(f"NIfTI file not found: {name}")
        try:
            img = nibabel.load(name)
        except Exception as err:
            raise ValueError(f"{name} is not a readable NIfTI file: {err}") from err
    else:
        img = img_or_path
        name = str(getattr(img, "get_filename", lambda: None)() or "the NIfTI image")
        if not hasattr(img, "dataobj"):
            raise TypeError(f"nifti_to_array expects a path or a nibabel image, got {type(img).__name__}.")

    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    data = img.dataobj
    if len(shape) == 4:
        if volume is None:
            if shape[3] != 1:
                raise ValueError(
                    f"{name} is a 4-D series of shape {shape}; pick one of its {shape[3]} volumes with "
                    f"volume=<0..{shape[3] - 1}> (and a slice with slice_index=, axis=)."
                )
            volume = 0
        if not -shape[3] <= volume < shape[3]:
            raise IndexError(
                f"{name} has {shape[3]} volumes (shape {shape}); volume={volume} is out of range."
            )
        array = np.asarray(data[..., volume] if len(img.shape) == 4 else data[:, :, :, volume, ...])
        array = array.reshape(shape[:3])
    elif len(shape) in (2, 3):
        array = np.asarray(data).reshape(shape)
    else:
        raise ValueError(f"{name} has shape {shape}; expected a 2-D image, a 3-D volume or a 4-D series.")

    if array.ndim == 3:
        if axis not in (0, 1, 2, -1, -2, -3):
            raise ValueError(
                f"axis must be 0, 1 or 2 for the 3-D volume {name} of shape {array.shape}, got {axis}."
            )
        size = array.shape[axis]
        index = size // 2 if slice_index is None else int(slice_index)
        if not -size <= index < size:
            raise IndexError(
                f"slice_index={slice_index} is out of range for axis {axis} of {name} (shape {array.shape}, "
                f"valid 0..{size - 1})."
            )
        array = np.take(array, index, axis=axis)
    elif slice_index not in (None, 0):
        raise IndexError(f"{name} is a 2-D image; slice_index={slice_index} does not apply.")
    array = np.rot90(np.asarray(array, dtype=np.float64))
    return _scale(array, window)


# ---------------------------------------------------------------------------------------------------
# Everything else: PIL, arrays, tensors
# ---------------------------------------------------------------------------------------------------
def _pil_to_float(image: PIL.Image.Image, window: WindowSpec, name: str) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale(np.asarray(image, dtype=np.float64), window)
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    try:
        rgb = image.convert("RGB")
    except Exception as err:
        raise ValueError(f"{name}: cannot convert a PIL image of mode {mode!r} to RGB or L ({err}).") from err
    return np.asarray(rgb, dtype=np.float32) / 255.0


def _array_to_float(array: np.ndarray, window: WindowSpec, name: str) -> np.ndarray:
    shape = tuple(array.shape)
    if array.ndim == 3:
        if shape[-1] in (1, 3, 4):
            pass
        elif shape[0] in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)
        else:
            raise ValueError(
                f"{name}: an image array of shape {shape} has {min(shape[0], shape[-1])} channels; expected "
                "[H, W] (grey), [H, W, 3] (RGB) or [3, H, W]. Convert it to one grey channel (e.g. "
                "array[..., 0]) or to RGB first."
            )
        if array.shape[-1] == 4:
            array = array[..., :3]
        elif array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim == 4:
        raise ValueError(
            f"{name}: got a 4-D array of shape {shape}, but one image is [H, W], [H, W, 3] or [3, H, W]. "
            "For a batch pass a list of images (e.g. list(array)); for a volume pick a slice first."
        )
    elif array.ndim != 2:
        raise ValueError(f"{name}: an image array must be [H, W], [H, W, 3] or [3, H, W], got shape {shape}.")
    if min(array.shape[:2]) < 1:
        raise ValueError(f"{name}: empty image of shape {shape}.")

    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    values = np.nan_to_num(array.astype(np.float64))
    if window is not None:
        return _scale(values, window)
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return values.astype(np.float32)
        if low >= -1.0 and high <= 1.0:
            return ((values + 1.0) / 2.0).astype(np.float32)
    return min_max(values)


def _is_dicom_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return head[128:132] == b"DICM"
    except OSError:
        return False


def medical_image_to_array(
    source: Any,
    *,
    window: WindowSpec = None,
    frame: int | None = None,
    slice_index: int | None = None,
    axis: int = 2,
    volume: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Any supported input -> float32 `[H, W]` (grey) or `[H, W, 3]` (colour) in [0, 1].

    Inputs: a path (.dcm/.dicom/.ima or any file with the DICM marker, .nii/.nii.gz, and anything PIL opens
    incl. 16-bit PNG/TIFF), a `pydicom.Dataset`, a nibabel image, a PIL image, a NumPy array, a torch tensor,
    raw bytes, or a `datasets` image dict (`{"bytes": ..., "path": ...}`).
    Arrays: uint8 is /255; float in [0, 1] is kept; float in [-1, 1] is mapped by (x + 1) / 2; other values
    (e.g. uint16, Hounsfield units) are windowed with `window` or min-max scaled. 16-bit PIL images likewise.
    """
    name = name or "image"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = path
        if not os.path.exists(path):
            raise FileNotFoundError(f"Image file not found: {path}")
        lower = path.lower()
        if lower.endswith(_NIFTI_SUFFIXES):
            return nifti_to_array(path, slice_index=slice_index, axis=axis, volume=volume, window=window)
        if lower.endswith(_DICOM_SUFFIXES) or _is_dicom_file(path):
            return dicom_to_array(path, window=window, frame=frame)
        try:
            with PIL.Image.open(path) as image:
                image.load()
                return _pil_to_float(image, window, name)
        except PIL.UnidentifiedImageError:
            try:
                return dicom_to_array(path, window=window, frame=frame)
            except Exception as err:
                raise ValueError(
                    f"Could not read {path}: it is not an image PIL can open, not NIfTI (.nii/.nii.gz) and not "
                    f"DICOM ({err})."
                ) from err
    if isinstance(source, dict) and ("bytes" in source or "path" in source):
        if source.get("bytes") is not None:
            return medical_image_to_array(
                bytes(source["bytes"]), window=window, frame=frame, slice_index=slice_index, axis=axis,
                volume=volume, name=source.get("path") or name,
            )  # fmt: skip
        return medical_image_to_array(
            source["path"], window=window, frame=frame, slice_index=slice_index, axis=axis, volume=volume
        )
    if isinstance(source, (bytes, bytearray)):
        buffer = io.BytesIO(bytes(source))
        if bytes(source[128:132]) == b"DICM":
            pydicom = _import_pydicom()
            return dicom_to_array(pydicom.dcmread(buffer), window=window, frame=frame)
        try:
            with PIL.Image.open(buffer) as image:
                image.load()
                return _pil_to_float(image, window, name)
        except PIL.UnidentifiedImageError as err:
            raise ValueError(
                f"{name}: the bytes are neither an image PIL can open nor a DICOM file."
            ) from err
    if isinstance(source, PIL.Image.Image):
        return _pil_to_float(source, window, name)
    if isinstance(source, torch.Tensor):
        return _array_to_float(source.detach().cpu().float().numpy(), window, name)
    if isinstance(source, np.ndarray):
        return _array_to_float(source, window, name)
    module = type(source).__module__
    if module.startswith("pydicom"):
        return dicom_to_array(source, window=window, frame=frame)
    if module.startswith("nibabel") or (hasattr(source, "dataobj") and hasattr(source, "affine")):
        return nifti_to_array(source, slice_index=slice_index, axis=axis, volume=volume, window=window)
    raise TypeError(
        f"{name}: unsupported image input of type {type(source).__name__}. Pass a file path (DICOM, NIfTI, PNG, "
        "JPEG, ...), a PIL image, a NumPy array, a torch tensor, a pydicom Dataset or a nibabel image."
    )


def array_to_pil(array: np.ndarray) -> PIL.Image.Image:
    """Float [H, W] / [H, W, 3] in [0, 1] -> PIL image of mode "L" / "RGB"."""
    data = np.clip(np.round(np.asarray(array, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(data)


def load_medical_image(
    source: Any,
    *,
    window: WindowSpec = None,
    frame: int | None = None,
    slice_index: int | None = None,
    axis: int = 2,
    volume: int | None = None,
) -> PIL.Image.Image:
    """Load a medical or ordinary image as a PIL image ("L" for grey, "RGB" for colour).

    See `medical_image_to_array` for the inputs; `window` applies to DICOM, NIfTI and 16-bit/HU data,
    `frame` to multi-frame DICOM, `slice_index`/`axis`/`volume` to NIfTI volumes.

    Example:

    ```python
    >>> from pydicom.data import get_testdata_file
    >>> image = load_medical_image(get_testdata_file("CT_small.dcm"), window="soft_tissue")
    >>> image.mode, image.size
    ('L', (128, 128))

    ```
    """
    array = medical_image_to_array(
        source, window=window, frame=frame, slice_index=slice_index, axis=axis, volume=volume
    )
    return array_to_pil(array)
