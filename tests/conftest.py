"""Shared test fixtures. Real data and official references live in ../shared (absent in a user's clone: skip)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"
DIS_SAMPLES = SHARED / "data" / "dis5k-samples"

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # pytest-xdist runs one test process per core: one thread each (and for the processes tests start), or the
    # workers' thread pools fight over the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """The slow (multi-process, minute-long) tests first: pytest-xdist then starts them at once and balances the
    short ones around them, instead of one worker finishing a long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (to call its main() or helpers in this process)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(scope="session")
def tiny_depth_model(tmp_path_factory):
    """A tiny random Depth Anything V2 model saved with save_pretrained (no network)."""
    pytest.importorskip("transformers")
    from pdfnet.depth.anything import save_tiny_random_model

    return save_tiny_random_model(tmp_path_factory.mktemp("tiny_depth_anything"))


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    """Our checkpoint of a randomly initialised tiny PDFNet (swin_tiny_test, 128² input, no depth head)."""
    from pdfnet.build import build_model
    from pdfnet.config import Config
    from pdfnet.engine.checkpoint import atomic_save, make_checkpoint

    cfg = Config()
    cfg.model.backbone, cfg.model.emb_dim, cfg.model.depth_head = "swin_tiny_test", 16, False
    cfg.data.size = 128
    torch.manual_seed(0)
    path = tmp_path / "tiny.pth"
    atomic_save(make_checkpoint(build_model(cfg.model), cfg, epoch=3), path)
    return path


@pytest.fixture(scope="session")
def knobs_checkpoint(tmp_path_factory):
    """Our checkpoint of a random tiny PDFNet with non-default knobs (test_knobs.OTHER_KNOBS: v2025.03, concat
    fusion, a timm backbone, grad_checkpointing encoder, impl reference, 256² input)."""
    from test_knobs import OTHER_KNOBS

    from pdfnet.build import build_model
    from pdfnet.config import load_config
    from pdfnet.engine.checkpoint import atomic_save, make_checkpoint

    cfg = load_config(None, OTHER_KNOBS)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("knobs") / "knobs.pth"
    atomic_save(make_checkpoint(build_model(cfg), cfg), path)
    return path


def _synthetic_tree(root: Path, train: int, val: int) -> Path:
    from pdfnet.data.synthetic import write_split

    write_split(root, "DIS-TR", train, 128, seed=0)
    write_split(root, "DIS-VD", val, 128, seed=0, first_index=100)
    return root


@pytest.fixture(scope="session")
def two_image_root(tmp_path_factory):
    """DIS-TR and DIS-VD of 2 synthetic scenes each, 128 px: for tests of what a run does, not of how many steps."""
    return _synthetic_tree(tmp_path_factory.mktemp("two_image_dis"), 2, 2)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic DIS-5K tree: DIS-TR (8 scenes) and DIS-VD (2), 128 px."""
    return _synthetic_tree(tmp_path_factory.mktemp("synthetic_dis"), 8, 2)
