"""The two official PDFNet code versions, and every way in which their arithmetic differs, in one table.

``model.variant`` picks the version whose computation is reproduced (checkpoints of one version load into that version
only). The model (fusion.py, decoder.py) and the loss read their differences from here; nothing else branches on the
version name.

| difference | ``v2025.03`` (802b477, released ``PDFNet_Best.pth``) | ``v2026`` (HEAD f4e218b) |
| --- | --- | --- |
| BIS boundary | ``2 * |s - avgpool(s)|`` | ``|s - avgpool(s)|``, thresholded at 0.1 when ``(h // 8)`` is even |
| BIS integrity | ``relu(p - 5 * boundary)`` | ``relu(p - boundary)`` |
| boundary-patch weight | ``1 + 5 * score`` | ``1 + (score > 0)`` |
| CoA dropout | before each norm | after each norm |
| depth decoder levels | streams summed (E channels), shallow sees RGB | concatenated (3E), shallow RGB+depth |
| weighted-IoU smoothing (loss) | 1 | 1e-6 |
| official state-dict keys | 603 (depth decoder registered) | 561 (depth decoder not registered) |
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class OfficialVersion:
    name: str
    commit: str
    boundary_scale: float  # BIS boundary = boundary_scale * |s - local mean|
    boundary_threshold: float | None  # threshold the boundary at this value when (h // 8) is even; None: never
    integrity_boundary_weight: float  # integrity = relu(p - w * boundary)
    binary_patch_weight: bool  # patch weight 1 + (score > 0), else 1 + 5 * score
    coa_dropout_before_norm: bool
    depth_decoder_concat: bool  # depth decoder levels [img, depth, patch] concatenated, else summed
    wiou_smooth: float
    official_keys: int


VARIANTS: dict[str, OfficialVersion] = {
    "v2025.03": OfficialVersion("v2025.03", "802b477", boundary_scale=2.0, boundary_threshold=None,
                                integrity_boundary_weight=5.0, binary_patch_weight=False,
                                coa_dropout_before_norm=True, depth_decoder_concat=False, wiou_smooth=1.0,
                                official_keys=603),
    "v2026": OfficialVersion("v2026", "f4e218b", boundary_scale=1.0, boundary_threshold=0.1,
                             integrity_boundary_weight=1.0, binary_patch_weight=True, coa_dropout_before_norm=False,
                             depth_decoder_concat=True, wiou_smooth=1e-6, official_keys=561),
}


def official_version(name: str) -> OfficialVersion:
    if name not in VARIANTS:
        raise ValueError(f"unknown PDFNet variant {name!r}; expected one of {tuple(VARIANTS)}")
    return VARIANTS[name]
