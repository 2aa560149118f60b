"""Every model and loss knob does something, and a model with non-default knobs survives every path a model takes:
checkpoint -> exact resume, both hub save paths -> from_pretrained / load_model (ONNX: test_export.py exports a
checkpoint with these knobs). Runs saved before the loss terms were named resume."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from pdfnet.build import build_loss, build_model, implementation_of
from pdfnet.config import Config, LossConfig, ModelConfig, load_config
from pdfnet.engine.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint
from pdfnet.engine.hub import save_pretrained
from pdfnet.engine.inference import load_model
from pdfnet.engine.profiling import SavedTensorMeter, synthetic_batch
from pdfnet.models import PDFNet

BASE = ModelConfig(backbone="swin_tiny_test", emb_dim=16, drop_path=0.0, fusion_dropout=0.0, impl="reference")
# The knobs of tests/test_export.py's fixed export and of the round trips below (all non-default).
OTHER_KNOBS = ["model.variant=v2025.03", "model.fusion=concat", "model.backbone=timm/test_convnext",
               "model.grad_checkpointing=encoder", "model.impl=reference", "model.emb_dim=16", "data.size=256"]


def _outputs(model: torch.nn.Module, size: int = 128, train: bool = False, seed: int = 0) -> list[torch.Tensor]:
    data = synthetic_batch(1, size, torch.device("cpu"), seed=1)
    torch.manual_seed(seed)
    model.train(train)
    with torch.set_grad_enabled(train):
        out = model(data["image"], data["depth"], return_depth=train and model.has_depth_head)
    flat = out[0] + out[1] if isinstance(out, tuple) else out
    return [o.detach() for o in flat]


def _differs(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) != len(b) or any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(a, b))


def _model(**changes) -> PDFNet:
    torch.manual_seed(0)
    return build_model(dataclasses.replace(BASE, **changes))


def _saved_bytes(model: PDFNet) -> int:
    data = synthetic_batch(1, 128, torch.device("cpu"))
    meter = SavedTensorMeter(model)
    with meter.active():
        out = model.train()(data["image"], data["depth"])
    sum(o.float().mean() for o in out).backward()
    return meter.total_bytes


def _patch_stream_gradient(model: PDFNet) -> float:
    data = synthetic_batch(1, 128, torch.device("cpu"))
    x = data["image"].requires_grad_()
    sum(o.float().mean() for o in model.train()(x, data["depth"])).backward()
    return float(model.backbone.patch_embed.proj.weight.grad.abs().sum())


def _pretrained_file(tmp_path) -> str:
    from pdfnet.models.backbone import SWIN_SPECS, SwinEncoder

    torch.manual_seed(7)
    path = tmp_path / "swin.pth"
    torch.save(SwinEncoder(SWIN_SPECS["swin_tiny_test"]).state_dict(), path)
    return str(path)


def test_every_model_knob_changes_the_built_model_or_its_output(tmp_path):
    base = _model()
    checks = {
        "backbone": lambda: _differs(_outputs(base, 256), _outputs(_model(backbone="timm/test_convnext"), 256)),
        "emb_dim": lambda: _model(emb_dim=8).decoder.heads[0].in_channels == 8,
        "variant": lambda: _differs(_outputs(base), _outputs(_model(variant="v2025.03"))),
        "fusion": lambda: type(_model(fusion="concat").decoder.fse[0]).__name__ == "ConcatFusion",
        "impl": lambda: implementation_of(_model(impl="lean")) == "lean" and implementation_of(base) == "reference",
        "depth_head": lambda: _model(depth_head=False).depth_decoder is None and base.depth_decoder is not None,
        "drop_path": lambda: _differs(_outputs(base, train=True), _outputs(_model(drop_path=0.5), train=True)),
        "fusion_dropout": lambda: _differs(_outputs(base, train=True),
                                           _outputs(_model(fusion_dropout=0.5), train=True)),
        "detach_patches": lambda: _patch_stream_gradient(_model(detach_patches=False)) != _patch_stream_gradient(
            _model()),
        "grad_checkpointing": lambda: _saved_bytes(_model(grad_checkpointing="all")) < 0.5 * _saved_bytes(_model()),
        "pretrained": lambda: not torch.equal(_model(pretrained=_pretrained_file(tmp_path)).backbone.layers[0]
                                              .blocks[0].attn.qkv.weight, base.backbone.layers[0].blocks[0]
                                              .attn.qkv.weight),
        "use_depth": lambda: _differs(_outputs(base), _outputs(_model(use_depth=False))),
        "use_patches": lambda: _differs(_outputs(base), _outputs(_model(use_patches=False))),
    }
    assert set(checks) == {f.name for f in dataclasses.fields(ModelConfig)}, "a model knob without a check"
    failed = [name for name, check in checks.items() if not check()]
    assert not failed, failed


def test_every_loss_knob_changes_the_loss():
    torch.manual_seed(0)
    data = synthetic_batch(2, 64, torch.device("cpu"))
    data["mask"][:, :, :20] = 0  # not a symmetric picture: every term sees something
    seg = [torch.randn(2, 1, 64, 64), torch.randn(2, 1, 16, 16)]
    dep = [torch.randn(2, 1, 64, 64), torch.randn(2, 1, 32, 32)]

    def loss(**changes) -> float:
        cfg = Config()
        cfg.loss = dataclasses.replace(LossConfig(), **changes)
        return float(build_loss(cfg)(seg, data["mask"], data["depth_target"], dep)[0])

    base = loss()
    changes = {"seg_weight": 2.0, "side_weight": 0.2, "ssim_weight": 0.1, "integrity_weight": 0.9,
               "depth_weight": 0.3, "silog_lambda": 0.1, "edge_weight": 1.0, "wiou_smooth": 0.5,
               "terms": {"dice": 0.4}}
    assert set(changes) == {f.name for f in dataclasses.fields(LossConfig)}, "a loss knob without a check"
    same = [name for name, value in changes.items() if loss(**{name: value}) == pytest.approx(base, rel=1e-7)]
    assert not same, same


def test_a_timm_backbone_keeps_its_derived_buffers_when_built_around_a_checkpoint():
    """Building around a checkpoint puts parameters on 'meta' and fills them from the state dict; buffers the
    state dict does not hold (timm's relative-position indices) must be computed as in a normal build."""
    cfg = dataclasses.replace(BASE, backbone="timm/test_coatnet")
    torch.manual_seed(0)
    model = build_model(cfg)
    rebuilt = build_model(cfg, state=model.state_dict())
    persistent = set(model.state_dict())
    derived = {n: b for n, b in model.named_buffers() if n not in persistent}
    assert derived, "test_coatnet has non-persistent buffers"
    rebuilt_buffers = dict(rebuilt.named_buffers())
    for name, buffer in derived.items():
        assert not rebuilt_buffers[name].is_meta and torch.equal(rebuilt_buffers[name], buffer), name


@pytest.fixture(scope="module")
def knobs_run(two_image_root, tmp_path_factory):
    """A short training run (2 epochs) of a tiny model with non-default knobs, and the same run stopped after
    epoch 1 and resumed."""
    from test_train import _run_train, _weights, tiny_config

    out = tmp_path_factory.mktemp("knobs")
    full = tiny_config(two_image_root, out / "full", *OTHER_KNOBS, "train.epochs=2", "train.batch_size=2",
                       "data.val_split=")  # one step an epoch: the resume is at an epoch boundary
    from pdfnet.engine.trainer import Trainer

    Trainer(full, show_progress=False).fit()
    stop = copy.deepcopy(full)
    stop.train.out_dir, stop.train.epochs = str(out / "stop"), 1
    Trainer(stop, show_progress=False).fit()
    _run_train("--resume", str(out / "stop" / "last.pth"), "--opt", "train.epochs=2")
    return out, _weights(out / "full" / "last.pth"), _weights(out / "stop" / "last.pth")


def test_other_knobs_resume_bitwise(knobs_run):
    _, full, resumed = knobs_run
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_other_knobs_survive_both_hub_paths_bitwise(knobs_run, tmp_path):
    out, _, _ = knobs_run
    model, cfg = model_from_checkpoint(out / "full" / "last.pth")
    assert (cfg.model.fusion, cfg.model.backbone, cfg.model.variant) == ("concat", "timm/test_convnext", "v2025.03")
    expected = _outputs(model, 256)
    # 1. our save_pretrained (config.json = the whole run config) -> the mixin's from_pretrained and load_model
    save_pretrained(model, cfg, tmp_path / "ours")
    assert not _differs(expected, _outputs(PDFNet.from_pretrained(tmp_path / "ours"), 256))
    loaded, loaded_cfg = load_model(tmp_path / "ours", "cpu")
    assert not _differs(expected, _outputs(loaded, 256)) and loaded_cfg.data.size == 256
    # 2. the mixin's own save_pretrained on a loaded model: it carries its config, so data.size survives too
    loaded.save_pretrained(tmp_path / "mixin")
    stored = json.loads((tmp_path / "mixin" / "config.json").read_text())
    assert stored["data"]["size"] == 256 and stored["model"]["fusion"] == "concat"
    again, again_cfg = load_model(tmp_path / "mixin", "cpu")
    assert not _differs(expected, _outputs(again, 256)) and again_cfg.data.size == 256
    # 3. a bare model's save_pretrained (its constructor arguments only)
    bare = PDFNet(**{k: getattr(cfg.model, k) for k in ("backbone", "emb_dim", "variant", "fusion")})
    bare.load_state_dict(model.state_dict())
    bare.save_pretrained(tmp_path / "bare")
    assert not _differs(_outputs(bare, 256), _outputs(PDFNet.from_pretrained(tmp_path / "bare"), 256))


def test_a_run_saved_before_the_loss_terms_were_named_resumes(synthetic_root, tmp_path):
    """Old last.pth files hold the running loss sums as a list (total, seg, main, integrity, depth). A run resumed
    from one, even with a loss term added since, continues; the added term's mean for the resumed period is
    reported as missing (its sum lacks the steps before the resume), the others as before."""
    from test_train import _run_train, tiny_config

    from pdfnet.engine.trainer import Trainer

    cfg = tiny_config(synthetic_root, tmp_path / "run", "train.epochs=1", "train.save_every_steps=1",
                      "data.val_split=")
    Trainer(cfg, show_progress=False).fit()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pth")
    ckpt["state"]["batch_in_epoch"], ckpt["state"]["epoch"] = 2, 0  # mid-epoch, as an old run stopped there
    ckpt["state"]["loss_count"] = 2
    ckpt["state"]["loss_sums"] = [6.0, 5.0, 2.0, 0.5, 0.5]  # the old list form
    del ckpt["state"]["partial_parts"]
    atomic_save(ckpt, tmp_path / "run" / "last.pth")
    _run_train("--resume", str(tmp_path / "run" / "last.pth"), "--opt", "loss.terms={dice: 0.2}",
               "data.val_split=DIS-VD")
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    last = history[-1]
    assert last["loss_dice"] is None and isinstance(last["loss_seg"], float) and last["loss"] is not None
    assert "loss_main" in last and "loss_integrity" in last


def test_the_worked_example_configs_load_and_name_their_additions():
    from conftest import REPO

    examples = {p.stem: load_config(p) for p in (REPO / "configs" / "examples").glob("*.yaml")}
    assert examples["ablation_concat_fusion"].model.fusion == "concat"
    assert examples["loss_dice"].loss.terms == {"dice": 0.5}
    assert examples["backbone_timm"].model.backbone.startswith("timm/")
