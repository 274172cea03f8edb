"""MedDiff generation: configuration and samplers (owned by the generation work; being written)."""


class MedDiffGenerationMixin:
    """Adds `generate` to `MedDiffForMaskedDiffusion` (filled in by the generation module)."""
