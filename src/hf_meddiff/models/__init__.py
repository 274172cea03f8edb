"""Model families. Importing this package registers MedDiff with the transformers Auto classes, lazily (see
`hf_meddiff.models.meddiff`)."""

from . import meddiff  # noqa: F401
