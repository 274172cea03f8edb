"""Data: the canonical schema, the MedPhantom generator, public-set loaders, medical image IO."""

from .schema import CANONICAL_COLUMNS, CANONICAL_FEATURES

__all__ = ["CANONICAL_COLUMNS", "CANONICAL_FEATURES"]
