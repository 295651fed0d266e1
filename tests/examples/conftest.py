"""Fixtures of the example tests (the example itself is the installed package `dsta`, see examples/dsta/pyproject.toml)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dsta"
#: a few real PoseTrack18 frames, annotations and a clip, kept outside the repository (../shared next to it)
SAMPLE = REPO.parent / "shared" / "data" / "posetrack18_sample"


@pytest.fixture
def sample() -> Path:
    if not (SAMPLE / "annotations" / "val").is_dir():
        pytest.skip(f"real PoseTrack18 sample not found at {SAMPLE}")
    return SAMPLE
