"""Shared test fixtures. Real data and official references live in ../shared (absent in a user's clone: skip)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"
DIS_SAMPLES = SHARED / "data" / "dis5k-samples"

torch.set_num_threads(min(2, torch.get_num_threads()))


def official_reference(version_dir: str) -> tuple[dict[str, torch.Tensor], Path]:
    """(official-format state dict, case folder) for ``official`` (v2026) or ``official_v1`` (v2025.03)."""
    root = REFERENCE / version_dir
    if not (root / "manifest.json").is_file():
        pytest.skip(f"official reference {root} not available")
    sys.path.insert(0, str(REFERENCE))
    import official_weights  # type: ignore[import-not-found]

    manifest = json.loads((root / "manifest.json").read_text())
    return official_weights.make_state_dict(manifest), root / "inf256_b1"


@pytest.fixture(scope="session")
def tiny_model_kwargs() -> dict:
    return {"backbone": "swin_tiny_test", "emb_dim": 16}
