"""Model families. Importing this package registers MedDiff with the transformers Auto classes."""

from . import meddiff  # noqa: F401
