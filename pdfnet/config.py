"""Configuration: typed dataclasses, the single source of truth for every knob.

``load_config(path, overrides)`` starts from the defaults below, applies a YAML file (on top of the file its
``base:`` key names, if any: an ablation is the recipe plus the lines it changes), then ``a.b=value`` overrides
(values parsed as YAML). Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the full
key path, the bad value and what is allowed. ``config_to_yaml`` dumps the resolved config (saved with every run).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .registry import BACKBONES, FUSIONS, IMPLEMENTATIONS, LOSS_TERMS, Registry
from .variants import VARIANTS


class ConfigError(ValueError):
    """A configuration value or key that is not allowed; the message names the key path."""


def _knob(default: Any, doc: str, *, choices: tuple | None = None, min: float | None = None,
          max: float | None = None, min_exclusive: bool = False, max_exclusive: bool = False,
          multiple_of: int | None = None, length: int | None = None, legacy: dict | None = None) -> Any:
    """A dataclass field with its documentation and validation rules attached. ``choices`` may hold registries
    (:mod:`pdfnet.registry`: any of their names is allowed); for lists the bounds apply to each item, for mappings
    the choices to the keys and the bounds to the values; ``length``: the exact number of items. ``legacy`` maps
    values that older configs (and the checkpoints that store them) used to the current spelling."""
    meta = {"doc": doc, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive,
            "max_exclusive": max_exclusive, "multiple_of": multiple_of, "length": length, "legacy": legacy}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


GRAD_CHECKPOINTING = ("none", "encoder", "all")
MAX_SIZE = 8192  # model input side in pixels: 1024 is the paper's; above 8192 a 1-image forward needs > 100 GB


@dataclass
class ModelConfig:
    backbone: str = _knob("swin_base_patch4_window12_384", "encoder (paper: Swin-B w12 384); timm/<name> = any timm "
                          "model through features_only", choices=(BACKBONES,))
    emb_dim: int = _knob(128, "decoder width", min=8, max=2048)
    variant: str = _knob("v2026", "official code version reproduced: v2025.03 (released weights) or v2026 (HEAD)",
                         choices=tuple(VARIANTS))
    fusion: str = _knob("fse", "fusion block of the decoder stages (paper: fse; concat = ablation without BIS/CoA)",
                        choices=(FUSIONS,))
    impl: str = _knob("auto", "implementation: reference (the paper in plain PyTorch), lean (CPU speed/memory "
                      "drop-ins, same weights), auto (lean on CPU, reference on GPUs)",
                      choices=("auto", IMPLEMENTATIONS))
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
    size: int = _knob(1024, "square training/inference size in pixels", min=128, max=MAX_SIZE, multiple_of=64)
    num_workers: int = _knob(4, "data loader worker processes", min=0, max=256)
    cache_dir: str = _knob("", "on-disk cache of resized samples, shared by all ranks and runs ('' = off; auto = "
                           "<data.root>/.pdfnet_cache)")
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class LossConfig:
    seg_weight: float = _knob(1.0, "weight of the segmentation term: structure (wBCE + wIoU) + SSIM (official 1)",
                              min=0.0)
    side_weight: float = _knob(0.5, "weight of each deep-supervision side output (main output: 1)", min=0.0)
    ssim_weight: float = _knob(0.5, "SSIM loss weight inside each output's segmentation loss", min=0.0)
    integrity_weight: float = _knob(0.5, "depth integrity-prior loss weight", min=0.0)
    depth_weight: float = _knob(0.1, "SiLog loss weight on the depth head", min=0.0)
    silog_lambda: float = _knob(0.5, "SiLog variance weight", min=0.0, max=1.0)
    edge_weight: float = _knob(5.0, "structure loss boundary emphasis: 1 + edge_weight*|avgpool31(m)-m|", min=0.0)
    wiou_smooth: float | None = _knob(None, "weighted-IoU smoothing in the structure loss, 1 - (I+s)/(U-I+s); null = "
                                      "the official value of model.variant (v2025.03: 1, v2026: 1e-6)", min=0.0)
    terms: dict[str, float] = _knob({}, "further loss terms and their weights, name: weight (names: the loss-term "
                                    "registry, e.g. dice); the built-in ones use the weights above",
                                    choices=(LOSS_TERMS,), min=0.0)


@dataclass
class OptimConfig:
    lr: float = _knob(1e-5, "AdamW learning rate", min=0.0, min_exclusive=True)
    weight_decay: float = _knob(1e-4, "AdamW weight decay", min=0.0)
    betas: list[float] = _knob([0.9, 0.999], "AdamW betas (beta1, beta2), each in [0, 1)", min=0.0, max=1.0,
                               max_exclusive=True, length=2)
    eps: float = _knob(1e-8, "AdamW epsilon", min=0.0, min_exclusive=True)
    schedule: str = _knob("constant", "LR schedule (the official cosine is constant: warmup=base=min LR)",
                          choices=("constant", "cosine"))
    warmup_epochs: int = _knob(0, "linear warm-up epochs", min=0)
    min_lr: float = _knob(1e-5, "final LR of the cosine schedule", min=0.0)
    clip_grad: float = _knob(0.0, "max gradient norm (0 = no clipping)", min=0.0)


@dataclass
class TrainConfig:
    out_dir: str = _knob("runs/pdfnet", "run directory (config, checkpoints, history, tensorboard)")
    epochs: int = _knob(100, "training epochs", min=1, max=1_000_000)
    batch_size: int = _knob(1, "samples per step per process", min=1, max=4096)
    accum_steps: int = _knob(1, "gradient accumulation steps", min=1, max=65536)
    device: str = _knob("auto", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    seed: int = _knob(0, "random seed", min=0)
    amp: str = _knob("bf16", "autocast dtype ('none' = float32); bf16 becomes fp16 on GPUs without native bfloat16 "
                     "(V100, T4); fp16 uses a loss scaler", choices=("none", "bf16", "fp16"))
    tf32: bool = _knob(True, "CUDA float32 matmuls and convolutions in TensorFloat-32 (Ampere and newer)")
    ema_decay: float = _knob(0.0, "EMA of weights (0 = off, e.g. 0.999)", min=0.0, max=1.0)
    compile: str = _knob("none", "torch.compile before DDP: none; model (one graph); blocks (each encoder block and "
                         "each decoder in place: shared code for repeated blocks, DDP overlap)",
                         choices=("none", "model", "blocks"), legacy={False: "none", True: "model"})
    compile_backend: str = _knob("inductor", "torch.compile backend (aot_eager/eager: no code generation, for checks)",
                                 choices=("inductor", "aot_eager", "eager"))
    save_every_steps: int = _knob(0, "also write last.pth every K steps (0 = once per epoch)", min=0)
    val_every_epochs: int = _knob(1, "validate every N epochs", min=1)
    init_from: str = _knob("", "start from these weights (our checkpoint or an official one), e.g. to fine-tune; "
                           "the optimizer starts fresh (use --resume to continue a run)")
    val_hce: bool = _knob(False, "compute HCE at validation (slow on full-size masks)")
    val_half: bool | None = _knob(None, "validate under bf16 autocast (fp16 on GPUs without bf16); null = as the model "
                                  "trains (train.amp)")
    val_batch_size: int = _knob(4, "images per validation forward pass", min=1, max=4096)
    val_workers: int = _knob(2, "processes computing the validation metrics while the GPU predicts (0 = in this one)",
                             min=0, max=256)
    val_panels: int = _knob(4, "validation samples shown as image|depth|GT|prediction panels in tensorboard", min=0)
    best_metric: str = _knob("maxF", "validation metric that selects best.pth",
                             choices=("maxF", "meanF", "wF", "Sm", "meanEm", "MAE", "HCE"))
    log_every_steps: int = _knob(20, "tensorboard scalar interval", min=1)
    on_nonfinite: str = _knob("stop", "non-finite loss: stop with a message, or skip the batch",
                              choices=("stop", "skip"))


@dataclass
class EvalConfig:
    tta: bool = _knob(False, "test-time augmentation: flip x scales {0.75, 1, 1.25}")
    batch_size: int = _knob(1, "inference batch size: images per forward pass (tiles in tiled mode)", min=1, max=4096)
    half: bool = _knob(False, "inference under bf16 autocast (fp16 on GPUs without bf16)")
    tile: bool = _knob(False, "tiled high-resolution inference: a global pass plus full-resolution tiles of data.size")
    tile_overlap: int = _knob(0, "minimum overlap of neighbouring tiles in pixels, < data.size (0 = data.size / 4)",
                              min=0, max=MAX_SIZE)
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

# Values echoed in error messages are shortened: a config (from a file, an override or a checkpoint) may hold a huge
# or deeply nested value, and a message must stay a line, whatever it is given.
_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 2, 80, 80, 40
_SHOW.maxtuple = _SHOW.maxlist = _SHOW.maxdict = _SHOW.maxset = 4
MAX_SHOWN = 120


def show(value: Any) -> str:
    """A short repr of ``value`` for messages (at most ~120 characters; containers cut at a few items)."""
    text = _SHOW.repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _bad(path: str, value: Any, allowed: str, kind: bool = True) -> ConfigError:
    what = f"{show(value)} ({type(value).__name__})" if kind else show(value)
    return ConfigError(f"config key '{path}': got {what}; allowed: {allowed}")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Returns the stored value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError:
                pass
        raise _bad(path, value, " or ".join(_type_name(a) for a in typing.get_args(tp)), kind=False)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _bad(path, value, "a list")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(path, value, "a mapping of name: value")
        key_tp, value_tp = typing.get_args(tp)
        return {_coerce(k, key_tp, f"{path} (a key)"): _coerce(v, value_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
            value = float(value)  # PyYAML reads '1e-5' (no dot) as a string; accept it as the number it is
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(path, value, "a number")
        if not math.isfinite(value):
            raise _bad(path, value, "a finite number", kind=False)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(path, value, "an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(path, value, "true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _bad(path, value, "a string")
        return value
    raise ConfigError(f"config key '{path}': unsupported type {tp}")  # pragma: no cover - programming error


def _allowed(choices: tuple) -> str:
    return ", ".join(", ".join(repr(n) for n in c) if isinstance(c, Registry) else repr(c) for c in choices)


def _check_rules(value: Any, meta: typing.Mapping[str, Any], path: str) -> None:
    """Choices, bounds, multiples and length of a knob's value. For a list the bounds apply to its items; for a
    mapping the choices apply to its keys and the bounds to its values."""
    if value is None:  # only reachable where the annotation allows None (checked by _coerce); it means "default"
        return
    length = meta.get("length")
    if length is not None and len(value) != length:
        raise ConfigError(f"config key '{path}': got {show(value)} ({len(value)} values); allowed: exactly {length} "
                          "values")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_rules(key, {"choices": meta.get("choices")}, f"{path} (a key)")
            _check_rules(item, {k: v for k, v in meta.items() if k not in ("choices", "length")}, f"{path}.{key}")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_rules(item, {k: v for k, v in meta.items() if k != "length"}, f"{path}[{i}]")
        return
    choices = meta.get("choices")
    if choices is not None and not any(value in c if isinstance(c, Registry) else value == c for c in choices):
        raise ConfigError(f"config key '{path}': got {show(value)}; allowed: {_allowed(choices)}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        bound = f"> {lo}" if meta.get("min_exclusive") else f">= {lo}"
        raise ConfigError(f"config key '{path}': got {show(value)}; allowed: {bound}")
    if hi is not None and (value > hi or (meta.get("max_exclusive") and value == hi)):
        bound = f"< {hi}" if meta.get("max_exclusive") else f"<= {hi}"
        raise ConfigError(f"config key '{path}': got {show(value)}; allowed: {bound}")
    step = meta.get("multiple_of")
    if step and value % step:
        raise ConfigError(f"config key '{path}': got {show(value)}; allowed: a multiple of {step}")


# Keys that configs (and checkpoints) written by earlier versions hold and that are read as absent. eval.save_dir: where
# eval writes comes from its own --save_dir, never from a loaded model's config.
REMOVED_KEYS = {"eval.save_dir"}


def _build(cls: type, data: Any, path: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, validating every key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{path or '<root>'}': expected a mapping, got {show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = key if isinstance(key, str) else show(key)
        full = f"{path}.{name}" if path else name
        if full in REMOVED_KEYS:
            continue
        if key not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
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


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'line L, column C: problem' from a PyYAML error (its position is 0-based)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else str(problem)


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.epochs=3'`` -> ``('train.epochs', 3)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {show(text)}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {show(text)}: the value is not valid YAML ({_yaml_problem(err)})") from err
    return key.strip(), value


def _key_line(text: str, dotted: str) -> int | None:
    """The 1-based line of key ``a.b`` in a YAML document (None when it is not there)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in re.sub(r"\[\d+\]$", "", dotted).split("."):
        if not isinstance(node, yaml.MappingNode):
            return line
        match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
        if match is None:
            return line
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in ``path``; ConfigError naming the file (and the line) when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from err
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {_yaml_problem(err)}") from err


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied section by section (a new dict; nested mappings merged)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_config_tree(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], str]:
    """The mapping a config file describes, its ``base:`` file (path relative to it) applied first."""
    if path.resolve() in seen:
        raise ConfigError(f"config file {path}: 'base' files form a loop ({' -> '.join(str(p) for p in seen)})")
    loaded, text = read_yaml_file(path)
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections (model:, data:, ...), got "
                          f"{type(loaded).__name__}")
    tree = dict(loaded or {})
    base = tree.pop("base", None)
    if base is None:
        return tree, text
    if not isinstance(base, str) or not base:
        raise ConfigError(f"config file {path}: 'base' must name a config file, got {show(base)}")
    parent, _ = _read_config_tree(path.parent / base, seen + (path.resolve(),))
    return _merge(parent, tree), text


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = (),
                base: dict[str, Any] | None = None) -> Config:
    """Defaults <- ``base`` (a stored config tree) or the YAML file at ``path`` (itself on top of the file its
    ``base:`` key names, if any) <- ``overrides`` (``a.b=value``). Raises ConfigError on any bad key/value; a bad
    value from the file is located by its line."""
    tree: dict[str, Any] = copy.deepcopy(base) if base is not None else {}
    text = None
    if path is not None:
        tree, text = _read_config_tree(Path(path))
    overridden = set()
    for item in overrides:
        key, value = parse_override(item)
        _set_path(tree, key, value)
        overridden.add(key)
    try:
        return config_from_dict(tree)
    except ConfigError as err:
        found = re.search(r"config key '([^']+)'", str(err))
        # "optim.betas[0]" or "optim.betas (a key)" was set by the override "optim.betas": not the file's line
        key = re.split(r"[\[ ]", found.group(1))[0] if found else None
        if text is not None and found and key not in overridden:
            line = _key_line(text, found.group(1))
            if line is not None:
                raise ConfigError(f"{err} (in {path}, line {line})") from err
        raise


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
