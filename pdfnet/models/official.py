"""Official PDFNet checkpoints: key mapping, version detection, strict loading. Nothing else.

Two official code versions matter (see fusion.py for their arithmetic):
``v2025.03`` (commit 802b477; the released ``PDFNet_Best.pth``, 603 keys, depth decoder registered) and
``v2026`` (HEAD f4e218b; 561 keys, the depth decoder is defined but not registered).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..config import ModelConfig
from .backbone import relative_position_index
from .pdfnet import PDFNet, parameters_on_meta

# (official regex, ours) applied in order, first match wins. Keys not listed map to themselves.
_OFFICIAL_TO_OURS: list[tuple[str, str]] = [
    (r"^encoder\.", "backbone."),
    (r"^channel_mix([1-4])\.", "stage_mixers.{m1-1}."),
    (r"^channel_mix\.", "global_mixer."),
    (r"^Glob\.", "global_refine."),
    (r"^decoder\.FSE_mix\.", "decoder.fse."),
    (r"^decoder\.channel_mix\.", "decoder.level_mixers."),
    (r"^decoder\.upsample1\.", "decoder.refine_half."),
    (r"^decoder\.upsample2\.", "decoder.refine_full."),
    (r"^decoder\.Bside\.", "decoder.heads."),
    (r"^depth_decoder\.Decoder\.", "depth_decoder.blocks."),
    (r"^depth_decoder\.shallow\.0\.", "depth_decoder.shallow."),
    (r"^depth_decoder\.upsample1\.", "depth_decoder.refine_half."),
    (r"^depth_decoder\.upsample2\.", "depth_decoder.refine_full."),
    (r"^depth_decoder\.Bside\.", "depth_decoder.heads."),
]
# Inside an FSE block (applied after the prefix rules).
_FSE_PARTS = {
    "I_channelswich": "img_proj", "P_channelswich": "patch_proj", "D_channelswich": "depth_proj",
    "IP": "img_from_patch", "PI": "patch_from_context", "ID": "img_from_depth", "DI": "depth_from_context",
    "Att.in_proj_weight": "in_proj_weight", "Att.out_proj": "out_proj",
    "Norm1": "norm1", "Norm2": "norm2", "FFN": "ffn",
}

# Official keys that carry no learned state: checked against their known values, then dropped.
_SOBEL = {
    "IntegrityPriorLoss.sobel_x.weight": torch.tensor([[[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]]]),
    "IntegrityPriorLoss.sobel_y.weight": torch.tensor([[[[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]]]),
}
OFFICIAL_KEY_COUNTS = {"v2025.03": 603, "v2026": 561}
# Parameter counts of the official models as they register them (the 18 Sobel weights of the loss module included).
OFFICIAL_PARAMETER_COUNTS = {"v2025.03": 101_693_333, "v2026": 97_846_544}
SOBEL_PARAMETERS = 18


class OfficialCheckpointError(RuntimeError):
    """An official state dict that does not fit the model; the message lists the offending keys and shapes."""


def _rename_segments(path: str, table: Mapping[str, str]) -> str:
    """Replace whole dotted segments (or runs of segments) of ``path`` per ``table``."""
    path = f".{path}."
    for old, new in table.items():
        path = path.replace(f".{old}.", f".{new}.")
    return path[1:-1]


def official_to_ours(key: str) -> str:
    """Map one official state-dict key to ours (``decoder.FSE_mix.0.IP.Att.in_proj_weight`` ->
    ``decoder.fse.0.img_from_patch.in_proj_weight``)."""
    for pattern, repl in _OFFICIAL_TO_OURS:
        m = re.match(pattern, key)
        if m:
            if "{m1-1}" in repl:
                repl = repl.replace("{m1-1}", str(int(m.group(1)) - 1))
            key = repl + key[m.end():]
            break
    if key.startswith("decoder.fse."):
        key = _rename_segments(key, _FSE_PARTS)
    return key


def ours_to_official(key: str) -> str:
    """Inverse of :func:`official_to_ours`."""
    if key.startswith("decoder.fse."):
        key = _rename_segments(key, {new: old for old, new in _FSE_PARTS.items()})
        return "decoder.FSE_mix." + key[len("decoder.fse."):]
    m = re.match(r"^stage_mixers\.(\d)\.", key)
    if m:
        return f"channel_mix{int(m.group(1)) + 1}." + key[m.end():]
    for pattern, repl in _OFFICIAL_TO_OURS:
        if "{" not in repl and key.startswith(repl):
            return pattern[1:].replace("\\.", ".") + key[len(repl):]
    return key


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Accept a plain state dict or the usual wrappers ({'model': sd}, {'state_dict': sd}, DDP 'module.' keys)."""
    for wrapper in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OfficialCheckpointError("not a PDFNet state dict: expected a mapping of tensor names to tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def detect_variant(sd: Mapping[str, torch.Tensor]) -> str:
    """Official code version of a state dict, from its depth decoder: shapes of v2025.03, or absent (v2026)."""
    key = "depth_decoder.shallow.0.weight"
    if key not in sd:
        return "v2026"
    return "v2025.03" if sd[key].shape[1] == 3 else "v2026"


def is_official_state_dict(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("decoder.FSE_mix.") for k in sd)


def convert_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys -> ours. Checks and drops the derived buffers (Swin relative position indices, Sobel kernels)."""
    out = {}
    for key, value in sd.items():
        if key in _SOBEL:
            if not torch.equal(value.float().cpu(), _SOBEL[key]):
                raise OfficialCheckpointError(f"{key} does not hold the Sobel kernel the official loss uses")
            continue
        if key.endswith("relative_position_index"):
            window = int(round(value.shape[0] ** 0.5))
            if not torch.equal(value.cpu().long(), relative_position_index(window)):
                raise OfficialCheckpointError(f"{key} differs from Swin's relative position index for window {window}")
            continue
        out[official_to_ours(key)] = value
    return out


def _read(src: str | os.PathLike | Mapping) -> dict[str, torch.Tensor]:
    if isinstance(src, Mapping):
        return unwrap_state_dict(src)
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise OfficialCheckpointError(f"cannot read {path} as a PyTorch checkpoint: {err}") from err
    return unwrap_state_dict(obj)


def load_official(src: str | os.PathLike | Mapping, variant: str | None = None,
                  backbone: str = "swin_base_patch4_window12_384", emb_dim: int = 128,
                  copy_tensors: bool | None = None) -> PDFNet:
    """Build a PDFNet from an official checkpoint (path or state dict) and load it strictly; eval mode.

    The version is detected from the keys unless ``variant`` is given. Every official key must be consumed and every
    model key filled (a v2026 checkpoint has no depth decoder: the model is then built without one). Otherwise an
    :class:`OfficialCheckpointError` lists the offending keys with their shapes. The model adopts the checkpoint's
    tensors; ``copy_tensors`` (default: only when ``src`` is a caller's mapping) clones them first.
    """
    owned = not isinstance(src, Mapping) if copy_tensors is None else not copy_tensors
    sd = _read(src)
    if not is_official_state_dict(sd):
        raise OfficialCheckpointError("not an official PDFNet state dict (no 'decoder.FSE_mix.*' keys)")
    variant = variant or detect_variant(sd)
    has_depth_head = any(k.startswith("depth_decoder.") for k in sd)
    cfg = official_model_config(variant, has_depth_head, backbone, emb_dim)
    with parameters_on_meta():  # no random init: every weight comes from the checkpoint
        model = PDFNet.from_config(cfg)
    ours = convert_state_dict(sd)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    mismatched = sorted(k for k in set(ours) & set(expected) if ours[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        lines = [f"official checkpoint does not fit PDFNet(variant={variant!r}, backbone={backbone!r}):"]
        lines += [f"  missing in checkpoint: {ours_to_official(k)} {tuple(expected[k].shape)}" for k in missing[:20]]
        lines += [f"  not in model: {ours_to_official(k)} {tuple(ours[k].shape)}" for k in unexpected[:20]]
        lines += [f"  shape: {ours_to_official(k)} checkpoint {tuple(ours[k].shape)} vs model "
                  f"{tuple(expected[k].shape)}" for k in mismatched[:20]]
        total = len(missing) + len(unexpected) + len(mismatched)
        if total > 60:
            lines.append(f"  ... {total} problems in all")
        raise OfficialCheckpointError("\n".join(lines))
    ours = {k: (v if owned else v.clone()).float().contiguous() for k, v in ours.items()}
    model.load_state_dict(ours, strict=True, assign=True)
    return model.eval()


def official_model_config(variant: str, depth_head: bool, backbone: str = "swin_base_patch4_window12_384",
                          emb_dim: int = 128) -> ModelConfig:
    """The model config of an official checkpoint: the official architecture with its version and depth head."""
    return ModelConfig(backbone=backbone, emb_dim=emb_dim, variant=variant, depth_head=depth_head)
