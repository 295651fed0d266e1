"""Make the flat `examples/dsta` scripts importable as top-level modules (as when run as scripts)."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dsta"
#: real PoseTrack18 files (dsta_spec.md §7), kept outside the repository: ../shared next to it
SAMPLE = REPO.parent / "shared" / "data" / "posetrack18_sample"

if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))


@pytest.fixture
def sample() -> Path:
    if not (SAMPLE / "annotations" / "val").is_dir():
        pytest.skip(f"real PoseTrack18 sample not found at {SAMPLE}")
    return SAMPLE
