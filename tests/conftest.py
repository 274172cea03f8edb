import os

import pytest

# The suite is offline by construction: make any accidental Hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Tiny models run fastest (and reproducibly) on one thread; more threads only oversubscribe 2-core CI.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Every test starts seeded and on one thread, whatever an earlier test (or a recipe it ran) set.
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    # A trainer initialises accelerate's process-wide state (device, mixed precision); the next test's trainer may
    # want other settings (e.g. TRL configs default to bf16, the DDPO tests to fp32), so every test starts afresh.
    import sys

    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, PartialState

        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._reset_state()
