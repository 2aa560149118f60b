"""evaluate.py: folders of saved maps, and our model on a DIS-5K-layout split (tiny model, synthetic files)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import REPO
from pdfnet.cli import evaluate
from pdfnet.data.io import read_gray_u8, write_png
from pdfnet.metrics import Evaluator

SHARED = REPO.parent / "shared"
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
    row = next(line for line in out.splitlines() if line.startswith("| DIS-TE1 | PDFNet (paper) |"))
    header = next(line for line in out.splitlines() if line.startswith("| dataset |"))
    paper = dict(zip(header.strip("| ").split(" | "), row.strip("| ").split(" | ")))
    # The paper's own table (not the project page: TE1 0.915 there), every metric it reports.
    assert paper["maxF"] == "0.890" and paper["wF"] == "0.846" and paper["meanEm"] == "0.927"
    assert paper["Sm"] == "0.899" and paper["MAE"] == "0.031" and paper["meanF"] == "-"  # not in the paper
    assert "| DIS-TE1 | ours |" in out and "0.913" in out and "0.915" in out  # the version note


def test_latex_table_and_the_baselines_rows(folders, capsys):
    pred_dir, gt_dir = folders
    assert evaluate.main(["--pred_dir", str(pred_dir), "--gt_dir", str(gt_dir), "--table", "latex", "--no_hce",
                          "--compare", "birefnet", "mvanet"]) == 0
    out = capsys.readouterr().out
    assert "\\begin{tabular}" in out and "\\end{tabular}" in out
    methods = [line.split(" & ")[1] for line in out.splitlines() if line.startswith("DIS-TE1 & ")]
    assert methods == ["ours", "PDFNet (paper)", "BiRefNet (paper)", "MVANet (paper)"]
    assert "DIS-TE1 & BiRefNet (paper) & 0.866 & - & - & 0.819 & 0.037 & 0.885 & 0.911" in out
    with pytest.raises(SystemExit):
        evaluate.main(["--pred_dir", str(pred_dir), "--gt_dir", str(gt_dir), "--compare", "u2net"])


def test_shipped_paper_table_is_the_papers_table():
    """pdfnet/metrics/paper_results.json holds the paper's DIS-5K table (../shared/reference/paper-table, checked
    there against the paper's images): every method, split and metric (its E-measure is our meanEm)."""
    from pdfnet.metrics.report import PAPER_METHODS, format_table, paper_results

    shipped = paper_results()
    assert PAPER_METHODS == ("pdfnet", "mvanet", "birefnet", "diffdis", "isnet")
    assert "0.913" in shipped["version_note"] and "0.915" in shipped["version_note"] and shipped["source"]
    reference = SHARED / "reference" / "paper-table" / "dis5k_table.json"
    if not reference.is_file():
        pytest.skip("../shared/reference/paper-table is absent")
    table = json.loads(reference.read_text())
    by_name = {m["name"]: m["splits"] for m in shipped["methods"].values()}
    assert set(by_name) == set(table["methods"])
    ours = {"maxF": "maxF", "wF": "wF", "Em": "meanEm", "Sm": "Sm", "MAE": "MAE"}
    for name, splits in table["methods"].items():
        assert set(by_name[name]) == set(splits)
        for split, values in splits.items():
            assert {ours[k]: v for k, v in values.items()} == by_name[name][split], (name, split)
    # The printed table shows exactly those numbers.
    fake = {split: dict.fromkeys(("maxF", "wF", "meanEm", "Sm", "MAE"), 0.5) for split in table["methods"]["PDFNet"]}
    printed = format_table(fake, "md", with_paper=True, compare=PAPER_METHODS[1:])
    for name, splits in table["methods"].items():
        for split, values in splits.items():
            cells = f"| {split} | {name} (paper) | " + " | ".join(
                f"{values[k]:.3f}" for k in ("maxF", "wF", "MAE", "Sm", "Em")) + " |"
            assert cells in printed, cells


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


def test_two_checkpoints_of_one_name_save_apart_and_twins_are_refused(tiny_checkpoint, tmp_path, capsys):
    import shutil

    root = tmp_path / "DIS5K"
    _make_split(root, "DIS-TE1", 1)
    for run in ("run_a", "run_b"):
        (tmp_path / run).mkdir()
        shutil.copy(tiny_checkpoint, tmp_path / run / "best.pth")
    saved = tmp_path / "maps"
    args = ["--split", "DIS-TE1", "--data_root", str(root), "--device", "cpu", "--no_hce", "--save_dir", str(saved)]
    assert evaluate.main(["--ckpt", str(tmp_path / "run_a" / "best.pth"), str(tmp_path / "run_b" / "best.pth"),
                          *args]) == 0
    assert sorted(p.name for p in saved.iterdir()) == ["run_a_best", "run_b_best"]
    (tmp_path / "x" / "run_a").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, tmp_path / "x" / "run_a" / "best.pth")
    capsys.readouterr()
    assert evaluate.main(["--ckpt", str(tmp_path / "run_a" / "best.pth"), str(tmp_path / "x" / "run_a" / "best.pth"),
                          *args]) == 2
    assert "several checkpoints are labelled run_a/best" in capsys.readouterr().err


def test_a_checkpoint_cannot_choose_where_eval_writes(tiny_checkpoint, tmp_path):
    """A loaded model's config saying eval.save_dir (an older version's knob, or a hostile file) writes nothing."""
    import torch

    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["config"]["eval"]["save_dir"] = str(tmp_path / "elsewhere")
    torch.save(ckpt, tmp_path / "steering.pth")
    root = tmp_path / "DIS5K"
    _make_split(root, "DIS-TE1", 1)
    assert evaluate.main(["--ckpt", str(tmp_path / "steering.pth"), "--split", "DIS-TE1", "--data_root", str(root),
                          "--device", "cpu", "--no_hce"]) == 0
    assert not (tmp_path / "elsewhere").exists()


def test_a_missing_split_is_reported_before_any_split_is_predicted(tiny_checkpoint, tmp_path, capsys):
    root = tmp_path / "DIS5K"
    for split in ("DIS-TE1", "DIS-TE2", "DIS-TE3"):  # DIS-TE4 is missing
        _make_split(root, split, 1)
    saved = tmp_path / "maps"
    assert evaluate.main(["--ckpt", str(tiny_checkpoint), "--split", "DIS-TE", "--data_root", str(root),
                          "--device", "cpu", "--no_hce", "--save_dir", str(saved)]) == 2
    assert "DIS-TE4" in capsys.readouterr().err
    assert not saved.exists()  # nothing was predicted


def test_depth_ablation_gives_one_row_per_generator_and_caches_the_maps(tiny_checkpoint, tiny_depth_model, tmp_path,
                                                                         capsys):
    import shutil

    from pdfnet.cli.evaluate import generator_folder

    root = tmp_path / "DIS5K"
    _make_split(root, "DIS-TE1", 2, depth=False)
    other = tmp_path / "other_da"  # a second generator: the same tiny model, other weights
    shutil.copytree(tiny_depth_model, other)
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "model.safetensors")
    save_file({k: v * 1.5 if v.is_floating_point() else v for k, v in weights.items()}, other / "model.safetensors")
    argv = ["--ckpt", str(tiny_checkpoint), "--split", "DIS-TE1", "--data_root", str(root), "--device", "cpu",
            "--no_hce", "--depth_models", str(tiny_depth_model), str(other), "--json", str(tmp_path / "a.json")]
    assert evaluate.main(argv) == 0
    first = capsys.readouterr().out
    folders = [root / "DIS-TE1" / generator_folder(str(g)) for g in (tiny_depth_model, other)]
    assert all(len(list(f.glob("*.png"))) == 2 for f in folders)
    stamps = {p: p.stat().st_mtime_ns for f in folders for p in f.iterdir()}
    rows = [line for line in first.splitlines() if line.startswith("DIS-TE1")]
    assert len(rows) == 2 and f"{tiny_depth_model} (" in first and f"{other} (" in first
    assert evaluate.main(argv) == 0  # a rerun reads the cached maps
    assert {p: p.stat().st_mtime_ns for f in folders for p in f.iterdir()} == stamps
    assert "0 to compute" in capsys.readouterr().out
    payload = json.loads((tmp_path / "a.json").read_text())["checkpoints"]
    assert len(payload) == 2
