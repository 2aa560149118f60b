"""evaluate.py: folders of saved maps, and our model on a DIS-5K-layout split (tiny model, synthetic files)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pdfnet.cli import evaluate
from pdfnet.data.io import read_gray_u8, write_png
from pdfnet.metrics import Evaluator

NAMES = ["1#Accessories#3#Eye glasses#01", "21#Tool#7#Rope#02", "plain"]


def _scene(seed: int, h: int = 70, w: int = 90) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = np.zeros((h, w), np.uint8)
    cv2.circle(gt, (int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20))), 15, 255, -1)
    cv2.line(gt, (0, int(rng.integers(0, h))), (w - 1, int(rng.integers(0, h))), 255, 2)
    pred = np.clip(cv2.GaussianBlur(gt, (0, 0), 2).astype(float) + rng.normal(0, 20, gt.shape), 0, 255)
    image = np.dstack([gt // 2 + 60, np.full_like(gt, 90), 255 - gt // 2]).astype(np.uint8)
    depth = np.where(gt > 0, 20000, 50000).astype(np.uint16)
    return gt, pred.astype(np.uint8), image, depth


@pytest.fixture()
def folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "DIS-TE1" / "gt", tmp_path / "preds"
    for i, name in enumerate(NAMES):
        gt, pred, _, _ = _scene(i)
        write_png(gt_dir / f"{name}.png", gt)
        write_png(pred_dir / f"{name}.png", pred)
    return pred_dir, gt_dir


def test_pred_dir_json_matches_the_evaluator(folders, tmp_path, capsys):
    pred_dir, gt_dir = folders
    out = tmp_path / "r.json"
    assert evaluate.main(["--pred_dir", str(pred_dir), "--gt_dir", str(gt_dir), "--json", str(out),
                          "--hce_cache", str(tmp_path / "cache")]) == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 3 and set(result["per_image"]) == set(NAMES)
    expected = Evaluator()
    for name in NAMES:
        expected.update(read_gray_u8(pred_dir / f"{name}.png"), read_gray_u8(gt_dir / f"{name}.png"), name)
    assert result["metrics"] == pytest.approx(expected.compute()["metrics"], abs=1e-12)
    assert set(result["metrics"]) == {"maxF", "meanF", "adpF", "wF", "MAE", "Sm", "meanEm", "maxEm", "adpEm", "HCE",
                                      "maxF_meanPR"}
    table = capsys.readouterr().out
    assert "DIS-TE1" in table and "maxF (mean-PR)" in table


def test_markdown_table_has_the_paper_numbers(folders, capsys):
    pred_dir, gt_dir = folders
    assert evaluate.main(["--pred_dir", str(pred_dir), "--gt_dir", str(gt_dir), "--table", "md", "--no_hce",
                          "--hce_cache", ""]) == 0
    out = capsys.readouterr().out
    assert "| DIS-TE1 | PDFNet (paper) | 0.915 |" in out and "| DIS-TE1 | ours |" in out


def test_mismatched_names_are_listed(folders, tmp_path, capsys):
    pred_dir, gt_dir = folders
    (pred_dir / "plain.png").rename(pred_dir / "other.png")
    assert evaluate.main(["--pred_dir", str(pred_dir), "--gt_dir", str(gt_dir), "--no_hce"]) == 2
    err = capsys.readouterr().err
    assert "missing prediction: plain" in err and "prediction without GT: other" in err
    assert evaluate.main(["--pred_dir", str(pred_dir), "--gt_dir", str(gt_dir), "--no_hce", "--allow_missing",
                          "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["n_images"] == 2


def test_unreadable_file_fails_by_name_and_writes_nothing(folders, tmp_path, capsys):
    pred_dir, gt_dir = folders
    (pred_dir / "plain.png").write_bytes(b"not a png")
    out = tmp_path / "r.json"
    assert evaluate.main(["--pred_dir", str(pred_dir), "--gt_dir", str(gt_dir), "--json", str(out),
                          "--no_hce"]) == 1
    assert "plain: cannot decode" in capsys.readouterr().err
    assert not out.exists()


def test_empty_or_missing_folders(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    assert evaluate.main(["--pred_dir", str(tmp_path / "pred"), "--gt_dir", str(tmp_path / "gt")]) == 2
    assert "no GT masks" in capsys.readouterr().err
    assert evaluate.main(["--pred_dir", str(tmp_path / "nope"), "--gt_dir", str(tmp_path / "gt")]) == 2
    assert "folder not found" in capsys.readouterr().err


def _make_split(root, split: str, n: int, depth: bool = True) -> None:
    for i in range(n):
        gt, _, image, dep = _scene(10 + i)
        write_png(root / split / "im" / f"img #{i}.png", image)
        write_png(root / split / "gt" / f"img #{i}.png", gt)
        if depth:
            (root / split / "depth").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / split / "depth" / f"img #{i}.png"), dep)


def test_checkpoint_mode_predicts_saves_and_evaluates(tiny_checkpoint, tmp_path):
    root = tmp_path / "DIS5K"
    _make_split(root, "DIS-TE1", 2)
    out, saved = tmp_path / "r.json", tmp_path / "maps"
    assert evaluate.main(["--ckpt", str(tiny_checkpoint), "--split", "DIS-TE1", "--data_root", str(root),
                          "--device", "cpu", "--save_dir", str(saved), "--json", str(out), "--tta",
                          "--hce_cache", ""]) == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 2
    saved_map = read_gray_u8(saved / "DIS-TE1" / "img #0.png")
    assert saved_map.shape == (70, 90)  # the image's own size
    # The saved maps evaluate to the same numbers (in-memory == on-disk).
    again = evaluate.main(["--pred_dir", str(saved / "DIS-TE1"), "--gt_dir", str(root / "DIS-TE1" / "gt"),
                           "--json", str(tmp_path / "again.json"), "--hce_cache", ""])
    assert again == 0
    assert json.loads((tmp_path / "again.json").read_text())["metrics"] == pytest.approx(result["metrics"])


def test_checkpoint_mode_all_test_splits_and_overall(tiny_checkpoint, tmp_path):
    root = tmp_path / "DIS5K"
    for split in evaluate.TEST_SPLITS:
        _make_split(root, split, 1)
    out = tmp_path / "r.json"
    assert evaluate.main(["--ckpt", str(tiny_checkpoint), "--split", "DIS-TE", "--data_root", str(root),
                          "--device", "cpu", "--json", str(out), "--no_hce"]) == 0
    splits = json.loads(out.read_text())["splits"]
    assert set(splits) == {*evaluate.TEST_SPLITS, "DIS-TE"} and splits["DIS-TE"]["n_images"] == 4


def test_several_checkpoints_or_a_run_directory_give_one_row_each(tiny_checkpoint, tmp_path, capsys):
    from pdfnet.engine.checkpoint import atomic_save, load_checkpoint

    root = tmp_path / "DIS5K"
    _make_split(root, "DIS-VD", 2)
    run = tmp_path / "run"
    run.mkdir()
    ckpt = load_checkpoint(tiny_checkpoint)
    atomic_save(ckpt, run / "best.pth")
    ckpt["model"] = {k: v * 0.5 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    atomic_save(ckpt, run / "last.pth")
    atomic_save(ckpt, run / "epoch_003.pth")
    common = ["--split", "DIS-VD", "--data_root", str(root), "--device", "cpu", "--no_hce"]
    assert evaluate.main(["--ckpt", str(run), *common, "--json", str(tmp_path / "all.json")]) == 0
    table = capsys.readouterr().out
    rows = [line.split()[1] for line in table.splitlines() if line.startswith("DIS-VD")]
    assert rows == ["run/best", "run/last", "run/epoch_003"]
    by_ckpt = json.loads((tmp_path / "all.json").read_text())["checkpoints"]
    assert list(by_ckpt) == [str(run / n) for n in ("best.pth", "last.pth", "epoch_003.pth")]
    assert evaluate.main(["--ckpt", str(run / "best.pth"), *common, "--json", str(tmp_path / "one.json")]) == 0
    assert json.loads((tmp_path / "one.json").read_text()) == by_ckpt[str(run / "best.pth")]
    assert by_ckpt[str(run / "last.pth")]["metrics"] == by_ckpt[str(run / "epoch_003.pth")]["metrics"]
    (tmp_path / "empty").mkdir()
    assert evaluate.main(["--ckpt", str(tmp_path / "empty"), *common]) == 2
    assert "no *.pth checkpoint" in capsys.readouterr().err


def test_checkpoint_mode_missing_depth_is_a_clear_error(tiny_checkpoint, tmp_path, capsys):
    root = tmp_path / "DIS5K"
    _make_split(root, "DIS-VD", 1, depth=False)
    assert evaluate.main(["--ckpt", str(tiny_checkpoint), "--split", "DIS-VD", "--data_root", str(root),
                          "--device", "cpu"]) == 2
    assert "missing depth folder" in capsys.readouterr().err


def test_checkpoint_mode_computes_missing_depth_on_the_fly(tiny_checkpoint, tiny_depth_model, tmp_path):
    root = tmp_path / "DIS5K"
    _make_split(root, "DIS-VD", 2, depth=False)
    out = tmp_path / "r.json"
    assert evaluate.main(["--ckpt", str(tiny_checkpoint), "--split", "DIS-VD", "--data_root", str(root),
                          "--device", "cpu", "--depth_model", str(tiny_depth_model), "--json", str(out),
                          "--no_hce"]) == 0
    assert json.loads(out.read_text())["n_images"] == 2


def test_checkpoint_mode_batched_and_tiled(tiny_checkpoint, tmp_path):
    """--batch_size changes nothing; --tile on images within one tile changes nothing either."""
    root = tmp_path / "DIS5K"
    _make_split(root, "DIS-TE2", 3)
    metrics = {}
    for tag, extra in (("one", []), ("batch", ["--batch_size", "2"]), ("tile", ["--tile"])):
        out = tmp_path / f"{tag}.json"
        assert evaluate.main(["--ckpt", str(tiny_checkpoint), "--split", "DIS-TE2", "--data_root", str(root),
                              "--device", "cpu", "--json", str(out), "--no_hce"] + extra) == 0
        metrics[tag] = json.loads(out.read_text())["metrics"]
    assert metrics["batch"] == pytest.approx(metrics["one"], abs=2e-3)
    assert metrics["tile"] == metrics["one"]


def test_an_empty_hce_cache_disables_the_cache():
    """'' used to become Path('') = the current folder, which filled the repository root with skeleton files."""
    args = evaluate.parse_args(["--pred_dir", "p", "--gt_dir", "g", "--hce_cache", ""])
    assert evaluate.new_evaluator(args).cache is None
    default = evaluate.new_evaluator(evaluate.parse_args(["--pred_dir", "p", "--gt_dir", "g"]))
    assert default.cache is not None
