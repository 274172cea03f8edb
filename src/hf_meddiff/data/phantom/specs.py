"""MedPhantom's vocabulary: what each modality looks like (`ModalitySpec`), its anatomies and finding labels, the
severity grades and how they change a finding's size, contrast and margin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...constants import MEDPHANTOM_FINDINGS

SEVERITIES = ("mild", "moderate", "severe")
QUADRANTS = ("upper left", "upper right", "lower left", "lower right")
NORMAL_OPTION = "no abnormality"
MULTIPLE_CHOICE_TYPES = ("modality", "anatomy", "diagnosis", "grading", "location", "counting")
MAX_FINDINGS = 3
PHANTOM_SOURCE = "medphantom"

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


ALL_ANATOMIES = tuple(dict.fromkeys(a for s in MODALITY_SPECS.values() for a in s.anatomies))
