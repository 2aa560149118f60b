"""The model card of a PDFNet Hub folder (``README.md`` with hub metadata): architecture, variant, training config,
metrics, licence, citation. Written by ``save_pretrained``/``push_to_hub`` (no model or engine import here)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from .hub_files import HubFilesError

PAPER_URL = "https://arxiv.org/abs/2503.06100"
CITATION = """@inproceedings{liu2026pdfnet,
  title     = {High-Precision Dichotomous Image Segmentation via Depth Integrity-Prior and Fine-Grained Patch Strategy},
  author    = {Liu, Xianjie and Fu, Keren and Zhao, Qijun},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2026},
  note      = {arXiv:2503.06100}
}"""


def _read_metrics(metrics: str | os.PathLike | dict | None) -> dict[str, dict[str, Any]]:
    """``evaluate.py --json`` output (one split or ``{"splits": ...}``) -> {split: {"metrics", "n_images"}}."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        path = Path(metrics)
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise HubFilesError(f"cannot read metrics file {path}: {err} (expected evaluate.py --json output)") \
                from err
    if "splits" in metrics:
        return dict(metrics["splits"])
    if "metrics" in metrics:
        return {metrics.get("split", "evaluation"): metrics}
    raise HubFilesError("metrics: expected evaluate.py --json output (keys 'metrics' or 'splits'), got keys "
                        f"{sorted(metrics)}")


def _metrics_table(results: dict[str, dict[str, Any]]) -> str:
    keys = ("maxF", "wF", "Sm", "meanEm", "MAE", "HCE")
    lines = ["| split | images | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 2) + "|"]
    for split, entry in results.items():
        values = entry.get("metrics", {})
        cells = [f"{values[k]:.0f}" if k == "HCE" and k in values else f"{values[k]:.3f}" if k in values else "—"
                 for k in keys]
        lines.append(f"| {split} | {entry.get('n_images', '—')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(config: dict[str, Any] | None, metrics: str | os.PathLike | dict | None = None,
               repo_id: str | None = None, license: str = "mit", source: str | None = None,
               n_parameters: int | None = None) -> str:
    """The model card (``README.md`` with hub metadata): architecture, variant, training config, metrics, licence,
    citation. ``config``: what ``config.json`` holds; ``metrics``: an ``evaluate.py --json`` file or its dict."""
    from huggingface_hub import ModelCardData

    tree = config if config and isinstance(config.get("model"), dict) else {"model": dict(config or {})}
    model = tree["model"]
    data_size = tree.get("data", {}).get("size")
    card_data = ModelCardData(library_name="pdfnet", license=license, pipeline_tag="image-segmentation",
                              tags=["dichotomous-image-segmentation", "pdfnet", "depth", "pytorch_model_hub_mixin"])
    where = repo_id or "<this-repo-id-or-folder>"
    arch = [f"- variant: `{model.get('variant', 'v2026')}` (official code version reproduced)",
            f"- encoder: `{model.get('backbone', 'swin_base_patch4_window12_384')}`, decoder width "
            f"{model.get('emb_dim', 128)}, depth head: {'yes' if model.get('depth_head', True) else 'no'}"]
    if data_size:
        arch.append(f"- input size: {data_size}×{data_size} (images are resized to it and the mask back)")
    if n_parameters:
        arch.append(f"- parameters: {n_parameters:,}")
    if source:
        arch.append(f"- weights from: `{source}`")
    sections = [
        f"---\n{card_data.to_yaml()}\n---",
        "# PDFNet for dichotomous image segmentation",
        "PDFNet (CVPR 2026, *High-Precision Dichotomous Image Segmentation via Depth Integrity-Prior and "
        f"Fine-Grained Patch Strategy*, [arXiv 2503.06100]({PAPER_URL})): RGB and a Depth Anything V2 pseudo-depth "
        "map share a Swin encoder, an 8×8 grid of full-resolution patches adds detail, and cross-attention fusion "
        "with boundary-patch selection predicts a full-resolution mask.",
        "## Model\n" + "\n".join(arch),
        "## Use\n```python\nfrom pdfnet.models import PDFNet\n"
        f'model = PDFNet.from_pretrained("{where}")   # eval mode; image [B,3,H,W] ImageNet-normalised, '
        "depth [B,1,H,W]\n```\n```bash\n"
        f"pdfnet predict --ckpt {where} --input photos/ --output masks/ --depth_model large\n```",
    ]
    results = _read_metrics(metrics)
    if results:
        sections.append("## Evaluation\nDIS metrics as `pdfnet eval` computes them (maxF, wF, Sm, meanEm, MAE as "
                        "PySODMetrics; HCE as the official DIS script):\n\n" + _metrics_table(results))
    if "train" in tree:
        shown = {k: tree[k] for k in ("data", "loss", "optim", "train") if k in tree}
        sections.append("## Training config\n```yaml\n" + yaml.safe_dump(shown, sort_keys=False).strip() + "\n```")
    licence = ("MIT (weights trained with this code)" if license == "mit" else
               f"`{license}`: these weights come from the PDFNet authors; their repository's terms apply")
    sections.append(f"## Licence\n{licence}.")
    sections.append(f"## Citation\n```bibtex\n{CITATION}\n```")
    return "\n\n".join(sections) + "\n"
