"""MedPhantom: a deterministic procedural generator of multimodal medical-like cases.

Every case is one image of one of the eight modalities (`hf_meddiff.constants.MODALITIES`) with zero to
three findings of one label. Findings are rendered at known places (their boxes are exact), and a
severity grade (mild / moderate / severe) changes their size, contrast and margin. From the same case
parameters a grammar writes a report (findings + impression, with paraphrase variety), a four-option
multiple-choice question (modality, anatomy, diagnosis, grading, location or counting) and a grounded
rationale that cites the finding boxes as `<box>[x0,y0,x1,y1]</box>` (0..999).

All images are drawn with vectorised NumPy, a modality at a time in chunks, so 10,000 cases at 64 px take
a few seconds. The same `seed` gives the same bytes.

Example:

>>> from hf_meddiff.data import make_phantom_dataset, split_phantom
>>> ds = make_phantom_dataset(16, seed=0, image_size=64)
>>> sorted(set(ds["modality"])) == sorted(["ct", "mri", "xray", "ultrasound", "dermoscopy", "fundus", "oct", "microscopy"])
True
>>> ds[0]["answer"] in ("A", "B", "C", "D")
True
>>> parts = split_phantom(ds, by="modality", holdout=("oct",))
>>> set(parts["test"]["modality"])
{'oct'}
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value
from PIL import Image as PILImage

from ..constants import MEDPHANTOM_FINDINGS, MODALITIES, MODALITY_NAMES, OPTION_LETTERS, QUESTION_TYPES
from ..formatting import format_box, normalize_box
from .schema import CANONICAL_FEATURES

SEVERITIES = ("mild", "moderate", "severe")
QUADRANTS = ("upper left", "upper right", "lower left", "lower right")
NORMAL_OPTION = "no abnormality"
MULTIPLE_CHOICE_TYPES = ("modality", "anatomy", "diagnosis", "grading", "location", "counting")
MAX_FINDINGS = 3
PHANTOM_SOURCE = "medphantom"

# Extra columns MedPhantom adds to the canonical schema.
PHANTOM_FEATURES = Features(
    {
        **CANONICAL_FEATURES,
        "anatomy": Value("string"),
        "findings": List(Value("string")),
        "severity": Value("string"),
        "locations": List(Value("string")),
        "num_findings": Value("int32"),
    }
)

# Finding kinds: how a label is drawn. "bright"/"dark" solid blobs, "ring" (bright rim, dark core),
# "cystic" (dark core with a thin bright wall), "flat" (elongated, wide and thin).
_SEVERITY_RADIUS = np.array([0.065, 0.09, 0.12])  # fraction of the image side
_SEVERITY_STRENGTH = np.array([0.6, 0.8, 1.0])  # contrast
_SEVERITY_IRREGULARITY = np.array([0.0, 0.1, 0.2])  # margin lobulation amplitude
_SOFT_EDGE = 0.12  # soft-edge width in units of radius


@dataclass(frozen=True)
class ModalitySpec:
    """What a modality looks like and which anatomy / finding vocabulary it uses."""

    name: str
    color: bool
    anatomies: tuple[str, str, str]
    findings: tuple[str, str, str]
    kinds: tuple[str, str, str]  # drawing kind per finding label
    # target colour per finding label: grey level, or an RGB triple for colour modalities
    targets: tuple


MODALITY_SPECS: dict[str, ModalitySpec] = {
    "ct": ModalitySpec(
        "ct",
        False,
        ("chest", "abdomen", "head"),
        MEDPHANTOM_FINDINGS["ct"],
        ("bright", "cystic", "ring"),
        (1.0, 0.0, 1.0),
    ),
    "mri": ModalitySpec(
        "mri",
        False,
        ("brain", "knee", "spine"),
        MEDPHANTOM_FINDINGS["mri"],
        ("bright", "cystic", "flat"),
        (1.0, 0.0, 1.0),
    ),
    "xray": ModalitySpec(
        "xray",
        False,
        ("chest", "hand", "pelvis"),
        MEDPHANTOM_FINDINGS["xray"],
        ("bright", "flat", "ring"),
        (1.0, 1.0, 1.0),
    ),
    "ultrasound": ModalitySpec(
        "ultrasound",
        False,
        ("liver", "kidney", "thyroid"),
        MEDPHANTOM_FINDINGS["ultrasound"],
        ("cystic", "bright", "ring"),
        (0.0, 1.0, 1.0),
    ),
    "dermoscopy": ModalitySpec(
        "dermoscopy",
        True,
        ("trunk", "scalp", "palm"),
        MEDPHANTOM_FINDINGS["dermoscopy"],
        ("bright", "ring", "bright"),
        ((0.55, 0.33, 0.18), (0.12, 0.06, 0.06), (0.62, 0.05, 0.2)),
    ),
    "fundus": ModalitySpec(
        "fundus",
        True,
        ("left eye", "right eye", "macula"),
        MEDPHANTOM_FINDINGS["fundus"],
        ("bright", "bright", "flat"),
        ((0.3, 0.02, 0.0), (1.0, 0.95, 0.25), (1.0, 1.0, 1.0)),
    ),
    "oct": ModalitySpec(
        "oct",
        False,
        ("macula", "optic disc", "periphery"),
        MEDPHANTOM_FINDINGS["oct"],
        ("cystic", "bright", "flat"),
        (0.0, 1.0, 0.0),
    ),
    "microscopy": ModalitySpec(
        "microscopy",
        True,
        ("liver", "lymph node", "skin"),
        MEDPHANTOM_FINDINGS["microscopy"],
        ("bright", "bright", "ring"),
        ((0.22, 0.05, 0.4), (1.0, 0.97, 0.78), (0.3, 0.1, 0.55)),
    ),
}


# ------------------------------------------------------------------------------------------------
# Drawing helpers (all vectorised over a batch of n cases; coordinates are in [0, 1])
# ------------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, None, :], c[None, :, None]  # x [1,1,W], y [1,H,1]


def _col(v: np.ndarray) -> np.ndarray:
    return np.reshape(np.asarray(v, dtype=np.float32), (-1, 1, 1))


def _ellipse(x, y, cx, cy, rx, ry, soft: float = 0.02) -> np.ndarray:
    """Soft-edged filled ellipse, [n,H,W] in [0,1]; params are [n] arrays or scalars."""
    d = np.sqrt(((x - _col(cx)) / _col(rx)) ** 2 + ((y - _col(cy)) / _col(ry)) ** 2)
    edge = soft / np.minimum(_col(rx), _col(ry))
    return np.clip(0.5 + (1.0 - d) / (2 * edge), 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Smooth random field [n,H,W] (bilinear upsampling of a cells x cells grid), roughly N(0,1)."""
    coarse = rng.standard_normal((n, cells + 1, cells + 1)).astype(np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    t = (pos - i0)[None, :]
    rows = coarse[:, i0, :] * (1 - t[..., None]) + coarse[:, i0 + 1, :] * t[..., None]  # [n,H,cells+1]
    return rows[:, :, i0] * (1 - t[:, None, :]) + rows[:, :, i0 + 1] * t[:, None, :]


def _to_rgb(grey: np.ndarray, color: Sequence[float]) -> np.ndarray:
    return grey[..., None] * np.asarray(color, dtype=np.float32)


def _blend(img: np.ndarray, alpha: np.ndarray, target) -> np.ndarray:
    """Alpha-blend a grey value / RGB colour (scalar, [3] or [n,3]) into img."""
    if img.ndim == 4:
        target = np.asarray(target, dtype=np.float32)
        target = target[:, None, None, :] if target.ndim == 2 else target
        return img * (1 - alpha[..., None]) + target * alpha[..., None]
    target = np.asarray(target, dtype=np.float32)
    target = target[:, None, None] if target.ndim == 1 else target
    return img * (1 - alpha) + target * alpha


# ------------------------------------------------------------------------------------------------
# Modality backgrounds: each returns float32 [n,H,W] (grey) or [n,H,W,3] (colour) in about [0, 1].
# `anat` is the anatomy index per case (0, 1, 2), `rng` the generator of this chunk.
# ------------------------------------------------------------------------------------------------


def _render_ct(rng, anat, size):
    n = len(anat)
    x, y = _grid(size)
    j = lambda s: 1 + s * rng.uniform(-1, 1, n)  # noqa: E731  per-case jitter
    img = np.zeros((n, size, size), np.float32) + 0.02
    body = _ellipse(x, y, 0.5, 0.5, 0.46 * j(0.04), 0.42 * j(0.05))
    img = _blend(img, body, 0.45 * j(0.05))
    chest, abdomen, head = anat == 0, anat == 1, anat == 2
    lungs = _ellipse(x, y, 0.3, 0.5, 0.14 * j(0.1), 0.28 * j(0.08)) + _ellipse(
        x, y, 0.7, 0.5, 0.14 * j(0.1), 0.28 * j(0.08)
    )
    img = np.where(chest[:, None, None], _blend(img, np.clip(lungs, 0, 1), 0.22), img)
    liver = _ellipse(x, y, 0.33 * j(0.05), 0.45, 0.18 * j(0.1), 0.2 * j(0.1))
    kidneys = _ellipse(x, y, 0.32, 0.7, 0.06, 0.08) + _ellipse(x, y, 0.68, 0.7, 0.06, 0.08)
    img = np.where(
        abdomen[:, None, None], _blend(_blend(img, liver, 0.58), np.clip(kidneys, 0, 1), 0.65), img
    )
    skull = np.clip(_ellipse(x, y, 0.5, 0.5, 0.42, 0.44) - _ellipse(x, y, 0.5, 0.5, 0.37, 0.39), 0, 1)
    ventricles = _ellipse(x, y, 0.45, 0.5, 0.03, 0.09 * j(0.3)) + _ellipse(
        x, y, 0.55, 0.5, 0.03, 0.09 * j(0.3)
    )
    img = np.where(head[:, None, None], _blend(_blend(img, skull, 0.95), np.clip(ventricles, 0, 1), 0.2), img)
    spine = _ellipse(x, y, 0.5, 0.8, 0.05, 0.05)
    img = np.where(head[:, None, None], img, _blend(img, spine, 0.95))
    img = (
        img
        + 0.03 * _smooth_noise(rng, n, size, 8) * body
        + 0.025 * rng.standard_normal(img.shape).astype(np.float32)
    )
    return img


def _render_mri(rng, anat, size):
    n = len(anat)
    x, y = _grid(size)
    j = lambda s: 1 + s * rng.uniform(-1, 1, n)  # noqa: E731
    img = np.zeros((n, size, size), np.float32)
    brain, knee = anat == 0, anat == 1
    head = _ellipse(x, y, 0.5, 0.5, 0.42 * j(0.04), 0.46 * j(0.04))
    grey = _ellipse(x, y, 0.5, 0.5, 0.38, 0.42)
    folds = 0.04 * np.sin(24 * np.arctan2(y - 0.5, x - 0.5) + rng.uniform(0, 6, n)[:, None, None])
    b = _blend(_blend(img, head, 0.7), grey, 0.5) + folds * grey
    vent = _ellipse(x, y, 0.5, 0.47, 0.07 * j(0.3), 0.1 * j(0.2))
    b = _blend(b, vent, 0.85)  # bright CSF (T2-like)
    leg = _ellipse(x, y, 0.5, 0.5, 0.3 * j(0.05), 0.5, soft=0.04)
    femur = _ellipse(x, y, 0.5, 0.22, 0.17 * j(0.05), 0.2)
    tibia = _ellipse(x, y, 0.5, 0.8, 0.15 * j(0.05), 0.2)
    k = _blend(_blend(_blend(img, leg, 0.4), femur, 0.65), tibia, 0.65)
    cord = _ellipse(x, y, 0.52, 0.5, 0.05, 0.6)
    s = _blend(img, _ellipse(x, y, 0.5, 0.5, 0.4, 0.6), 0.35)
    for vy in np.linspace(0.08, 0.92, 6):
        s = _blend(s, _ellipse(x, y, 0.38, vy, 0.1, 0.055), 0.6)
    s = _blend(s, cord, 0.8)
    img = np.where(brain[:, None, None], b, np.where(knee[:, None, None], k, s))
    bias = 1 + 0.12 * _smooth_noise(rng, n, size, 3)
    img = img * bias
    n1 = 0.035 * rng.standard_normal(img.shape).astype(np.float32)
    n2 = 0.035 * rng.standard_normal(img.shape).astype(np.float32)
    return np.sqrt((img + n1) ** 2 + n2**2)  # Rician noise


def _render_xray(rng, anat, size):
    n = len(anat)
    x, y = _grid(size)
    j = lambda s: 1 + s * rng.uniform(-1, 1, n)  # noqa: E731
    img = np.zeros((n, size, size), np.float32) + 0.08
    chest, hand = anat == 0, anat == 1
    thorax = _ellipse(x, y, 0.5, 0.55, 0.46 * j(0.03), 0.5, soft=0.06)
    c = _blend(img, thorax, 0.6)
    lungs = np.clip(
        _ellipse(x, y, 0.29, 0.5, 0.17 * j(0.06), 0.33 * j(0.05), 0.05)
        + _ellipse(x, y, 0.71, 0.5, 0.17 * j(0.06), 0.33 * j(0.05), 0.05),
        0,
        1,
    )
    c = _blend(c, lungs, 0.22)
    ribs = 0.5 + 0.5 * np.sin(
        2 * np.pi * (y * 7 + 0.15 * np.abs(x - 0.5)) + rng.uniform(0, 6, n)[:, None, None]
    )
    c = c + 0.07 * ribs * lungs
    c = _blend(c, _ellipse(x, y, 0.56, 0.62, 0.14 * j(0.1), 0.15, 0.04), 0.62)  # heart
    h = _blend(img, _ellipse(x, y, 0.5, 0.75, 0.3, 0.25, 0.04), 0.5)
    for fx, ang in zip((0.22, 0.38, 0.52, 0.66, 0.82), (-0.35, -0.1, 0.0, 0.1, 0.3)):
        bone = _ellipse(x + ang * (y - 0.6), y, fx, 0.42, 0.045, 0.3 * j(0.08), 0.02)
        h = _blend(h, bone, 0.85)
    p = _blend(img, _ellipse(x, y, 0.5, 0.5, 0.48, 0.4, 0.06), 0.5)
    ring = lambda cx: np.clip(_ellipse(x, y, cx, 0.5, 0.17, 0.2) - _ellipse(x, y, cx, 0.5, 0.11, 0.14), 0, 1)  # noqa: E731
    p = _blend(_blend(_blend(p, ring(0.3), 0.85), ring(0.7), 0.85), _ellipse(x, y, 0.5, 0.22, 0.1, 0.1), 0.8)
    img = np.where(chest[:, None, None], c, np.where(hand[:, None, None], h, p))
    return (
        img + 0.04 * _smooth_noise(rng, n, size, 5) + 0.02 * rng.standard_normal(img.shape).astype(np.float32)
    )


def _render_ultrasound(rng, anat, size):
    n = len(anat)
    x, y = _grid(size)
    j = lambda s: 1 + s * rng.uniform(-1, 1, n)  # noqa: E731
    ang = np.arctan2(x - 0.5, y + 0.35)
    rad = np.sqrt((x - 0.5) ** 2 + (y + 0.35) ** 2)
    fan = ((np.abs(ang) < 0.72) & (rad > 0.38) & (rad < 1.33)).astype(np.float32) * np.ones(
        (n, 1, 1), np.float32
    )
    img = 0.3 * fan * j(0.1)[:, None, None]
    organ = np.where(
        (anat == 0)[:, None, None],
        _ellipse(x, y, 0.5, 0.5, 0.4 * j(0.05), 0.3 * j(0.05), 0.04),
        np.where(
            (anat == 1)[:, None, None],
            _ellipse(x, y, 0.5, 0.5, 0.38 * j(0.05), 0.22 * j(0.05), 0.03),
            np.clip(_ellipse(x, y, 0.3, 0.5, 0.16, 0.3) + _ellipse(x, y, 0.7, 0.5, 0.16, 0.3), 0, 1),
        ),
    )
    img = _blend(img, organ * fan, 0.62)
    sinus = _ellipse(x, y, 0.5, 0.5, 0.2, 0.07) * (anat == 1)[:, None, None]
    img = _blend(img, sinus * fan, 0.85)
    return img, fan


def _ultrasound_speckle(rng, img, fan, size):
    speckle = rng.gamma(7.0, 1 / 7.0, img.shape).astype(np.float32)
    img = img * speckle * (1 - 0.25 * np.linspace(0, 1, size, dtype=np.float32)[None, :, None])
    return img * fan


def _render_dermoscopy(rng, anat, size):
    n = len(anat)
    x, y = _grid(size)
    tone = np.stack([rng.uniform(0.8, 0.95, n), rng.uniform(0.6, 0.75, n), rng.uniform(0.5, 0.65, n)], 1)
    mottle = 0.05 * _smooth_noise(rng, n, size, 6)
    img = (
        np.ones((n, size, size, 3), np.float32) * tone[:, None, None, :].astype(np.float32)
        + mottle[..., None]
    )
    ridges = 0.03 * np.sin(2 * np.pi * 9 * (x + 0.3 * y) + rng.uniform(0, 6, n)[:, None, None])
    img = img - (anat == 2)[:, None, None, None] * ridges[..., None]  # palm: dermatoglyphic ridges
    hair = np.zeros((n, size, size), np.float32)
    for _ in range(5):  # scalp: dark hair strands
        a, b, ph = rng.uniform(-1.5, 1.5, n), rng.uniform(0.0, 1.0, n), rng.uniform(0.015, 0.03, n)
        d = np.abs(y - _col(a) * (x - 0.5) - _col(b)) / np.sqrt(1 + _col(a) ** 2)
        hair = np.maximum(hair, np.clip(1 - d / _col(ph), 0, 1))
    hair *= (anat == 1)[:, None, None]
    img = _blend(img, hair * 0.85, (0.15, 0.1, 0.08))
    vign = np.clip(1.25 - 1.1 * np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2) * 1.4, 0, 1)
    img = img * vign[..., None]
    return img + 0.02 * rng.standard_normal(img.shape).astype(np.float32)


def _render_fundus(rng, anat, size):
    n = len(anat)
    x, y = _grid(size)
    disc = _ellipse(x, y, 0.5, 0.5, 0.485, 0.485, 0.01)
    base = np.stack([rng.uniform(0.75, 0.9, n), rng.uniform(0.3, 0.4, n), rng.uniform(0.08, 0.15, n)], 1)
    shade = 1 - 0.35 * ((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.25
    img = base[:, None, None, :].astype(np.float32) * (shade * disc)[..., None]
    od_x = np.where(anat == 0, 0.3, np.where(anat == 1, 0.7, 0.5 + rng.uniform(-0.05, 0.05, n)))
    od_x = np.where(anat == 2, np.where(rng.random(n) < 0.5, 0.2, 0.8), od_x)
    od_y = 0.5 + rng.uniform(-0.04, 0.04, n)
    optic = _ellipse(x, y, od_x, od_y, 0.075, 0.085, 0.015)
    img = _blend(img, optic, (1.0, 0.9, 0.6))
    vessels = np.zeros((n, size, size), np.float32)
    for k, a0 in enumerate(np.linspace(-2.6, 2.6, 6)):
        a = a0 + rng.uniform(-0.2, 0.2, n)
        dx, dy = np.cos(a), np.sin(a)
        px, py = x - _col(od_x), y - _col(od_y)
        along = px * _col(dx) + py * _col(dy)
        bend = 0.25 * along**2 * (1 if k % 2 else -1)
        perp = np.abs(-px * _col(dy) + py * _col(dx) - bend)
        vessels = np.maximum(vessels, np.clip(1 - perp / 0.012, 0, 1) * (along > 0))
    img = _blend(img, vessels * 0.7 * disc, (0.45, 0.05, 0.03))
    mac_x = np.where(anat == 2, 0.5, np.where(anat == 0, 0.62, 0.38))
    img = _blend(img, _ellipse(x, y, mac_x, 0.5, 0.07, 0.07, 0.05) * 0.3, (0.35, 0.1, 0.05))
    img = img + 0.02 * _smooth_noise(rng, n, size, 8)[..., None] * disc[..., None]
    return img + 0.015 * rng.standard_normal(img.shape).astype(np.float32) * disc[..., None]


def _render_oct(rng, anat, size):
    n = len(anat)
    x, y = _grid(size)
    top = 0.13 + 0.03 * np.sin(2 * np.pi * x + rng.uniform(0, 6, n)[:, None, None])
    dip_depth = np.where(anat == 0, 0.1, np.where(anat == 1, 0.22, 0.0)) * (1 + 0.15 * rng.uniform(-1, 1, n))
    dip = _col(dip_depth) * np.exp(-(((x - 0.5) / np.where(anat == 1, 0.1, 0.07)[:, None, None]) ** 2))
    surface = top + dip
    depth = y - surface  # below the inner retinal surface when > 0
    layers = np.zeros((n, size, size), np.float32)
    for d0, d1, v in (
        (0.0, 0.05, 0.85),
        (0.05, 0.25, 0.5),
        (0.25, 0.33, 0.32),
        (0.33, 0.62, 0.6),
        (0.62, 0.72, 0.95),
    ):
        layers = np.where((depth >= d0) & (depth < d1), v, layers)
    layers = np.where(depth >= 0.72, 0.5 * np.exp(-(depth - 0.72) * 3), layers)
    img = layers.astype(np.float32)
    speckle = rng.gamma(4.0, 0.25, img.shape).astype(np.float32)
    return img * speckle * 0.9 + 0.03


def _render_microscopy(rng, anat, size):
    n = len(anat)
    cells = np.where(anat == 0, 10, np.where(anat == 1, 16, 7))
    img = np.empty((n, size, size, 3), np.float32)
    pink = np.array([0.93, 0.7, 0.82], np.float32)
    purple = np.array([0.35, 0.2, 0.6], np.float32)
    for a in range(3):
        sel = np.flatnonzero(anat == a)
        if len(sel) == 0:
            continue
        field = _smooth_noise(rng, len(sel), size, int(cells[sel[0]]))
        thr = 1.1 if a != 1 else 0.8  # lymph node: dense nuclei
        nuclei = np.clip((field - thr) * 4, 0, 1)
        stroma = 0.06 * _smooth_noise(rng, len(sel), size, 4)
        img[sel] = pink + stroma[..., None] + nuclei[..., None] * (purple - pink)
        if a == 2:  # skin: a purple epidermis band at the top
            x, y = _grid(size)
            band = np.clip(1 - np.abs(y - 0.1 - 0.04 * np.sin(6 * x)) / 0.06, 0, 1) * np.ones(
                (len(sel), 1, 1)
            )
            img[sel] = _blend(img[sel], band * 0.7, purple)
    return img + 0.02 * rng.standard_normal(img.shape).astype(np.float32)


_RENDERERS = {
    "ct": _render_ct,
    "mri": _render_mri,
    "xray": _render_xray,
    "ultrasound": _render_ultrasound,
    "dermoscopy": _render_dermoscopy,
    "fundus": _render_fundus,
    "oct": _render_oct,
    "microscopy": _render_microscopy,
}


def _finding_alpha(x, y, cx, cy, rx, ry, irregularity, lobes, phase):
    """Soft blob with a lobulated margin; alpha float32 [n,H,W]. Zero outside the case's box."""
    dx, dy = x - _col(cx), y - _col(cy)
    d = np.sqrt((dx / _col(rx)) ** 2 + (dy / _col(ry)) ** 2)
    if np.any(np.asarray(irregularity) > 0):
        d = d / (1 + _col(irregularity) * np.sin(_col(lobes) * np.arctan2(dy, dx) + _col(phase)))
    return np.clip(0.5 + (1.0 - d) * np.float32(1 / (2 * _SOFT_EDGE)), 0.0, 1.0)


def _draw_findings(img, spec, cases, slot, x, y):
    """Composite finding `slot` of each case in `cases` (a dict of [n]-arrays) into img (in place)."""
    color = img.ndim == 4
    for li, kind in enumerate(spec.kinds):
        rows = np.flatnonzero((cases["count"] > slot) & (cases["label"] == li))
        if len(rows) == 0:
            continue
        geo = [cases[k][rows, slot] for k in ("cx", "cy", "rx", "ry", "irregularity", "lobes", "phase")]
        s = _SEVERITY_STRENGTH[cases["severity"][rows]].astype(np.float32)[:, None, None]
        alpha = _finding_alpha(x, y, *geo) * s
        target = spec.targets[li]
        sub = img[rows]
        if kind in ("bright", "flat"):
            sub = _blend(sub, alpha, target)
        elif kind == "ring":
            inner = _finding_alpha(x, y, geo[0], geo[1], geo[2] * 0.55, geo[3] * 0.55, *geo[4:]) * s
            sub = _blend(_blend(sub, alpha, target), inner * 0.9, (0.0, 0.0, 0.0) if color else 0.05)
            if spec.name == "dermoscopy":  # melanoma: blue-grey veil in the centre
                sub = _blend(sub, inner * 0.5, (0.35, 0.4, 0.55))
        elif kind == "cystic":
            sub = _blend(
                _blend(sub, alpha, (1.0, 1.0, 1.0) if color else 0.95),
                np.clip(alpha * 1.6 - 0.6, 0, 1),
                target,
            )
        img[rows] = sub
    return img


# ------------------------------------------------------------------------------------------------
# Case sampling
# ------------------------------------------------------------------------------------------------


def _sample_cases(rng, num_cases, modalities, question_types):
    n = num_cases
    mod = rng.permutation(np.arange(n) % len(modalities))
    qt = rng.permutation(np.arange(n) % len(question_types))
    qnames = np.asarray(question_types)[qt]
    count = rng.choice(4, size=n, p=[0.25, 0.45, 0.2, 0.1])
    count = np.where(qnames == "counting", rng.integers(0, 4, n), count)
    count = np.where(qnames == "location", 1, count)
    count = np.where(qnames == "grading", rng.choice([1, 2, 3], size=n, p=[0.5, 0.3, 0.2]), count)
    severity = rng.integers(0, 3, n)
    quads = np.argsort(rng.random((n, 4)), axis=1)[:, :MAX_FINDINGS]  # distinct quadrants per finding
    qx, qy = quads % 2, quads // 2
    cx = np.where(
        qx == 0, rng.uniform(0.2, 0.33, (n, MAX_FINDINGS)), rng.uniform(0.67, 0.8, (n, MAX_FINDINGS))
    )
    cy = np.where(
        qy == 0, rng.uniform(0.2, 0.33, (n, MAX_FINDINGS)), rng.uniform(0.67, 0.8, (n, MAX_FINDINGS))
    )
    radius = _SEVERITY_RADIUS[severity][:, None] * rng.uniform(0.9, 1.1, (n, MAX_FINDINGS))
    return {
        "modality": mod,
        "qtype": qt,
        "anatomy": rng.integers(0, 3, n),
        "label": rng.integers(0, 3, n),
        "severity": severity,
        "count": count,
        "quadrant": quads,
        "cx": cx,
        "cy": cy,
        "radius": radius,
        "aspect": rng.uniform(0.9, 1.1, (n, MAX_FINDINGS)),
        "flat_horizontal": rng.random((n, MAX_FINDINGS)) < 0.5,
        "irregularity": _SEVERITY_IRREGULARITY[severity][:, None] * rng.uniform(0.8, 1.2, (n, MAX_FINDINGS)),
        "lobes": rng.integers(3, 7, (n, MAX_FINDINGS)),
        "phase": rng.uniform(0, 2 * np.pi, (n, MAX_FINDINGS)),
        "text_rng": rng.integers(0, 2**63 - 1, n),
    }


def _finding_shape(cases, spec):
    """Per-finding radii (rx, ry) from kind: 'flat' findings are wide and thin."""
    r = cases["radius"]
    flat = np.array([k == "flat" for k in spec.kinds])[cases["label"]][:, None]
    long, short = r * 1.3, r * 0.6
    rx = np.where(flat, np.where(cases["flat_horizontal"], long, short), r * cases["aspect"])
    ry = np.where(flat, np.where(cases["flat_horizontal"], short, long), r / cases["aspect"])
    return rx, ry


def _finding_boxes_px(cases, i, size):
    """Pixel xyxy boxes of the findings of case i (tight bound of the drawn blob incl. soft edge)."""
    boxes = []
    for s in range(int(cases["count"][i])):
        grow = (1 + cases["irregularity"][i, s]) * (1 + _SOFT_EDGE)
        ex, ey = cases["rx"][i, s] * grow, cases["ry"][i, s] * grow
        cx, cy = cases["cx"][i, s], cases["cy"][i, s]
        x0, x1 = max(0.0, (cx - ex) * size), min(float(size), (cx + ex) * size)
        y0, y1 = max(0.0, (cy - ey) * size), min(float(size), (cy + ey) * size)
        boxes.append([np.floor(x0), np.floor(y0), np.ceil(x1), np.ceil(y1)])
    return boxes


def _to_png(arr: np.ndarray) -> bytes:
    u8 = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(u8).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def render_phantom_images(cases: dict, spec: ModalitySpec, rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw the background and findings of a batch of cases of one modality: float32 [n,H,W(,3)] in [0,1]."""
    out = _RENDERERS[spec.name](rng, cases["anatomy"], size)
    fan = None
    if spec.name == "ultrasound":
        out, fan = out
    x, y = _grid(size)
    for slot in range(MAX_FINDINGS):
        out = _draw_findings(out, spec, cases, slot, x, y)
    if fan is not None:
        out = _ultrasound_speckle(rng, out, fan, size)
    return np.clip(out, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Text: reports, questions, rationales
# ------------------------------------------------------------------------------------------------

_SIZE_WORDS = {"mild": "small", "moderate": "medium-sized", "severe": "large"}
_MARGIN_WORDS = {"mild": "smooth", "moderate": "lobulated", "severe": "irregular"}
_CONTRAST_WORDS = {"mild": "faint", "moderate": "clear", "severe": "marked"}
_COUNT_WORDS = ("no", "one", "two", "three")

_INTRO = (
    "{Mod} image of the {anat}.",
    "{Mod} study of the {anat}.",
    "This {mod} image shows the {anat}.",
    "{Mod} of the {anat} is provided.",
)
_FINDING = (
    "A {size} {label} is seen in the {loc}.",
    "There is a {size} {label} in the {loc}.",
    "The {loc} shows a {size} {label}.",
    "{A_label} is present in the {loc}, {size} with {margin} margins.",
    "In the {loc} there is {a_label} with {margin} margins.",
)
_NORMAL_FINDING = (
    "No focal lesion is seen.",
    "No abnormality is identified.",
    "The {anat} appears normal.",
    "There is no focal abnormality.",
)
_CLOSING = ("The remaining structures are unremarkable.", "Otherwise normal appearance.", "")
_IMPRESSION = (
    "{Sev} {label}.",
    "Findings consistent with {sev} {label}.",
    "{Count} {sev} {label} lesion{s}.",
    "{Sev} {label} in the {loc}.",
)
_IMPRESSION_NORMAL = ("No acute abnormality.", "Normal {mod} of the {anat}.", "Normal study.")

_QUESTIONS = {
    "modality": (
        "What imaging modality is shown?",
        "Which modality was used for this image?",
        "What type of image is this?",
    ),
    "anatomy": (
        "Which anatomical region is shown?",
        "What body part is imaged?",
        "Which structure does this image show?",
    ),
    "diagnosis": (
        "What is the most likely diagnosis?",
        "Which abnormality is present?",
        "What finding is seen in this image?",
    ),
    "grading": (
        "What is the severity of the {label}?",
        "How severe is the {label}?",
        "What grade is the {label}?",
    ),
    "location": (
        "Where is the {label} located?",
        "In which part of the image is the {label}?",
        "Where is the abnormality?",
    ),
    "counting": (
        "How many lesions are visible?",
        "How many abnormal areas are there?",
        "What is the number of lesions?",
    ),
    "open": (
        "What is the most likely diagnosis?",
        "Which abnormality is present?",
        "What finding is seen in this image?",
    ),
}
ALL_ANATOMIES = tuple(dict.fromkeys(a for s in MODALITY_SPECS.values() for a in s.anatomies))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _a(word: str) -> str:
    """'a nodule', 'an abscess', 'an MRI', 'an X-ray', 'a CT'."""
    acronym = word[:2].isupper() or word[:2] == "X-"
    vowel = word[:1] in ("AEFHILMNORSX" if acronym else "aeiouAEIOU")
    return ("an " if vowel else "a ") + word


@dataclass
class PhantomCase:
    """One case with everything the text grammar needs (all fields are plain Python)."""

    modality: str
    anatomy: str
    label: str
    severity: str
    locations: list[str]
    boxes: list[list[int]]  # normalised 0..999 xyxy
    question_type: str


def phantom_report(case: PhantomCase, rng: np.random.Generator) -> str:
    """'Findings: … Impression: …' written from the case with paraphrase variety."""
    mod = MODALITY_NAMES[case.modality]
    fill = {"mod": mod, "Mod": _cap(mod), "anat": case.anatomy}
    parts = [rng.choice(_INTRO).format(**fill)]
    sev = case.severity
    if case.locations:
        for loc in case.locations:
            parts.append(
                rng.choice(_FINDING).format(
                    size=_SIZE_WORDS[sev],
                    label=case.label,
                    a_label=_a(case.label),
                    A_label=_cap(_a(case.label)),
                    loc=loc,
                    margin=_MARGIN_WORDS[sev],
                )
            )
        n = len(case.locations)
        templates = _IMPRESSION[:3] if n > 1 else _IMPRESSION
        impression = rng.choice(templates).format(
            Sev=_cap(sev),
            sev=sev,
            label=case.label,
            Count=_cap(_COUNT_WORDS[n]),
            s="s" if n > 1 else "",
            loc=case.locations[0],
        )
    else:
        parts.append(rng.choice(_NORMAL_FINDING).format(**fill))
        impression = rng.choice(_IMPRESSION_NORMAL).format(**fill)
    closing = rng.choice(_CLOSING)
    if closing:
        parts.append(closing)
    return "Findings: " + " ".join(parts) + " Impression: " + impression


def _options(correct: str, pool: Sequence[str], rng: np.random.Generator) -> tuple[list[str], str]:
    distractors = [p for p in pool if p != correct]
    picks = (
        list(rng.choice(distractors, size=3, replace=False)) if len(distractors) > 3 else list(distractors)
    )
    opts = [correct, *(str(p) for p in picks)]
    order = rng.permutation(len(opts))
    opts = [opts[k] for k in order]
    return opts, OPTION_LETTERS[opts.index(correct)]


def phantom_question(case: PhantomCase, rng: np.random.Generator) -> tuple[str, list[str], str, str]:
    """(question, options, answer letter or text, correct option text) for the case's question type."""
    spec = MODALITY_SPECS[case.modality]
    qt = case.question_type
    q = str(rng.choice(_QUESTIONS[qt])).format(label=case.label)
    n = len(case.locations)
    if qt == "modality":
        correct, pool = MODALITY_NAMES[case.modality], list(MODALITY_NAMES.values())
    elif qt == "anatomy":
        others = [a for a in ALL_ANATOMIES if a not in spec.anatomies]
        correct, pool = case.anatomy, [*spec.anatomies, str(rng.choice(others))]
    elif qt in ("diagnosis", "open"):
        correct, pool = (case.label if n else NORMAL_OPTION), [*spec.findings, NORMAL_OPTION]
    elif qt == "grading":
        correct, pool = case.severity, [*SEVERITIES, "none"]
    elif qt == "location":
        correct, pool = case.locations[0], list(QUADRANTS)
    elif qt == "counting":
        correct, pool = str(n), ["0", "1", "2", "3"]
    else:
        raise ValueError(f"Unknown question type {qt!r}; use one of {QUESTION_TYPES}.")
    if qt == "open":
        return q, [], correct, correct
    opts, letter = _options(correct, pool, rng)
    return q, opts, letter, correct


def phantom_rationale(case: PhantomCase, answer: str, correct_text: str) -> str:
    """Grounded step-by-step reasoning that cites each finding's box and ends with the answer."""
    mod = MODALITY_NAMES[case.modality]
    steps = [f"The image is {_a(mod)} of the {case.anatomy}."]
    sev = case.severity
    for loc, box in zip(case.locations, case.boxes):
        steps.append(
            f"{_cap(_a(case.label))} is visible at {format_box(box)} in the {loc}; it is {_SIZE_WORDS[sev]} "
            f"with {_MARGIN_WORDS[sev]} margins and {_CONTRAST_WORDS[sev]} contrast."
        )
    if not case.locations:
        steps.append("No focal lesion is visible.")
    qt = case.question_type
    n = len(case.locations)
    if qt == "modality":
        steps.append(f"The appearance is typical of {mod}.")
    elif qt == "anatomy":
        steps.append(f"The visible structures are those of the {case.anatomy}.")
    elif qt in ("diagnosis", "open"):
        steps.append(f"The appearance fits {case.label}." if n else "The study is normal.")
    elif qt == "grading":
        steps.append(f"The size, contrast and margins indicate a {sev} grade.")
    elif qt == "location":
        steps.append(f"The lesion lies in the {case.locations[0]} of the image.")
    elif qt == "counting":
        steps.append(f"Counting the lesions gives {_COUNT_WORDS[n]}.")
    tail = (
        f"So the answer is {answer}."
        if answer == correct_text
        else f"So the answer is {answer} ({correct_text})."
    )
    steps.append(tail)
    return " ".join(steps)


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


def _check_choice(name: str, values: Sequence[str] | None, allowed: Sequence[str]) -> tuple[str, ...]:
    if values is None:
        return tuple(allowed)
    if isinstance(values, str):
        values = (values,)
    values = tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(
            f"make_phantom_dataset: unknown {name} {bad or values!r}; choose from {tuple(allowed)}."
        )
    return values


def make_phantom_dataset(
    num_cases: int,
    seed: int = 0,
    image_size: int = 64,
    *,
    modalities: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    chunk_size: int = 512,
) -> Dataset:
    """Generate `num_cases` MedPhantom cases as a canonical `datasets.Dataset` (one VQA question per row).

    Args:
        num_cases: number of cases (= rows).
        seed: random seed; the same seed and arguments give byte-identical images and identical text.
        image_size: side of the square images in pixels, 32..256.
        modalities: subset of `hf_meddiff.constants.MODALITIES` (default: all eight, balanced).
        question_types: subset of `("modality", "anatomy", "diagnosis", "grading", "location", "counting",
            "open")` (default: the six multiple-choice types, balanced). "open" questions have no options and
            the answer is the finding text.
        split_fractions: i.i.d. train / validation / test fractions written to the `split` column.
        chunk_size: cases drawn at once (bounds memory: chunk_size * image_size**2 * 3 floats).

    Returns:
        A `Dataset` with `CANONICAL_FEATURES` plus `anatomy` (str), `findings` (list of labels, one per
        finding), `severity` ("none" / "mild" / "moderate" / "severe"), `locations` (quadrant per finding:
        "upper left", … in image coordinates) and `num_findings`. Images are PNG, mode "L" for CT, MRI,
        X-ray, ultrasound and OCT and "RGB" for dermoscopy, fundus and microscopy. `boxes` hold each
        finding's label and 0..999 xyxy box, which bounds every pixel the finding changed.

    Example:

    >>> ds = make_phantom_dataset(8, seed=1, image_size=32, modalities=("dermoscopy",))
    >>> ds[0]["image"].size, ds[0]["image"].mode, set(ds["modality"])
    ((32, 32), 'RGB', {'dermoscopy'})
    """
    if not isinstance(num_cases, (int, np.integer)) or num_cases < 1:
        raise ValueError(f"make_phantom_dataset: num_cases must be a positive integer, got {num_cases!r}.")
    if not 32 <= int(image_size) <= 256:
        raise ValueError(
            f"make_phantom_dataset: image_size must be within 32..256 pixels, got {image_size!r}."
        )
    if len(split_fractions) != 3 or min(split_fractions) < 0 or abs(sum(split_fractions) - 1) > 1e-6:
        raise ValueError(
            f"split_fractions must be three non-negative numbers summing to 1, got {split_fractions!r}."
        )
    modalities = _check_choice("modality", modalities, MODALITIES)
    question_types = _check_choice(
        "question type", question_types or MULTIPLE_CHOICE_TYPES, (*MULTIPLE_CHOICE_TYPES, "open")
    )
    size = int(image_size)
    rng = np.random.default_rng(seed)
    cases = _sample_cases(rng, int(num_cases), modalities, question_types)
    n = int(num_cases)
    split_draw = rng.random(n)
    c1, c2 = split_fractions[0], split_fractions[0] + split_fractions[1]
    splits = np.where(split_draw < c1, "train", np.where(split_draw < c2, "validation", "test"))

    images: list[bytes | None] = [None] * n
    rx_all = np.zeros((n, MAX_FINDINGS))
    ry_all = np.zeros((n, MAX_FINDINGS))
    for mi, mod in enumerate(modalities):
        spec = MODALITY_SPECS[mod]
        idx = np.flatnonzero(cases["modality"] == mi)
        sub_all = {k: v[idx] for k, v in cases.items()}
        rx, ry = _finding_shape(sub_all, spec)
        rx_all[idx], ry_all[idx] = rx, ry
        for start in range(0, len(idx), chunk_size):
            part = idx[start : start + chunk_size]
            sub = {k: v[part] for k, v in cases.items()}
            sub["rx"], sub["ry"] = rx_all[part], ry_all[part]
            chunk_rng = np.random.default_rng([seed, mi, start])
            arr = render_phantom_images(sub, spec, chunk_rng, size)
            for k, i in enumerate(part):
                images[i] = _to_png(arr[k])
    cases["rx"], cases["ry"] = rx_all, ry_all

    cols: dict[str, list] = {k: [] for k in PHANTOM_FEATURES}
    for i in range(n):
        spec = MODALITY_SPECS[modalities[cases["modality"][i]]]
        count = int(cases["count"][i])
        label = spec.findings[cases["label"][i]]
        sev = SEVERITIES[cases["severity"][i]]
        locs = [QUADRANTS[q] for q in cases["quadrant"][i, :count]]
        boxes = [normalize_box(b, size, size) for b in _finding_boxes_px(cases, i, size)]
        case = PhantomCase(
            spec.name,
            spec.anatomies[cases["anatomy"][i]],
            label,
            sev,
            locs,
            boxes,
            question_types[cases["qtype"][i]],
        )
        text_rng = np.random.default_rng(int(cases["text_rng"][i]))
        question, options, answer, correct = phantom_question(case, text_rng)
        cols["id"].append(f"medphantom-s{seed}-{i:06d}")
        cols["image"].append({"bytes": images[i], "path": None})
        cols["modality"].append(spec.name)
        cols["question"].append(question)
        cols["options"].append(options)
        cols["answer"].append(answer)
        cols["question_type"].append(case.question_type)
        cols["report"].append(phantom_report(case, text_rng))
        cols["rationale"].append(phantom_rationale(case, answer, correct))
        cols["boxes"].append([{"label": label, "bbox": b} for b in boxes])
        cols["split"].append(str(splits[i]))
        cols["source"].append(PHANTOM_SOURCE)
        cols["anatomy"].append(case.anatomy)
        cols["findings"].append([label] * count)
        cols["severity"].append(sev if count else "none")
        cols["locations"].append(locs)
        cols["num_findings"].append(count)
    return Dataset.from_dict(cols, features=PHANTOM_FEATURES)


def split_phantom(
    dataset: Dataset,
    by: str = "iid",
    holdout: Sequence[str] | str | None = None,
) -> DatasetDict:
    """Select generalisation splits of a MedPhantom (or any canonical) dataset.

    - `by="iid"`: the `split` column as it is -> `train` / `validation` / `test`.
    - `by="modality"` or `by="question_type"`: rows whose value is in `holdout` form `test` (all of them);
      the other rows form `train` and `validation` according to their `split` column (their i.i.d. test
      rows are dropped so that `test` is purely out-of-distribution).

    Example:

    >>> ds = make_phantom_dataset(24, seed=0, image_size=32)
    >>> parts = split_phantom(ds, by="question_type", holdout=["counting"])
    >>> set(parts["test"]["question_type"]), "counting" in parts["train"]["question_type"]
    ({'counting'}, False)
    """
    if by not in ("iid", "modality", "question_type"):
        raise ValueError(f"split_phantom: by must be 'iid', 'modality' or 'question_type', got {by!r}.")
    split_col = np.asarray(dataset["split"])
    if by == "iid":
        return DatasetDict(
            {s: dataset.select(np.flatnonzero(split_col == s)) for s in ("train", "validation", "test")}
        )
    if holdout is None:
        raise ValueError(f"split_phantom(by={by!r}) needs holdout=, e.g. holdout=('oct', 'microscopy').")
    holdout = (holdout,) if isinstance(holdout, str) else tuple(holdout)
    allowed = MODALITIES if by == "modality" else QUESTION_TYPES
    bad = [h for h in holdout if h not in allowed]
    if bad:
        raise ValueError(f"split_phantom: unknown {by} {bad!r} in holdout; choose from {allowed}.")
    values = np.asarray(dataset[by])
    held = np.isin(values, holdout)
    return DatasetDict(
        {
            "train": dataset.select(np.flatnonzero(~held & (split_col == "train"))),
            "validation": dataset.select(np.flatnonzero(~held & (split_col == "validation"))),
            "test": dataset.select(np.flatnonzero(held)),
        }
    )
