"""Swin encoder: pretrained-weight loading from local files (Microsoft and timm layouts) and clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pdfnet.config import ModelConfig
from pdfnet.models import build_model
from pdfnet.models.backbone import SWIN_SPECS, SwinEncoder, load_pretrained_backbone, shifted_window_mask


def _random_encoder(seed: int) -> SwinEncoder:
    torch.manual_seed(seed)
    enc = SwinEncoder(SWIN_SPECS["swin_tiny_test"])
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_()
    return enc


def _as_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) + 1)
        out[".".join(parts)] = value
    out["head.fc.weight"] = torch.zeros(10, 256)
    return out


def test_loads_microsoft_layout(tmp_path):
    source = _random_encoder(1)
    sd = {k: v for k, v in source.state_dict().items() if k != "absolute_pos_embed"}  # classification: no ape
    sd["head.weight"] = torch.zeros(10, 256)
    path = tmp_path / "swin_ms.pth"
    torch.save({"model": sd}, path)
    target = _random_encoder(2)
    left = load_pretrained_backbone(target, str(path))
    assert left == ["absolute_pos_embed"]
    for key, value in target.state_dict().items():
        if key != "absolute_pos_embed":
            assert torch.equal(value, source.state_dict()[key]), key


def test_loads_timm_layout_from_safetensors(tmp_path):
    source = _random_encoder(3)
    path = tmp_path / "swin_timm.safetensors"
    save_file({k: v.contiguous() for k, v in _as_timm(source.state_dict()).items()}, str(path))
    target = _random_encoder(4)
    assert load_pretrained_backbone(target, str(path)) == []
    for key, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_build_model_reads_config_pretrained(tmp_path):
    source = _random_encoder(5)
    path = tmp_path / "swin.pth"
    torch.save(source.state_dict(), path)
    model = build_model(ModelConfig(backbone="swin_tiny_test", emb_dim=16, pretrained=str(path)))
    assert torch.equal(model.backbone.layers[2].blocks[1].mlp.fc1.weight, source.layers[2].blocks[1].mlp.fc1.weight)


def test_missing_or_unusable_weights_are_clear_errors(tmp_path, monkeypatch):
    enc = _random_encoder(0)
    with pytest.raises(FileNotFoundError, match="pretrained backbone file not found: 'nowhere/swin.pth'"):
        load_pretrained_backbone(enc, "nowhere/swin.pth")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(RuntimeError, match="holds no Swin weights matching this encoder"):
        load_pretrained_backbone(enc, str(other))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network in tests
    with pytest.raises(RuntimeError, match="Offline\\? Download the file once"):
        load_pretrained_backbone(enc, "timm/swin_base_patch4_window12_384.ms_in22k")


def test_shift_mask_matches_official_region_labels():
    # 12x12 padded grid, window 12, shift 6: one window, four regions of 6x6 tokens.
    mask = shifted_window_mask(12, 12, 12, 6, torch.device("cpu"))
    assert mask.shape == (1, 144, 144)
    token = lambda r, c: r * 12 + c  # noqa: E731
    assert mask[0, token(0, 0), token(5, 5)] and not mask[0, token(0, 0), token(0, 6)]
    assert not mask[0, token(0, 0), token(6, 0)] and mask[0, token(11, 11), token(6, 6)]
