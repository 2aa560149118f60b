"""ImageNet-pretrained Swin weights for the encoder: Microsoft's files (as the official README uses), timm's files,
or a timm/Hugging Face hub id."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..hub_files import load_torch_file, pretrained_backbone_problem


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = load_torch_file(path, "model.pretrained")
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    return obj


def swin_state_dict_from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm puts patch merging at the start of stage i+1 (``layers.{i+1}.downsample``); Swin at the end of stage i."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) - 1)
        out[".".join(parts)] = value
    return out


def load_pretrained_swin(encoder: nn.Module, source: str) -> list[str]:
    """Load ImageNet-pretrained Swin weights into ``encoder``; returns the encoder keys left at their init.

    ``source``: a local file (Microsoft ``swin_base_patch4_window12_384_22k.pth`` as the official README uses, a timm
    ``.pth``/``.safetensors``), or a timm/Hugging Face hub id (``timm/swin_base_patch4_window12_384.ms_in22k``),
    which needs network access or a filled local cache. Like the official code, only keys whose name and shape match
    are loaded (classification heads, final norm and the ape table, absent from the classification checkpoints, stay
    at their init). Raises FileNotFoundError/RuntimeError with the source named when nothing usable is found.
    """
    path = Path(os.path.expanduser(source))
    if path.exists():
        sd = _read_state_dict(path)
    elif problem := pretrained_backbone_problem(source):
        raise FileNotFoundError(problem)
    else:
        import timm

        name = source.removeprefix("hf-hub:").removeprefix("timm/")
        try:
            sd = timm.create_model(name, pretrained=True).state_dict()
        except Exception as err:  # network or cache errors come in many types; name the source and the way out
            raise RuntimeError(f"could not load pretrained backbone {source!r} from the hub ({err}). Offline? Download "
                               "the file once and set model.pretrained to its local path.") from err
    if any(k.startswith("layers.3.downsample") for k in sd):
        sd = swin_state_dict_from_timm(sd)
    own = encoder.state_dict()
    usable = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not usable:
        raise RuntimeError(f"{source!r} holds no Swin weights matching this encoder "
                           f"(embed_dim {encoder.spec.embed_dim}, depths {encoder.spec.depths})")
    left = sorted(set(own) - set(usable))
    _check_left_at_init(source, left, own, sd)
    encoder.load_state_dict(usable, strict=False)
    return left


# Encoder tensors that ImageNet classification checkpoints do not have: the detection-style absolute position
# embedding and the per-stage output norms. They start from their init in the official code too.
EXPECTED_AT_INIT = ("absolute_pos_embed", "norm*.weight", "norm*.bias")


def key_family(key: str) -> str:
    """``layers.2.blocks.7.attn.qkv.weight`` -> ``layers.*.blocks.*.attn.qkv.weight``."""
    return ".".join("*" if part.isdigit() else re.sub(r"\d+$", "*", part) for part in key.split("."))


def _check_left_at_init(source: str, left: list[str], own: dict[str, torch.Tensor],
                        loaded: dict[str, torch.Tensor]) -> None:
    """Fail when a whole family of encoder tensors (e.g. every relative-position table) would stay random; warn,
    naming them, when only some tensors would."""
    unexpected = [k for k in left if key_family(k) not in EXPECTED_AT_INIT]
    if not unexpected:
        return
    families: dict[str, list[str]] = {}
    for key in own:
        families.setdefault(key_family(key), []).append(key)
    whole = [f for f in dict.fromkeys(key_family(k) for k in unexpected) if set(families[f]) <= set(unexpected)]
    if whole:
        reasons = []
        for family in whole:
            example = families[family][0]
            if example in loaded:
                reasons.append(f"{family} ({len(families[family])} tensors): shape {list(loaded[example].shape)} "
                               f"in the file, {list(own[example].shape)} in this encoder")
            else:
                reasons.append(f"{family} ({len(families[family])} tensors): not in the file")
        raise RuntimeError(
            f"pretrained backbone {source!r} does not fit this Swin (window {own_window(own)}): these tensors would "
            "all stay at random init:\n  " + "\n  ".join(reasons) + "\nUse weights of the same architecture "
            "(the paper: swin_base_patch4_window12_384 22k), or set model.pretrained='' to train from scratch.")
    warnings.warn(f"pretrained backbone {source!r}: {len(unexpected)} encoder tensor(s) not in the file or of another "
                  f"shape, left at random init: {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""),
                  stacklevel=3)


def own_window(own: dict[str, torch.Tensor]) -> int:
    """The attention window of an encoder state dict (from its relative-position table size)."""
    table = next(v for k, v in own.items() if k.endswith("relative_position_bias_table"))
    return (int(round(table.shape[0] ** 0.5)) + 1) // 2
