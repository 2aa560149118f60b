"""Any timm model as PDFNet's shared encoder, through timm's ``features_only`` interface: ``model.backbone:
timm/<name>`` (e.g. ``timm/convnext_tiny``, ``timm/resnet50``). The four feature maps at strides 4, 8, 16 and 32 feed
the channel mixers in place of the Swin stages; everything else is unchanged.

``model.pretrained`` for such a backbone: ``timm`` (timm's default pretrained weights for that name, from the hub or
its cache) or a local ``.pth``/``.safetensors`` file of that timm model.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from ..registry import BACKBONES

STRIDES = (4, 8, 16, 32)


class TimmBackbone(nn.Module):
    """timm ``features_only`` model -> 4 maps [B, C_i, H/s_i, W/s_i] for s_i = 4, 8, 16, 32."""

    def __init__(self, name: str, drop_path: float = 0.0) -> None:
        super().__init__()
        import timm

        self.name = name
        probe = timm.create_model(name, features_only=True, pretrained=False, drop_path_rate=drop_path)
        reductions = probe.feature_info.reduction()
        if not set(STRIDES) <= set(reductions):
            raise ValueError(f"timm model {name!r} has feature maps at strides {reductions}; PDFNet needs "
                             f"{list(STRIDES)}")
        out_indices = tuple(reductions.index(s) for s in STRIDES)
        if list(out_indices) == list(range(len(reductions))):
            self.model = probe
        else:
            del probe
            self.model = timm.create_model(name, features_only=True, pretrained=False, drop_path_rate=drop_path,
                                           out_indices=out_indices)
        self.channels = tuple(self.model.feature_info.channels())
        self._sizes: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))

    def feature_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Spatial sizes of the 4 maps for an h x w input, by shape propagation (no arithmetic)."""
        if (h, w) not in self._sizes:
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
                outs = self.model(torch.empty(1, 3, h, w))
            self._sizes[(h, w)] = [tuple(o.shape[-2:]) for o in outs]
        return self._sizes[(h, w)]

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.model.set_grad_checkpointing(enabled)

    def load_pretrained(self, source: str) -> list[str]:
        """``timm`` (timm's default pretrained weights for this name) or a local file of this timm model; returns
        the keys left at their init (none: every key must fit)."""
        import timm

        if source == "timm":
            weights = timm.create_model(self.name, features_only=True, pretrained=True,
                                        out_indices=self.model.feature_info.out_indices).state_dict()
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"pretrained backbone file not found: {source!r} (for a timm backbone, "
                                        "model.pretrained is 'timm' or a local file of that timm model)")
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                weights = load_file(str(path))
            else:
                weights = torch.load(path, map_location="cpu", weights_only=True)
        own = self.model.state_dict()
        usable = {k: v for k, v in weights.items() if k in own and v.shape == own[k].shape}
        if not usable:
            raise RuntimeError(f"{source!r} holds no weights of timm model {self.name!r}")
        self.model.load_state_dict(usable, strict=False)
        return sorted(set(own) - set(usable))


BACKBONES.register_family("timm/", lambda name: functools.partial(TimmBackbone, name))
