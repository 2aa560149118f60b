from __future__ import annotations

import pytest
import yaml

from pdfnet.config import Config, ConfigError, config_to_yaml, load_config, parse_override


def test_defaults_are_the_paper_recipe():
    cfg = Config()
    assert cfg.model.backbone == "swin_base_patch4_window12_384"
    assert cfg.model.emb_dim == 128
    assert cfg.optim.lr == 1e-5 and cfg.optim.weight_decay == 1e-4
    assert cfg.train.epochs == 100 and cfg.train.batch_size == 1 and cfg.data.size == 1024


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  variant: v2025.03\ntrain:\n  epochs: 7\n")
    cfg = load_config(path, ["train.epochs=3", "optim.betas=[0.8, 0.9]", "data.root=/x y/z"])
    assert cfg.model.variant == "v2025.03"
    assert cfg.train.epochs == 3
    assert cfg.optim.betas == [0.8, 0.9]
    assert cfg.data.root == "/x y/z"


def test_int_and_yaml_exponent_strings_accepted_for_float(tmp_path):
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    # PyYAML reads 1e-4 (no dot) as a string; it is still the number the user meant.
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 2e-5\n")
    assert load_config(path).optim.lr == 2e-5
    with pytest.raises(ConfigError, match="allowed: a number"):
        load_config(None, ["optim.lr=fast"])


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["model.backbone=swin_tiny_test", "train.amp=none"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["model"]["backbone"] == "swin_tiny_test"


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.varient=v2026", "unknown config key 'model.varient' (did you mean 'model.variant'?)"),
        ("nosuch.key=1", "unknown config key 'nosuch'"),
        ("model.variant=v3", "config key 'model.variant': got 'v3'; allowed: 'v2025.03', 'v2026'"),
        ("data.size=1000", "config key 'data.size': got 1000; allowed: a multiple of 64"),
        ("data.size=64", "config key 'data.size': got 64; allowed: >= 128"),
        ("train.epochs=0", "config key 'train.epochs': got 0; allowed: >= 1"),
        ("train.epochs=2.5", "config key 'train.epochs': got 2.5 (float); allowed: an integer"),
        ("model.depth_head=1", "config key 'model.depth_head': got 1 (int); allowed: true or false"),
        ("optim.lr=0", "config key 'optim.lr': got 0.0; allowed: > 0.0"),
        ("optim.betas=0.9", "config key 'optim.betas': got 0.9 (float); allowed: a list"),
        ("optim.betas=[0.9, x]", "config key 'optim.betas[1]': got 'x' (str); allowed: a number"),
        ("model.drop_path=2", "config key 'model.drop_path': got 2.0; allowed: <= 0.9"),
        ("model=3", "config section 'model': expected a mapping, got 3"),
        ("train.epochs", "expected key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(scalar)


def test_parse_override_yaml_values():
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=") == ("a.b", "")


def test_shipped_configs_load():
    from conftest import REPO

    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        load_config(path)


def test_shipped_configs_load_and_dis5k_is_the_paper_recipe():
    from conftest import REPO

    for name in ("dis5k", "smoke", "custom"):
        load_config(REPO / "configs" / f"{name}.yaml")
    cfg = load_config(REPO / "configs" / "dis5k.yaml")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.schedule) == (1e-5, 1e-4, "constant")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.data.size, cfg.train.best_metric) == (100, 1, 1024, "maxF")
    assert cfg.data.depth_choices == ["depth_large", "depth_base", "depth_small"]
    assert cfg.data.depth_target_dir == "depth_large_1024" and cfg.data.val_split == "DIS-VD"
    assert cfg.data.augment.enabled and cfg.model.drop_path == 0.1 and cfg.model.fusion_dropout == 0.1


def test_an_override_is_not_blamed_on_the_files_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  betas: [0.9, 0.99]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["optim.betas=[2, -1]"])
    assert "optim.betas[0]" in str(err.value) and "line" not in str(err.value)
    path.write_text("optim:\n  betas: [2, 0.99]\n")
    with pytest.raises(ConfigError, match=r"optim\.betas\[0\].*line 2"):
        load_config(path)
