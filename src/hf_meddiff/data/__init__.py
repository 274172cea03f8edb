"""Data: the canonical schema, the MedPhantom generator, public-set loaders, medical image IO."""

from .phantom import PHANTOM_FEATURES, make_phantom_dataset, split_phantom
from .schema import CANONICAL_COLUMNS, CANONICAL_FEATURES

__all__ = [
    "CANONICAL_COLUMNS",
    "CANONICAL_FEATURES",
    "PHANTOM_FEATURES",
    "make_phantom_dataset",
    "split_phantom",
]
