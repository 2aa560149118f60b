"""Swin encoder: pretrained-weight loading from local files (Microsoft and timm layouts) and clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pdfnet.build import build_model
from pdfnet.config import ModelConfig
from pdfnet.models.backbone import SWIN_SPECS, SwinEncoder, shifted_window_mask
from pdfnet.models.pretrained import load_pretrained_swin as load_pretrained_backbone


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
    with pytest.raises(FileNotFoundError, match="backbone file not found: model.pretrained='nowhere/swin.pth'"):
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


def test_own_mlp_drop_path_and_init_equal_timms_layers():
    """The encoder's small layers are written here (importing timm.layers costs ~200 MB per process); timm is the
    oracle: same outputs, the same random stream for stochastic depth and the initialiser."""
    timm_layers = pytest.importorskip("timm.layers")
    from pdfnet.models.backbone import DropPath, Mlp, trunc_normal_

    torch.manual_seed(0)
    ours, theirs = Mlp(8, 32), timm_layers.Mlp(in_features=8, hidden_features=32, act_layer=torch.nn.GELU)
    assert theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(ours(x), theirs(x), atol=0, rtol=0)

    x = torch.randn(64, 7, 8)
    for p in (0.3, 1.0):
        outs = []
        for layer in (DropPath(p), timm_layers.DropPath(p)):
            torch.manual_seed(1)
            outs.append(layer.train()(x))
            assert torch.equal(layer.eval()(x), x)
        assert torch.equal(*outs)
    kept = outs[0].flatten(1).ne(0).any(dim=1) if p < 1 else None
    assert kept is None or 0 < kept.sum() < 64

    a, b = torch.empty(1000), torch.empty(1000)
    torch.manual_seed(2)
    timm_layers.trunc_normal_(a, std=0.02)
    torch.manual_seed(2)
    trunc_normal_(b, std=0.02)
    assert torch.equal(a, b) and b.abs().max() <= 2.0


def test_building_and_loading_do_not_import_dynamo_or_torchvision():
    """Each costs ~150-200 MB resident in every inference process: the model, built for real or on 'meta' (to
    receive a checkpoint), must need neither."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from pdfnet.models import PDFNet\n"
            "PDFNet(backbone='swin_tiny_test', emb_dim=16)\n"
            "from pdfnet.models.pdfnet import parameters_on_meta\n"
            "with parameters_on_meta():\n"
            "    PDFNet(backbone='swin_tiny_test', emb_dim=16)\n"
            "print(sorted(m for m in ('torch._dynamo', 'torchvision', 'timm') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_stochastic_depth_applies_without_autograd_in_training_mode():
    """CPU inference runs the MLP in token slices; a block in training mode (under no_grad, e.g. a probe) must still
    drop its branches: with p = 1 both are dropped and the block is the identity."""
    from pdfnet.lean import make_lean
    from pdfnet.models.backbone import SwinBlock

    torch.manual_seed(0)
    block = make_lean(SwinBlock(dim=8, num_heads=2, window=4, shift=0, drop_path=1.0)).train()
    x = torch.randn(1, 16, 8)
    with torch.no_grad():
        assert torch.equal(block(x, (4, 4), None), x)
        assert not torch.equal(block.eval()(x, (4, 4), None), x)
