"""PDFNet on the Hugging Face Hub: ``model.safetensors`` + ``config.json`` (the run's whole config) + a model card.

``PDFNet`` carries ``huggingface_hub.PyTorchModelHubMixin`` (``save_pretrained`` / ``push_to_hub`` /
``from_pretrained``); this module is what those methods defer to, next to the ``.pth`` checkpoint handling:

    model, cfg = load_pretrained("owner/pdfnet-dis5k")          # or a local folder; offline-safe
    save_pretrained(model, cfg, "hub/pdfnet-dis5k", metrics="te.json")
    push_to_hub(model, cfg, "owner/pdfnet-dis5k", metrics="te.json")

``config.json`` holds the resolved :class:`~pdfnet.config.Config` as a plain dict (architecture, variant, input size,
evaluation settings), so a folder or hub id is everything ``load_model`` needs. A folder written by a bare
``PDFNet(...).save_pretrained(dir)`` stores the constructor arguments instead; it loads with default data/eval
settings.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import Config, ConfigError, config_from_dict, config_to_dict
from ..hub_files import HubFilesError, local_model_folder, looks_like_hub_id
from ..models import PDFNet, build_model_with_weights

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
PAPER_URL = "https://arxiv.org/abs/2503.06100"
CITATION = """@inproceedings{liu2026pdfnet,
  title     = {High-Precision Dichotomous Image Segmentation via Depth Integrity-Prior and Fine-Grained Patch Strategy},
  author    = {Liu, Xianjie and Fu, Keren and Zhao, Qijun},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2026},
  note      = {arXiv:2503.06100}
}"""
# The constructor arguments a bare ``PDFNet(...).save_pretrained`` records, and where they live in Config.
_INIT_KEYS = ("backbone", "emb_dim", "variant", "depth_head", "drop_path", "detach_patches")


def hub_config(cfg: Config) -> dict[str, Any]:
    """The config stored in ``config.json``: the resolved config, with the (local) pretrained-encoder path cleared."""
    tree = config_to_dict(cfg)
    tree["model"]["pretrained"] = ""
    return tree


def attach_config(model: PDFNet, cfg: Config) -> PDFNet:
    """Let ``model.save_pretrained`` / ``push_to_hub`` write ``cfg`` (not just the constructor arguments)."""
    model._hub_mixin_config = hub_config(cfg)
    return model


def config_from_hub_json(raw: Any, source: str) -> Config:
    """Our ``config.json`` (a whole config, or a bare model's constructor arguments) -> Config."""
    if not isinstance(raw, dict):
        raise HubFilesError(f"{source}: {CONFIG_NAME} holds a {type(raw).__name__}, expected an object")
    try:
        if isinstance(raw.get("model"), dict):
            return config_from_dict(raw)
        unknown = sorted(set(raw) - set(_INIT_KEYS) - {"patch_grid"})
        if unknown:
            raise ConfigError(f"unknown keys {unknown}")
        if raw.get("patch_grid", 8) != 8:
            raise ConfigError(f"patch_grid {raw['patch_grid']} (only 8 is configurable)")
        return config_from_dict({"model": {k: raw[k] for k in _INIT_KEYS if k in raw}})
    except ConfigError as err:
        raise HubFilesError(f"{source}: {CONFIG_NAME} is not a PDFNet config: {err}") from err


def is_pretrained_source(source: str | os.PathLike) -> bool:
    """A ``save_pretrained`` folder or something that can only be a hub id (not a ``.pth``-like file path)."""
    text = os.path.expanduser(str(source))
    return Path(text).is_dir() or (looks_like_hub_id(text) and Path(text).suffix == "")


def load_pretrained(source: str | os.PathLike, device: str | torch.device = "cpu", revision: str | None = None,
                    flag: str = "--ckpt") -> tuple[PDFNet, Config]:
    """A local ``save_pretrained`` folder or a hub id -> (model in eval mode on ``device``, config).

    Weights load strictly (every key present, every shape right); offline, only the local cache is used and a miss
    is one line saying what to download (:class:`~pdfnet.hub_files.HubFilesError`).
    """
    from safetensors.torch import load_file

    folder = local_model_folder(source, required=(CONFIG_NAME, WEIGHTS_NAME), what="PDFNet weights", flag=flag,
                                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME], revision=revision)
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise HubFilesError(f"{source}: cannot read {folder / CONFIG_NAME}: {err}") from err
    cfg = config_from_hub_json(raw, str(source))
    cfg.model.pretrained = ""  # the weights come from the folder
    try:
        state = load_file(str(folder / WEIGHTS_NAME), device="cpu")
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise HubFilesError(f"{source}: cannot read {folder / WEIGHTS_NAME}: {err}") from err
    try:
        model = build_model_with_weights(cfg.model, state)
    except RuntimeError as err:
        raise HubFilesError(f"{source}: {WEIGHTS_NAME} does not fit {CONFIG_NAME}: {err}") from err
    attach_config(model, cfg)
    return model.to(device).eval(), cfg


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


def save_pretrained(model: torch.nn.Module, cfg: Config, directory: str | os.PathLike,
                    metrics: str | os.PathLike | dict | None = None, license: str = "mit",
                    source: str | None = None, repo_id: str | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``directory``.

    The files are written in a temporary sibling folder and renamed into place one by one, so a crash never leaves
    a half-written weight file. ``model`` may be wrapped (DDP, ``torch.compile``).
    """
    model = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    attach_config(model, cfg)
    card_kwargs = {"metrics": metrics, "license": license, "source": source, "repo_id": repo_id}
    with tempfile.TemporaryDirectory(prefix=f".{directory.name}.", dir=directory.parent) as tmp:
        model.save_pretrained(tmp, model_card_kwargs=card_kwargs)
        for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME):
            os.replace(Path(tmp) / name, directory / name)
    return directory


def push_to_hub(model: torch.nn.Module, cfg: Config, repo_id: str, metrics: str | os.PathLike | dict | None = None,
                private: bool | None = None, license: str = "mit", source: str | None = None) -> str:
    """Publish to ``repo_id`` (created when missing) in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, cfg, tmp, metrics=metrics, license=license, source=source, repo_id=repo_id)
        api = HfApi()
        repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
        return str(api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model",
                                     commit_message="Upload PDFNet weights, config and model card"))


__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "attach_config", "hub_config", "is_pretrained_source",
           "load_pretrained", "model_card", "push_to_hub", "save_pretrained"]
