"""MedPhantom images: case geometry sampled per case, backgrounds drawn per modality and findings composited at
known places (vectorised NumPy over a batch of cases; coordinates in [0, 1])."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image as PILImage

from .specs import (
    _SEVERITY_IRREGULARITY,
    _SEVERITY_RADIUS,
    _SEVERITY_STRENGTH,
    _SOFT_EDGE,
    MAX_FINDINGS,
    ModalitySpec,
)

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
