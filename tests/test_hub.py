"""Hugging Face Hub format: save_pretrained -> from_pretrained round trips, loaders, offline behaviour, model card.

Local folders and a hand-built hub cache only: nothing here touches the network.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from pdfnet.build import build_model
from pdfnet.config import Config, config_to_dict
from pdfnet.engine.checkpoint import CheckpointError
from pdfnet.engine.hub import CONFIG_NAME, WEIGHTS_NAME, load_pretrained, model_card, save_pretrained
from pdfnet.engine.inference import load_model
from pdfnet.hub_files import HubFilesError
from pdfnet.models import PDFNet


def _tiny_config() -> Config:
    cfg = Config()
    cfg.model.backbone, cfg.model.emb_dim, cfg.model.variant = "swin_tiny_test", 16, "v2025.03"
    cfg.model.impl = "reference"  # what PDFNet.from_pretrained builds: bitwise comparisons need the same form
    cfg.data.size = 128
    cfg.eval.tta = True
    return cfg


def _inputs(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, size, size, generator=g), torch.rand(2, 1, size, size, generator=g)


def _logits(model: torch.nn.Module) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.eval()(*_inputs())


def test_save_then_from_pretrained_is_bitwise_and_keeps_the_config(tmp_path):
    cfg = _tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg.model)
    metrics = {"splits": {"DIS-VD": {"metrics": {"maxF": 0.5, "HCE": 12.0}, "n_images": 2}}}
    save_pretrained(model, cfg, tmp_path / "hub", metrics=metrics, repo_id="me/pdfnet-tiny")
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    stored = json.loads((tmp_path / "hub" / CONFIG_NAME).read_text())
    assert stored["data"]["size"] == 128 and stored["model"]["variant"] == "v2025.03"

    loaded = PDFNet.from_pretrained(str(tmp_path / "hub"))
    assert not loaded.training and loaded.variant == "v2025.03"
    for a, b in zip(_logits(model), _logits(loaded)):
        assert torch.equal(a, b)
    _, loaded_cfg = load_pretrained(tmp_path / "hub")
    expected = config_to_dict(cfg)
    assert config_to_dict(loaded_cfg) == expected  # input size, eval settings: everything load_model needs

    card = (tmp_path / "hub" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: pdfnet" in card and "license: mit" in card
    assert 'PDFNet.from_pretrained("me/pdfnet-tiny")' in card and "| DIS-VD | 2 | 0.500 |" in card
    assert "input size: 128×128" in card and "@inproceedings{liu2026pdfnet" in card and "## Training config" in card


def test_load_model_and_the_clis_take_a_hub_folder(tmp_path):
    cfg = _tiny_config()
    torch.manual_seed(0)
    save_pretrained(build_model(cfg.model), cfg, tmp_path / "hub")
    model, loaded_cfg = load_model(tmp_path / "hub", "cpu")
    assert loaded_cfg.data.size == 128 and loaded_cfg.eval.tta and not model.training


def test_the_mixins_own_save_pretrained_round_trips(tmp_path):
    """A bare model (no Config): the mixin stores its constructor arguments; they load with default settings."""
    torch.manual_seed(0)
    model = PDFNet(backbone="swin_tiny_test", emb_dim=16, depth_head=False)
    model.save_pretrained(tmp_path / "bare")
    stored = json.loads((tmp_path / "bare" / CONFIG_NAME).read_text())
    assert stored["backbone"] == "swin_tiny_test" and stored["depth_head"] is False
    loaded = PDFNet.from_pretrained(tmp_path / "bare")
    for a, b in zip(_logits(model), _logits(loaded)):
        assert torch.equal(a, b)
    assert "pdfnet" in (tmp_path / "bare" / "README.md").read_text()


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    cfg = _tiny_config()
    save_pretrained(build_model(cfg.model), cfg, tmp_path / "hub")
    stored = json.loads((tmp_path / "hub" / CONFIG_NAME).read_text())
    stored["model"]["emb_dim"] = 32
    (tmp_path / "hub" / CONFIG_NAME).write_text(json.dumps(stored))
    with pytest.raises(HubFilesError, match="model.safetensors does not fit config.json"):
        load_pretrained(tmp_path / "hub")
    (tmp_path / "hub" / CONFIG_NAME).write_text(json.dumps({"model": {"emb_dim": "wide"}}))
    with pytest.raises(HubFilesError, match="not a PDFNet config.*model.emb_dim"):
        load_pretrained(tmp_path / "hub")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"folder .*empty has no config.json, model.safetensors"):
        load_model(tmp_path / "empty")


def _fake_hub_cache(cache, repo_id: str, folder) -> None:
    """The layout huggingface_hub's cache uses (models--owner--name/{refs,snapshots}), filled from ``folder``."""
    commit = "0" * 40
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())


def test_offline_a_cached_id_loads_and_a_missing_one_fails_fast(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cfg = _tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg.model)
    save_pretrained(model, cfg, tmp_path / "hub")
    cache = tmp_path / "cache"
    _fake_hub_cache(cache, "someone/pdfnet-tiny", tmp_path / "hub")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # 'someone/pdfnet-tiny' must not be read as a local path

    loaded = PDFNet.from_pretrained("someone/pdfnet-tiny")
    for a, b in zip(_logits(model), _logits(loaded)):
        assert torch.equal(a, b)

    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_model("someone/not-downloaded", "cpu")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "'someone/not-downloaded'" in message and "offline (HF_HUB_OFFLINE is set)" in message
    assert "hf download someone/not-downloaded --local-dir DIR" in message and "\n" not in message


def test_model_card_without_metrics_or_training_config():
    card = model_card({"backbone": "swin_tiny_test", "variant": "v2026"}, license="other", source="PDFNet_Best.pth")
    assert "## Evaluation" not in card and "## Training config" not in card
    assert "license: other" in card and "PDFNet authors" in card and "`PDFNet_Best.pth`" in card
    with pytest.raises(HubFilesError, match="expected evaluate.py --json output"):
        model_card(None, metrics={"maxF": 0.9})


def test_push_to_hub_uploads_the_saved_folder_in_one_commit(tmp_path, monkeypatch):
    """The publishing call, with the hub client replaced by a recorder (no network here)."""
    import huggingface_hub

    from pdfnet.engine import hub

    calls = {}

    class Recorder:
        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["create"] = (repo_id, private, exist_ok)
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, repo_type, commit_message):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            calls["card"] = (Path(folder_path) / "README.md").read_text()
            calls["upload"] = (repo_id, repo_type)
            return "https://huggingface.co/me/pdfnet-tiny/commit/abc"

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: Recorder())
    cfg = _tiny_config()
    url = hub.push_to_hub(build_model(cfg.model), cfg, "me/pdfnet-tiny", private=True)
    assert url.endswith("/commit/abc") and calls["create"] == ("me/pdfnet-tiny", True, True)
    assert calls["files"] == ["README.md", CONFIG_NAME, WEIGHTS_NAME] and calls["upload"] == ("me/pdfnet-tiny", "model")
    assert 'PDFNet.from_pretrained("me/pdfnet-tiny")' in calls["card"]
