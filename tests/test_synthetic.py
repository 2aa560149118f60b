"""Synthetic DIS-like data: deterministic, DIS-5K layout, thin structures, depth that follows the integrity prior."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from conftest import REPO
from pdfnet.data.datasets import discover_split
from pdfnet.data.io import read_depth, read_gray_u8
from pdfnet.data.synthetic import make_scene, scene_rng


def test_scenes_are_deterministic_per_seed_and_index():
    a = make_scene(128, scene_rng(3, 7))
    b = make_scene(128, scene_rng(3, 7))
    c = make_scene(128, scene_rng(3, 8))
    for x, y in ((a.image, b.image), (a.mask, b.mask), (a.depth, b.depth)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.mask, c.mask)


def test_depth_follows_the_integrity_prior_and_structures_are_thin():
    thin_fraction, fg_std, bg_std = [], [], []
    for i in range(12):
        s = make_scene(192, scene_rng(0, i))
        fg = s.mask > 0
        assert set(np.unique(s.mask).tolist()) == {0, 255} and s.image.shape == (192, 192, 3)
        depth = s.depth / 65535.0
        assert depth[fg].mean() > depth[~fg].mean()  # the object is nearer (larger, as Depth Anything)
        fg_std.append(depth[fg].std())
        bg_std.append(depth[~fg].std())
        eroded = cv2.erode(s.mask, np.ones((3, 3), np.uint8)) > 0
        thin_fraction.append(1 - eroded.sum() / fg.sum())
    assert np.median(fg_std) < 0.25 * np.median(bg_std)  # smooth foreground, chaotic background
    assert np.median(thin_fraction) > 0.3  # much of the foreground is 1-3 px thin


def test_script_writes_a_dis5k_layout(tmp_path):
    out = tmp_path / "syn"
    proc = subprocess.run([sys.executable, "scripts/make_synthetic_dis.py", "--out", str(out), "--n_train", "5",
                           "--n_val", "3", "--size", "96", "--seed", "1"], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    train, val = discover_split(out, "DIS-TR"), discover_split(out, "DIS-VD")
    assert len(train) == 5 and len(val) == 3
    assert not {s.name for s in train} & {s.name for s in val}
    sample = val[0]
    assert read_gray_u8(sample.mask).shape == (96, 96)
    depth = cv2.imread(str(sample.depth), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and 0 <= read_depth(sample.depth).min() <= read_depth(sample.depth).max() <= 1
    bad = subprocess.run([sys.executable, "scripts/make_synthetic_dis.py", "--out", str(out), "--size", "32"],
                         cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert bad.returncode == 2 and "--size must be at least 64" in bad.stderr
