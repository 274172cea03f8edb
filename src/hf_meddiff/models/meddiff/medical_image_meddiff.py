"""Medical image decoding: DICOM (rescale, windowing, MONOCHROME1, multi-frame), NIfTI (axis / slice / volume),
16-bit PNG, PIL images, arrays and tensors -> float32 arrays in [0, 1]: `[H, W]` for grey images, `[H, W, 3]` for
colour. `MedDiffImageProcessor` (image_processing_meddiff) builds on these.

This file is copied into saved model folders (remote code): it imports only numpy, PIL and torch at module
level; pydicom and nibabel are imported when a DICOM / NIfTI input arrives.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
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


class ImageDecodeError(ValueError):
    """An image input that cannot be decoded into pixels: the message names the input (file, column/row or
    argument) and the reason, e.g. a truncated file, a decompression bomb, a DICOM header without a transfer
    syntax, an array of NaN or of complex numbers."""


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    """`values` as float64 with NaN / -inf shown as the lowest and +inf as the highest finite value (with a
    warning naming the input); an input with no finite value at all is an `ImageDecodeError`."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.all():
        return values
    if not finite.any():
        raise ImageDecodeError(
            f"{name}: every value of the image (shape {values.shape}) is NaN or infinite; there is nothing to "
            "show. Check how the array was computed (e.g. a division by zero) or the file's scaling."
        )
    low, high = float(values[finite].min()), float(values[finite].max())
    warnings.warn(
        f"{name}: {int((~finite).sum())} of {values.size} values are NaN or infinite; NaN and -inf are shown as "
        f"the lowest finite value ({low:g}), +inf as the highest ({high:g}).",
        stacklevel=3,
    )
    return np.where(np.isnan(values) | (values == -np.inf), low, np.where(values == np.inf, high, values))


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


def _read_dicom(source: Any, name: str):
    """A path or a file-like object -> `pydicom.Dataset` (a file without the 128-byte preamble is read too)."""
    pydicom = _import_pydicom()
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        raise FileNotFoundError(f"DICOM file not found: {source}")
    try:
        return pydicom.dcmread(source)
    except pydicom.errors.InvalidDicomError:
        pass  # no 128-byte preamble: try again without it below
    except Exception as err:
        raise ImageDecodeError(f"{name} is not a readable DICOM file: {err}") from err
    try:
        if hasattr(source, "seek"):
            source.seek(0)
        ds = pydicom.dcmread(source, force=True)
        if not any(key in ds for key in ("SOPClassUID", "Rows", "PixelData", "Modality")):
            raise ValueError("no DICOM image or identification elements found")
        return ds
    except Exception as err:
        raise ImageDecodeError(
            f"{name} is not a readable DICOM file ({err}). Check that it is a DICOM Part 10 file, not a "
            "DICOMDIR, a zip archive or an image in another format."
        ) from err


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_REQUIRED_PIXEL_MODULE = {
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
    "BitsAllocated": "(0028,0100)",
    "SamplesPerPixel": "(0028,0002)",
    "PhotometricInterpretation": "(0028,0004)",
}


def _with_transfer_syntax(ds: Any, name: str) -> Any:
    """`ds`, or a shallow copy whose file meta names the transfer syntax the data set was read with.

    Files written without file meta (or with an empty one) are common in PACS exports. For native (uncompressed)
    pixel data the encoding pydicom read the data set with is the transfer syntax; compressed (encapsulated) pixel
    data without a transfer syntax cannot be decoded and gets a clear error."""
    import copy

    pydicom = _import_pydicom()
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return ds
    element = next((ds[k] for k in _PIXEL_KEYWORDS if k in ds), None)
    if element is not None and getattr(element, "is_undefined_length", False):
        raise ImageDecodeError(
            f"{name}: the pixel data is compressed (encapsulated) but the file meta has no (0002,0010) Transfer "
            "Syntax UID, so the codec is unknown. Set ds.file_meta.TransferSyntaxUID to the syntax the file was "
            "written with (e.g. with pydicom) and save it again."
        )
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        raise ImageDecodeError(
            f"{name}: the file meta has no (0002,0010) Transfer Syntax UID and the encoding of the data set is "
            "unknown. Set ds.file_meta.TransferSyntaxUID (e.g. ExplicitVRLittleEndian) and try again."
        )
    uid = pydicom.uid
    syntax = (
        uid.ImplicitVRLittleEndian
        if implicit
        else (uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)
    )
    fixed = copy.copy(ds)
    fixed.file_meta = copy.deepcopy(meta) if meta is not None else pydicom.dataset.FileMetaDataset()
    fixed.file_meta.TransferSyntaxUID = syntax
    return fixed


def _check_pixel_budget(count: int, shape: str, name: str) -> None:
    """Refuse an image larger than PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`), with the fix."""
    limit = PIL.Image.MAX_IMAGE_PIXELS
    if limit is not None and count > limit:
        raise ImageDecodeError(
            f"{name}: the image has {count:,} pixels ({shape}), more than the limit of {int(limit):,} pixels; an "
            "image this large is refused as a possible decompression bomb. If you trust the file, raise the limit "
            f"before loading: `import PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = {count}` (None removes it)."
        )


def _dicom_pixels(ds: Any, name: str, index: int | None) -> np.ndarray:
    """The pixels of one frame (`index`) or of the whole single-frame image, decoded by pydicom."""
    if not any(key in ds for key in _PIXEL_KEYWORDS):
        modality = ds.get("Modality", "?")
        raise ImageDecodeError(
            f"{name} has no pixel data (Modality {modality}, SOP class {ds.get('SOPClassUID', '?')}); it may be "
            "a structured report, an RT structure set or a DICOMDIR. Pass an image DICOM file instead."
        )
    missing = [f"{tag} {key}" for key, tag in _REQUIRED_PIXEL_MODULE.items() if ds.get(key) in (None, "")]
    if missing:
        raise ImageDecodeError(
            f"{name}: cannot decode the pixel data, the Image Pixel module lacks {', '.join(missing)}; the file "
            "is not a complete image DICOM (fix the header with pydicom, or export the image again)."
        )
    _check_pixel_budget(
        int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel or 1),
        f"{int(ds.Rows)} rows x {int(ds.Columns)} columns x {int(ds.SamplesPerPixel or 1)} samples per frame",
        name,
    )
    ds = _with_transfer_syntax(ds, name)
    syntax = ds.file_meta.TransferSyntaxUID
    syntax_name = getattr(syntax, "name", str(syntax))
    try:
        from pydicom.pixels import pixel_array

        return pixel_array(ds, index=index)
    except (RuntimeError, NotImplementedError) as err:
        message = " ".join(str(err).split())
        lowered = message.lower()
        if "exceptions were raised by all available plugins" in lowered:
            raise ImageDecodeError(
                f"{name}: the installed decoders for '{syntax_name}' failed on this file's compressed pixel data; "
                f"it is corrupt or uses an encoding they do not support (pydicom: {message})"
            ) from err
        if any(word in lowered for word in ("missing", "plugin", "support", "no pixel data decoders")):
            hint = next(
                (h for key, h in _DECODER_HINTS if key.lower() in syntax_name.lower()),
                "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle (or hf-meddiff[medical])",
            )
            raise RuntimeError(
                f"{name} uses the compressed transfer syntax '{syntax_name}' and no installed decoder can read "
                f"it. Install one: {hint}. (pydicom: {message})"
            ) from err
        raise ImageDecodeError(f"{name}: could not decode the pixel data ({syntax_name}): {message}") from err
    except AttributeError as err:  # pydicom's "Missing required element ..." and friends
        raise ImageDecodeError(
            f"{name}: could not decode the pixel data, the header is incomplete: {' '.join(str(err).split())}"
        ) from err
    except (ValueError, TypeError, KeyError, IndexError, OSError, EOFError) as err:
        raise ImageDecodeError(
            f"{name}: could not decode the pixel data ({syntax_name}): {' '.join(str(err).split())}"
        ) from err


def _frame_item(ds: Any, index: int | None, sequence: str) -> Any:
    """The first item of functional-group `sequence` for frame `index` (per-frame group, then shared group)."""
    for groups, position in (
        ("PerFrameFunctionalGroupsSequence", index or 0),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups)
        if items and position < len(items):
            inner = items[position].get(sequence)
            if inner:
                return inner[0]
    return None


def _first_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _modality_values(pixels: np.ndarray, ds: Any, index: int | None) -> np.ndarray:
    """Stored values -> modality values (Hounsfield units for CT): the frame's Pixel Value Transformation
    (enhanced multi-frame), else the Modality LUT Sequence or RescaleSlope / RescaleIntercept of the data set."""
    item = _frame_item(ds, index, "PixelValueTransformationSequence")
    if item is not None and "RescaleSlope" in item:
        slope = _first_number(item.get("RescaleSlope"))
        intercept = _first_number(item.get("RescaleIntercept")) or 0.0
        return pixels.astype(np.float64) * (1.0 if slope is None else slope) + intercept
    from pydicom.pixels import apply_modality_lut

    return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)


def _lut_table(item: Any, ds: Any, name: str) -> tuple[np.ndarray, int, int]:
    """(LUT data, first mapped value, bits per entry) of a VOI LUT item."""
    descriptor = [int(v) for v in item.LUTDescriptor]
    if len(descriptor) != 3:
        raise ImageDecodeError(f"{name}: the VOI LUT Descriptor must have 3 values, got {descriptor}.")
    entries, first, bits = descriptor[0] or 65536, descriptor[1], descriptor[2]
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        data = np.frombuffer(bytes(data), dtype="<u2" if little else ">u2")
    elif not isinstance(data, (Sequence, np.ndarray)):
        data = [data]
    table = np.asarray(data, dtype=np.float64)
    if table.size == 0:
        raise ImageDecodeError(f"{name}: the VOI LUT Sequence has an empty LUT Data.")
    return table[:entries], first, bits


def _apply_voi_lut(values: np.ndarray, item: Any, ds: Any, name: str) -> np.ndarray:
    """A VOI LUT Sequence item applied to modality values -> [0, 1] (PS3.3 C.11.2.1.1)."""
    table, first, bits = _lut_table(item, ds, name)
    positions = np.clip(np.round(values) - first, 0, len(table) - 1).astype(np.int64)
    top = max(float(2**bits - 1), float(table.max()))  # some writers store more bits than the descriptor says
    return (table[positions] / top).astype(np.float32) if top > 0 else np.zeros(values.shape, np.float32)


def apply_voi_function(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Windowing by the DICOM VOI LUT Function (PS3.3 C.11.2.1.2 / C.11.2.1.3) to [0, 1]: "LINEAR" (the default,
    see `apply_window`), "LINEAR_EXACT" or "SIGMOID"."""
    function = (function or "LINEAR").upper()
    values = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -700, 700)))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0).astype(np.float32)
    return apply_window(values, center, width)


def _file_voi(values: np.ndarray, ds: Any, index: int | None, name: str) -> np.ndarray | None:
    """The file's own VOI transform for frame `index`, or None when it has none. Order: the frame's Frame VOI
    LUT (per-frame, then shared functional group), then the data set's VOI LUT Sequence, then its window."""
    for source in (_frame_item(ds, index, "FrameVOILUTSequence"), ds):
        if source is None:
            continue
        luts = source.get("VOILUTSequence")
        if luts:
            return _apply_voi_lut(values, luts[0], ds, name)
        center = _first_number(source.get("WindowCenter"))
        width = _first_number(source.get("WindowWidth"))
        if center is not None and width is not None and width > 0:
            return apply_voi_function(values, center, width, str(source.get("VOILUTFunction", "LINEAR")))
    return None


def dicom_to_array(
    ds_or_path: Any,
    *,
    window: WindowSpec = None,
    frame: int | None = None,
) -> np.ndarray:
    """Decode a DICOM image to float32 in [0, 1]: `[H, W]` (grey) or `[H, W, 3]` (colour).

    Grey images: stored values -> modality LUT (the frame's Pixel Value Transformation in enhanced multi-frame
    files, else the Modality LUT Sequence or RescaleSlope/RescaleIntercept: e.g. Hounsfield units for CT) ->
    VOI, chosen as: the `window` argument (`(centre, width)` or a name from `WINDOW_PRESETS`) > the file's own
    VOI for that frame (the Frame VOI LUT of the per-frame or shared functional group, then a VOI LUT Sequence,
    then WindowCenter/WindowWidth with its VOI LUT Function; first value when several) > min-max of the image.
    MONOCHROME1 images (high values dark) are inverted so that the output is always "high = bright". Colour
    images (RGB, YBR converted to RGB, PALETTE COLOR through its LUT) are scaled by their bit depth; `window`
    does not apply to them.

    Multi-frame files: `frame` picks a frame (0-based); without it the middle frame `n // 2` is returned. Only
    that frame is decoded.

    Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) need the decoders of `hf-meddiff[medical]`
    (pylibjpeg and its plugins). A file that cannot be decoded raises `ImageDecodeError` (a `ValueError`) naming
    the file and the reason (a missing transfer syntax or header element, corrupt compressed data, too few
    bytes for the rows the header promises), or `RuntimeError` naming the decoder to install.

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
        ds = _read_dicom(ds_or_path, name)
    elif isinstance(ds_or_path, pydicom.Dataset):
        ds = ds_or_path
        name = str(getattr(ds, "filename", None) or "the DICOM dataset")
    else:
        raise TypeError(
            f"dicom_to_array expects a path or a pydicom.Dataset, got {type(ds_or_path).__name__}."
        )
    try:
        num_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as err:
        raise ImageDecodeError(
            f"{name}: Number of Frames {ds.get('NumberOfFrames')!r} is not a number."
        ) from err
    index: int | None = None
    if num_frames > 1:
        index = num_frames // 2 if frame is None else int(frame)
        if not -num_frames <= index < num_frames:
            raise IndexError(
                f"{name} has {num_frames} frames; frame={frame} is out of range 0..{num_frames - 1}."
            )
        index %= num_frames
    elif frame not in (None, 0, -1):
        raise IndexError(
            f"{name} is a single-frame image; frame={frame} does not exist (use frame=None or 0)."
        )

    pixels = _dicom_pixels(ds, name, index)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(pixels, ds).astype(np.float64)
        except (ValueError, AttributeError, KeyError, IndexError) as err:
            raise ImageDecodeError(f"{name}: cannot apply the palette colour LUT ({err}).") from err
        return np.clip(rgb / (65535.0 if rgb.max() > 255 else 255.0), 0, 1).astype(np.float32)
    if samples == 3 or pixels.ndim == 3:
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
        return np.clip(pixels.astype(np.float64) / (2.0**bits - 1), 0, 1).astype(np.float32)

    try:
        values = _finite(_modality_values(pixels, ds, index), name)
        resolved = resolve_window(window)
        out = apply_window(values, *resolved) if resolved is not None else _file_voi(values, ds, index, name)
    except (AttributeError, KeyError, TypeError, IndexError) as err:
        raise ImageDecodeError(f"{name}: cannot apply the modality / VOI LUT of the header ({err}).") from err
    if out is None:
        out = min_max(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.asarray(out, dtype=np.float32)


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
    if len(shape) not in (2, 3, 4):
        raise ImageDecodeError(
            f"{name} has shape {shape}; expected a 2-D image, a 3-D volume or a 4-D series."
        )
    if min(shape) < 1:
        raise ImageDecodeError(f"{name} has the empty shape {shape}.")
    # Index only the voxels of the one slice shown: the whole volume is never read.
    index: list[Any] = [slice(None)] * len(img.shape)
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
        index[3] = volume
        for extra in range(4, len(img.shape)):
            index[extra] = 0
    elif len(shape) == 3:
        for extra in range(3, len(img.shape)):
            index[extra] = 0
    spatial = shape[:3] if len(shape) >= 3 else shape
    if len(spatial) == 3:
        if axis not in (0, 1, 2, -1, -2, -3):
            raise ValueError(
                f"axis must be 0, 1 or 2 for the 3-D volume {name} of shape {spatial}, got {axis}."
            )
        size = spatial[axis]
        position = size // 2 if slice_index is None else int(slice_index)
        if not -size <= position < size:
            raise IndexError(
                f"slice_index={slice_index} is out of range for axis {axis} of {name} (shape {spatial}, "
                f"valid 0..{size - 1})."
            )
        index[axis % 3] = position
        plane = [side for k, side in enumerate(spatial) if k != axis % 3]
    else:
        if slice_index not in (None, 0):
            raise IndexError(f"{name} is a 2-D image; slice_index={slice_index} does not apply.")
        index = [slice(None), slice(None)] + [0] * (len(img.shape) - 2)
        plane = list(spatial)
    _check_pixel_budget(plane[0] * plane[1], f"a {plane[0]} x {plane[1]} slice of {shape}", name)
    try:
        array = np.asarray(img.dataobj[tuple(index)])
    except (OSError, EOFError, ValueError, IndexError, TypeError) as err:
        raise ImageDecodeError(
            f"{name}: cannot read the voxels of the slice ({' '.join(str(err).split())}); the file may be "
            "truncated (its header promises more data than it holds) or corrupt."
        ) from err
    array = _numeric(array, name).reshape(plane)
    array = np.rot90(np.asarray(array, dtype=np.float64))
    return _scale(_finite(array, name), window)


# ---------------------------------------------------------------------------------------------------
# Everything else: PIL, arrays, tensors
# ---------------------------------------------------------------------------------------------------
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _pil_to_float(image: PIL.Image.Image, window: WindowSpec, name: str) -> np.ndarray:
    mode = image.mode
    try:
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            return _scale(_finite(np.asarray(image, dtype=np.float64), name), window)
        if mode in ("1", "L", "LA", "La"):
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        if mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        rgb = image.convert("RGB")
        return np.asarray(rgb, dtype=np.float32) / 255.0
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, EOFError) as err:  # a lazily loaded image whose data is broken
        raise ImageDecodeError(
            f"{name}: the image data cannot be decoded ({err}); the file may be truncated or corrupt."
        ) from err
    except Exception as err:
        raise ImageDecodeError(
            f"{name}: cannot convert a PIL image of mode {mode!r} to RGB or L ({err})."
        ) from err


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def check_png_data(data: bytes, name: str) -> None:
    """Refuse a PNG whose image data holds fewer rows than its header promises (PIL fills them with black,
    silently): raises `ImageDecodeError` naming `name`; other formats and complete PNGs pass.

    ```python
    >>> import io, PIL.Image
    >>> buffer = io.BytesIO()
    >>> PIL.Image.effect_noise((32, 32), 40).save(buffer, format="PNG")
    >>> check_png_data(buffer.getvalue(), "ok.png")

    ```
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return
    position, header, chunks = 8, None, []
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        tag = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if tag == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
        elif tag == b"IDAT":
            chunks.append(body)
        elif tag == b"IEND":
            break
        position += 12 + length
    if header is None:
        return
    width, height, depth, color, _, _, interlace = header
    bits = depth * _PNG_CHANNELS.get(color, 1)

    def pass_bytes(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits + 7) // 8)

    if interlace:
        expected = sum(
            pass_bytes((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7
        )
    else:
        expected = pass_bytes(width, height)
    try:
        held = len(zlib.decompressobj().decompress(b"".join(chunks), expected))
    except zlib.error:
        return  # PIL reports broken streams itself
    if held < expected:
        raise ImageDecodeError(
            f"{name}: the PNG header promises {width} x {height} pixels but its image data holds only "
            f"{held:,} of the {expected:,} bytes they need (about {held * height // max(expected, 1)} of {height} "
            "rows); the file is truncated or corrupt."
        )


def _decode_with_pil(source: Any, window: WindowSpec, name: str) -> np.ndarray:
    """Open (path or file object), fully decode and convert with PIL. A truncated or corrupt file and an image
    over PIL's decompression-bomb limit raise `ImageDecodeError`; a file PIL does not recognise raises
    `PIL.UnidentifiedImageError` (the caller tries the other decoders)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(source) as image:
                _check_pixel_budget(image.width * image.height, f"{image.width} x {image.height}", name)
                image.load()
                if image.format == "PNG":
                    check_png_data(_read_all(source), name)
                return _pil_to_float(image, window, name)
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as err:
        found = _BOMB_PIXELS.search(str(err))
        count = int(found.group(1)) if found else 0
        _check_pixel_budget(count, "the size its header gives", name)
        raise ImageDecodeError(f"{name}: {err}") from err
    except (ImageDecodeError, PIL.UnidentifiedImageError):
        raise
    except (OSError, SyntaxError, EOFError, ValueError) as err:
        raise ImageDecodeError(
            f"{name}: the image data cannot be decoded ({err}); the file may be truncated or corrupt."
        ) from err


def _read_all(source: Any) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read()
    source.seek(0)
    return source.read()


def _numeric(array: np.ndarray, name: str) -> np.ndarray:
    """Refuse arrays that are not real numbers (object, complex, strings, records) with the fix."""
    kind = array.dtype.kind
    if kind in "biuf":
        return array
    if kind == "c":
        raise ImageDecodeError(
            f"{name}: the image array holds complex numbers (dtype {array.dtype}, shape {tuple(array.shape)}); "
            "an image is real. Pass the magnitude (np.abs(x)) or the real part (x.real), e.g. of MRI k-space "
            "reconstructions."
        )
    if kind == "O":
        raise ImageDecodeError(
            f"{name}: the image array has dtype object (shape {tuple(array.shape)}): its elements are Python "
            "objects, not pixel values (often a ragged list of rows, or None inside). Build a numeric array, "
            "e.g. np.asarray(rows, dtype=np.float32)."
        )
    raise ImageDecodeError(
        f"{name}: the image array has dtype {array.dtype} (shape {tuple(array.shape)}), not numbers; pass an "
        "integer, float or bool array."
    )


def _array_to_float(array: np.ndarray, window: WindowSpec, name: str) -> np.ndarray:
    array = _numeric(array, name)
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
    values = _finite(array, name)
    if window is not None:
        return _scale(values, window)
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            return values.astype(np.float32)
        if low >= -1.0 and high <= 1.0:
            return ((values + 1.0) / 2.0).astype(np.float32)
    return min_max(values)


def _tensor_to_array(tensor: torch.Tensor, name: str) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.is_complex():
        return _numeric(tensor.numpy(), name)  # raises, naming the input
    if tensor.dtype in (torch.bfloat16, torch.float16) or not tensor.dtype.is_floating_point:
        tensor = tensor.float() if tensor.dtype != torch.bool else tensor
    return tensor.numpy()


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
    NaN / inf values are shown as the lowest / highest finite value, with a warning.

    Raises:
        ImageDecodeError: (a `ValueError`) the input cannot be decoded: a truncated or corrupt file, an image
            over `PIL.Image.MAX_IMAGE_PIXELS` (a possible decompression bomb; the message says how to allow
            it), a header that promises more rows than the file holds, an array with no finite value, of
            complex numbers or of Python objects. The message names the input.
        FileNotFoundError: a path that does not exist.
    """
    name = name or "image"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = path
        if not os.path.exists(path):
            raise FileNotFoundError(f"Image file not found: {path}")
        if os.path.isdir(path):
            raise ImageDecodeError(f"{path} is a folder, not an image file.")
        lower = path.lower()
        if lower.endswith(_NIFTI_SUFFIXES):
            return nifti_to_array(path, slice_index=slice_index, axis=axis, volume=volume, window=window)
        if lower.endswith(_DICOM_SUFFIXES) or _is_dicom_file(path):
            return dicom_to_array(path, window=window, frame=frame)
        try:
            return _decode_with_pil(path, window, name)
        except PIL.UnidentifiedImageError:
            try:
                return dicom_to_array(path, window=window, frame=frame)
            except Exception as err:
                raise ImageDecodeError(
                    f"Could not read {path}: it is not an image PIL can open, not NIfTI (.nii/.nii.gz) and not "
                    f"DICOM ({err})."
                ) from err
    if isinstance(source, dict) and ("bytes" in source or "path" in source):
        if source.get("bytes") is not None:
            return medical_image_to_array(
                bytes(source["bytes"]), window=window, frame=frame, slice_index=slice_index, axis=axis,
                volume=volume, name=source.get("path") or name,
            )  # fmt: skip
        if not source.get("path"):
            raise ImageDecodeError(f"{name}: the image value has neither bytes nor a path.")
        return medical_image_to_array(
            source["path"], window=window, frame=frame, slice_index=slice_index, axis=axis, volume=volume
        )
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageDecodeError(f"{name}: the image bytes are empty.")
        if data[128:132] == b"DICM":
            return dicom_to_array(_read_dicom(io.BytesIO(data), name), window=window, frame=frame)
        try:
            return _decode_with_pil(io.BytesIO(data), window, name)
        except PIL.UnidentifiedImageError as err:
            raise ImageDecodeError(
                f"{name}: the bytes are neither an image PIL can open nor a DICOM file."
            ) from err
    if isinstance(source, PIL.Image.Image):
        _check_pixel_budget(source.width * source.height, f"{source.width} x {source.height}", name)
        return _pil_to_float(source, window, name)
    if isinstance(source, torch.Tensor):
        return _array_to_float(_tensor_to_array(source, name), window, name)
    if isinstance(source, np.ndarray):
        return _array_to_float(source, window, name)
    module = type(source).__module__
    if module.startswith("pydicom"):
        return dicom_to_array(source, window=window, frame=frame)
    if module.startswith("nibabel") or (hasattr(source, "dataobj") and hasattr(source, "affine")):
        return nifti_to_array(source, slice_index=slice_index, axis=axis, volume=volume, window=window)
    if isinstance(source, (list, tuple)) and source and all(isinstance(r, (list, tuple)) for r in source):
        lengths = {len(r) for r in source}
        if len(lengths) > 1:
            raise ImageDecodeError(
                f"{name}: a nested list of rows with different lengths {sorted(lengths)} is not an image."
            )
    raise TypeError(
        f"{name}: unsupported image input of type {type(source).__name__}. Pass a file path (DICOM, NIfTI, PNG, "
        "JPEG, ...), a PIL image, a NumPy array, a torch tensor, a pydicom Dataset or a nibabel image."
    )


def verify_image(source: str | os.PathLike | bytes, *, name: str | None = None) -> tuple[int, int]:
    """Check that an image file (or its bytes) decodes, the way loaders do at load time; returns (width, height).

    PNG, JPEG, TIFF, ... are fully decoded by PIL (JPEG at 1/8 scale: the whole compressed stream is still read,
    so truncation is found); DICOM and NIfTI go through their decoders. Raises `ImageDecodeError` (truncated,
    corrupt, not an image, over the decompression-bomb limit) or `FileNotFoundError`, naming the file.

    Example:

    ```python
    >>> import io, PIL.Image
    >>> buffer = io.BytesIO()
    >>> PIL.Image.effect_noise((64, 48), 40).save(buffer, format="PNG")
    >>> verify_image(buffer.getvalue())
    (64, 48)
    >>> verify_image(buffer.getvalue()[:1500], name="cut.png")
    Traceback (most recent call last):
    ...
    hf_meddiff.models.meddiff.medical_image_meddiff.ImageDecodeError: cut.png: the image data cannot be decoded ...

    ```
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "image bytes"
        if data[128:132] == b"DICM":
            array = medical_image_to_array(data, name=name)
            return int(array.shape[1]), int(array.shape[0])
        handle: Any = io.BytesIO(data)
    else:
        path = os.fspath(source)
        name = name or path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file not found: {path}")
        if path.lower().endswith(MEDICAL_SUFFIXES) or _is_dicom_file(path):
            array = medical_image_to_array(path)
            return int(array.shape[1]), int(array.shape[0])
        handle = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(handle) as image:
                size = image.size
                _check_pixel_budget(size[0] * size[1], f"{size[0]} x {size[1]}", name)
                if image.format == "JPEG":
                    image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
                if image.format == "PNG":
                    check_png_data(_read_all(handle), name)
                return int(size[0]), int(size[1])
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as err:
        found = _BOMB_PIXELS.search(str(err))
        _check_pixel_budget(int(found.group(1)) if found else 0, "the size its header gives", name)
        raise ImageDecodeError(f"{name}: {err}") from err
    except PIL.UnidentifiedImageError as err:
        raise ImageDecodeError(f"{name}: not an image file PIL, DICOM or NIfTI readers recognise.") from err
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, EOFError, ValueError) as err:
        raise ImageDecodeError(
            f"{name}: the image data cannot be decoded ({err}); the file may be truncated or corrupt."
        ) from err


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
