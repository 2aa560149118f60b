"""Configuration: typed dataclasses, the single source of truth for every knob.

``load_config(path, overrides)`` starts from the defaults below, applies a YAML file, then ``a.b=value`` overrides
(values parsed as YAML). Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the full
key path, the bad value and what is allowed. ``config_to_yaml`` dumps the resolved config (saved with every run).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value or key that is not allowed; the message names the key path."""


def _knob(default: Any, doc: str, *, choices: tuple | None = None, min: float | None = None,
          max: float | None = None, min_exclusive: bool = False, multiple_of: int | None = None,
          legacy: dict | None = None) -> Any:
    """A dataclass field with its documentation and validation rules attached. ``legacy`` maps values that older
    configs (and the checkpoints that store them) used to the current spelling."""
    meta = {"doc": doc, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive,
            "multiple_of": multiple_of, "legacy": legacy}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


BACKBONES = ("swin_base_patch4_window12_384", "swin_tiny_test")
GRAD_CHECKPOINTING = ("none", "encoder", "all")
VARIANTS = ("v2025.03", "v2026")


@dataclass
class ModelConfig:
    backbone: str = _knob("swin_base_patch4_window12_384", "Swin encoder (paper: Swin-B w12 384)", choices=BACKBONES)
    emb_dim: int = _knob(128, "decoder width", min=8)
    variant: str = _knob("v2026", "official code version reproduced: v2025.03 (released weights) or v2026 (HEAD)",
                         choices=VARIANTS)
    depth_head: bool = _knob(True, "build the auxiliary depth decoder (SiLog loss); not used at inference")
    drop_path: float = _knob(0.1, "encoder stochastic depth rate", min=0.0, max=0.9)
    fusion_dropout: float = _knob(0.1, "dropout in the CoA cross-attention blocks (official 0.1)", min=0.0, max=0.9)
    detach_patches: bool = _knob(True, "block gradients through the patch stream, as the official code")
    grad_checkpointing: str = _knob("none", "recompute activations in backward to save memory: none, encoder (Swin "
                                    "blocks), all (also the FSE blocks and the full-resolution decoder stages)",
                                    choices=GRAD_CHECKPOINTING, legacy={False: "none", True: "encoder"})
    pretrained: str = _knob("", "ImageNet Swin weights: local file or hub id; '' = random init")
    use_depth: bool = _knob(True, "ablation: feed the depth map (False = zeros)")
    use_patches: bool = _knob(True, "ablation: run the 8x8 full-resolution patch branch (False = zeros)")


@dataclass
class AugmentConfig:
    enabled: bool = _knob(True, "apply the official training augmentations")
    hflip_p: float = _knob(0.5, "horizontal flip probability", min=0.0, max=1.0)
    rotate_p: float = _knob(0.5, "rotation (with inscribed-square crop) probability", min=0.0, max=1.0)
    rotate_max_deg: int = _knob(30, "rotation angle range in degrees: [-max, max)", min=1, max=180)
    colour_p: float = _knob(0.5, "brightness/contrast/colour/sharpness enhancement probability", min=0.0, max=1.0)
    gray_p: float = _knob(0.25, "grayscale probability", min=0.0, max=1.0)
    crop_p: float = _knob(0.5, "centre up-crop probability", min=0.0, max=1.0)
    crop_border: int = _knob(30, "up-crop removes up to this many pixels per side pair", min=0)


@dataclass
class DataConfig:
    root: str = _knob("data/DIS5K", "dataset root (DIS-5K layout: <root>/<split>/{im,gt,depth})")
    layout: str = _knob("auto", "dis5k (<split>/im,gt,depth), official (<split>/images,masks,depth_large), "
                        "list (a text file per split: 'image mask [depth]' per line), or auto",
                        choices=("auto", "dis5k", "official", "list"))
    train_split: str = _knob("DIS-TR", "training split folder under root")
    val_split: str = _knob("DIS-VD", "validation split folder under root ('' = no validation)")
    image_dir: str = _knob("im", "image folder name inside a split")
    mask_dir: str = _knob("gt", "mask folder name inside a split")
    depth_dir: str = _knob("depth", "pseudo-depth folder name inside a split (16-bit PNG from prepare_depth.py)")
    depth_choices: list[str] = _knob([], "training: depth folders the input depth is drawn from, uniformly per sample "
                                     "and epoch (paper: depth_large, depth_base, depth_small); [] = depth_dir")
    depth_target_dir: str = _knob("", "training: depth folder of the depth losses' target (paper: depth_large_1024); "
                                  "'' = the input depth")
    size: int = _knob(1024, "square training/inference size in pixels", min=128, multiple_of=64)
    num_workers: int = _knob(4, "data loader worker processes", min=0)
    cache_dir: str = _knob("", "on-disk cache of resized samples ('' = off)")
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class LossConfig:
    side_weight: float = _knob(0.5, "weight of each deep-supervision side output (main output: 1)", min=0.0)
    ssim_weight: float = _knob(0.5, "SSIM loss weight inside each output's segmentation loss", min=0.0)
    integrity_weight: float = _knob(0.5, "depth integrity-prior loss weight", min=0.0)
    depth_weight: float = _knob(0.1, "SiLog loss weight on the depth head", min=0.0)
    silog_lambda: float = _knob(0.5, "SiLog variance weight", min=0.0, max=1.0)
    edge_weight: float = _knob(5.0, "structure loss boundary emphasis: 1 + edge_weight*|avgpool31(m)-m|", min=0.0)
    wiou_smooth: float | None = _knob(None, "weighted-IoU smoothing in the structure loss, 1 - (I+s)/(U-I+s); null = "
                                      "the official value of model.variant (v2025.03: 1, v2026: 1e-6)", min=0.0)


@dataclass
class OptimConfig:
    lr: float = _knob(1e-5, "AdamW learning rate", min=0.0, min_exclusive=True)
    weight_decay: float = _knob(1e-4, "AdamW weight decay", min=0.0)
    betas: list[float] = _knob([0.9, 0.999], "AdamW betas")
    eps: float = _knob(1e-8, "AdamW epsilon", min=0.0, min_exclusive=True)
    schedule: str = _knob("constant", "LR schedule (the official cosine is constant: warmup=base=min LR)",
                          choices=("constant", "cosine"))
    warmup_epochs: int = _knob(0, "linear warm-up epochs", min=0)
    min_lr: float = _knob(1e-5, "final LR of the cosine schedule", min=0.0)
    clip_grad: float = _knob(0.0, "max gradient norm (0 = no clipping)", min=0.0)


@dataclass
class TrainConfig:
    out_dir: str = _knob("runs/pdfnet", "run directory (config, checkpoints, history, tensorboard)")
    epochs: int = _knob(100, "training epochs", min=1)
    batch_size: int = _knob(1, "samples per step per process", min=1)
    accum_steps: int = _knob(1, "gradient accumulation steps", min=1)
    device: str = _knob("auto", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    seed: int = _knob(0, "random seed", min=0)
    amp: str = _knob("bf16", "autocast dtype ('none' = float32); bf16 becomes fp16 on GPUs without native bfloat16 "
                     "(V100, T4); fp16 uses a loss scaler", choices=("none", "bf16", "fp16"))
    tf32: bool = _knob(True, "CUDA float32 matmuls and convolutions in TensorFloat-32 (Ampere and newer)")
    ema_decay: float = _knob(0.0, "EMA of weights (0 = off, e.g. 0.999)", min=0.0, max=1.0)
    compile: bool = _knob(False, "torch.compile the model")
    save_every_steps: int = _knob(0, "also write last.pth every K steps (0 = once per epoch)", min=0)
    val_every_epochs: int = _knob(1, "validate every N epochs", min=1)
    init_from: str = _knob("", "start from these weights (our checkpoint or an official one), e.g. to fine-tune; "
                           "the optimizer starts fresh (use --resume to continue a run)")
    val_hce: bool = _knob(False, "compute HCE at validation (slow on full-size masks)")
    val_panels: int = _knob(4, "validation samples shown as image|depth|GT|prediction panels in tensorboard", min=0)
    best_metric: str = _knob("maxF", "validation metric that selects best.pth",
                             choices=("maxF", "meanF", "wF", "Sm", "meanEm", "MAE", "HCE"))
    log_every_steps: int = _knob(20, "tensorboard scalar interval", min=1)
    on_nonfinite: str = _knob("stop", "non-finite loss: stop with a message, or skip the batch",
                              choices=("stop", "skip"))


@dataclass
class EvalConfig:
    tta: bool = _knob(False, "test-time augmentation: flip x scales {0.75, 1, 1.25}")
    save_dir: str = _knob("", "where to save predicted maps ('' = do not save)")
    batch_size: int = _knob(1, "inference batch size: images per forward pass (tiles in tiled mode)", min=1)
    half: bool = _knob(False, "inference under bf16 autocast (fp16 on GPUs without bf16)")
    tile: bool = _knob(False, "tiled high-resolution inference: a global pass plus full-resolution tiles of data.size")
    tile_overlap: int = _knob(0, "minimum overlap of neighbouring tiles in pixels, < data.size (0 = data.size / 4)",
                              min=0)
    tile_skip_confidence: float = _knob(0.98, "skip a tile where the global pass is uniformly below 1-c or above c "
                                        "(1 = run every tile)", min=0.5, max=1.0)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Returns the stored value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key '{path}': got {value!r}; allowed: "
                          + " or ".join(_type_name(a) for a in typing.get_args(tp)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}': got {value!r} ({type(value).__name__}); allowed: a list")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
            return float(value)  # PyYAML reads '1e-5' (no dot) as a string; accept it as the number it is
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{path}': got {value!r} ({type(value).__name__}); allowed: a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{path}': got {value!r} ({type(value).__name__}); allowed: an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{path}': got {value!r} ({type(value).__name__}); allowed: true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{path}': got {value!r} ({type(value).__name__}); allowed: a string")
        return value
    raise ConfigError(f"config key '{path}': unsupported type {tp}")  # pragma: no cover - programming error


def _check_rules(value: Any, meta: typing.Mapping[str, Any], path: str) -> None:
    if value is None:  # only reachable where the annotation allows None (checked by _coerce); it means "default"
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{path}': got {value!r}; allowed: " + ", ".join(repr(c) for c in choices))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        bound = f"> {lo}" if meta.get("min_exclusive") else f">= {lo}"
        raise ConfigError(f"config key '{path}': got {value!r}; allowed: {bound}")
    if hi is not None and value > hi:
        raise ConfigError(f"config key '{path}': got {value!r}; allowed: <= {hi}")
    step = meta.get("multiple_of")
    if step and value % step:
        raise ConfigError(f"config key '{path}': got {value!r}; allowed: a multiple of {step}")


def _build(cls: type, data: Any, path: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, validating every key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{path or '<root>'}': expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{path + '.' if path else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}; allowed keys here: {', '.join(fields)}")
        tp = hints[key]
        legacy = fields[key].metadata.get("legacy") or {}
        # Exact type as well as value: 1 == True, but only the YAML boolean is an old spelling.
        value = next((new for old, new in legacy.items() if type(old) is type(value) and old == value), value)
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, full)
        else:
            kwargs[key] = _coerce(value, tp, full)
            _check_rules(kwargs[key], fields[key].metadata, full)
    return cls(**kwargs)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested mapping (missing keys take their defaults)."""
    return _build(Config, data, "")


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{'.'.join(parts[:i + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.epochs=3'`` -> ``('train.epochs', 3)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = (),
                base: dict[str, Any] | None = None) -> Config:
    """Defaults <- ``base`` (a stored config tree) or the YAML file at ``path`` <- ``overrides`` (``a.b=value``).
    Raises ConfigError on any bad key/value."""
    tree: dict[str, Any] = copy.deepcopy(base) if base is not None else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(loaded).__name__}")
        tree = loaded or {}
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    return config_from_dict(tree)


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
