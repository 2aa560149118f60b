"""DIS metrics against PySODMetrics (the oracle for the nine standard metrics) and the official HCE semantics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.morphology import skeletonize

from conftest import DIS_SAMPLES
from pdfnet.data.io import probs_to_u8, read_gray_u8, write_png
from pdfnet.metrics import Evaluator, as_u8_map
from pdfnet.metrics.hce import SkeletonCache, hce_counts, hce_counts_reference, zhang_suen_skeleton
from pdfnet.metrics.reference import pysodmetrics_values

pytest.importorskip("py_sod_metrics")
STANDARD = ("maxF", "meanF", "adpF", "wF", "MAE", "Sm", "meanEm", "maxEm", "adpEm")


def _pysod(pairs) -> dict[str, float]:
    return pysodmetrics_values(pairs)


def _ours(pairs, hce: bool = False) -> dict[str, float]:
    ev = Evaluator(hce=hce)
    for i, (pred, gt) in enumerate(pairs):
        ev.update(pred, gt, str(i))
    return ev.compute()["metrics"]


def _varied_pair(i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sizes, thin structures, soft/hard/constant predictions, size mismatches, empty and full GT."""
    h, w = (int(v) for v in rng.integers(24, 160, 2))
    gt = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(0, 3))):
        cv2.circle(gt, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(2, 30)), 255, -1)
    for _ in range(int(rng.integers(0, 5))):
        cv2.line(gt, (int(rng.integers(0, w)), int(rng.integers(0, h))), (int(rng.integers(0, w)),
                 int(rng.integers(0, h))), 255, int(rng.integers(1, 3)))
    kind = i % 6
    if kind == 0:
        pred = np.clip(cv2.GaussianBlur(gt, (0, 0), 2).astype(float) + rng.normal(0, 30, gt.shape), 0, 255)
    elif kind == 1:
        pred = rng.random(gt.shape) * 255
    elif kind == 2:
        pred = np.full(gt.shape, float(rng.integers(0, 256)))
    elif kind == 3:  # another size: resized to the GT
        pred = cv2.resize(cv2.GaussianBlur(gt, (0, 0), 3), (w // 2 + 3, h // 2 + 1)).astype(float)
    elif kind == 4:
        pred = np.roll(gt, 2, axis=1).astype(float)  # hard and shifted
    else:
        pred = np.where(gt > 0, 200.0, 0.0)  # a constant region inside a two-valued map
    if i % 7 == 0:
        gt[:] = 0
    if i % 11 == 0:
        gt[:] = 255
    return pred.astype(np.uint8), gt


def test_standard_metrics_equal_pysodmetrics_on_varied_pairs():
    rng = np.random.default_rng(0)
    pairs = [_varied_pair(i, rng) for i in range(90)]
    ours, ref = _ours(pairs), _pysod(pairs)
    for key in STANDARD:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


@pytest.mark.parametrize("case", ["empty_gt", "full_gt", "const_0", "const_255", "const_mid", "perfect"])
def test_edge_cases_per_image_equal_pysodmetrics(case):
    gt = np.zeros((40, 50), np.uint8)
    gt[10:30, 5:20] = 255
    pred = gt.copy()
    if case == "empty_gt":
        gt[:] = 0
        pred = np.tile(np.arange(50, dtype=np.uint8) * 5, (40, 1))
    elif case == "full_gt":
        gt[:] = 255
        pred = np.tile(np.arange(50, dtype=np.uint8) * 5, (40, 1))
    elif case == "const_0":
        pred[:] = 0
    elif case == "const_255":
        pred[:] = 255
    elif case == "const_mid":
        pred[:] = 109
    ours, ref = _ours([(pred, gt)]), _pysod([(pred, gt)])
    for key in STANDARD:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


def test_golden_values_of_a_perfect_prediction():
    gt = np.zeros((20, 30), np.uint8)
    gt[5:15, 10:20] = 255
    m = _ours([(gt, gt)], hce=True)
    n = gt.size
    assert m["maxF"] == pytest.approx(1) and m["MAE"] == 0 and m["Sm"] == pytest.approx(1)
    assert m["wF"] == pytest.approx(1) and m["HCE"] == 0
    assert m["maxEm"] == pytest.approx(n / (n - 1))  # E-measure divides by N - 1: above 1, not clipped
    assert m["maxF_meanPR"] == pytest.approx(1, abs=1e-7)


def test_mean_pr_protocol_differs_from_mean_f_curve():
    rng = np.random.default_rng(3)
    pairs = [_varied_pair(i, rng) for i in (1, 3, 4, 8)]
    ev = Evaluator(hce=False)
    stats = {}
    for i, (pred, gt) in enumerate(pairs):
        ev.update(pred, gt, str(i))
    result = ev.compute()
    stats = ev._stats.values()  # white-box: recompute the protocol from the per-image curves
    p = np.mean([s["precision"] for s in stats], axis=0)
    r = np.mean([s["recall"] for s in stats], axis=0)
    expected = np.max(1.3 * p * r / (0.3 * p + r + 1e-8))
    assert result["metrics"]["maxF_meanPR"] == pytest.approx(expected, abs=1e-12)
    assert result["metrics"]["maxF_meanPR"] != pytest.approx(result["metrics"]["maxF"], abs=1e-6)


def test_hce_fast_equals_official_semantics():
    rng = np.random.default_rng(1)
    for i in range(40):
        pred, gt = _varied_pair(i, rng)
        if pred.shape != gt.shape:
            pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
        assert hce_counts(pred, gt) == hce_counts_reference(pred, gt), i


def test_hce_golden_cases():
    gt = np.zeros((80, 80), np.uint8)
    gt[10:40, 10:40] = 255
    assert hce_counts(gt, gt) == (0, 0, 0, 0)
    assert hce_counts(np.zeros_like(gt), np.zeros_like(gt)) == (0, 0, 0, 0)
    # A false-positive blob far from the object: one independent region, no boundary to correct.
    pred = gt.copy()
    pred[55:75, 55:75] = 255
    assert hce_counts(pred, gt) == (0, 1, 0, 0)
    # Thresholds are > 128 on raw values: 128 is background, 129 foreground, no min-max stretch.
    assert hce_counts(np.where(gt > 0, 129, 128).astype(np.uint8), gt) == (0, 0, 0, 0)
    assert sum(hce_counts(np.where(gt > 0, 128, 0).astype(np.uint8), gt)) > 0


def test_hce_full_image_error_region_follows_the_official_count():
    gt = np.full((30, 30), 255, np.uint8)
    pred = np.zeros_like(gt)  # everything is a false negative: the official counts 0 independent regions
    assert hce_counts(pred, gt) == hce_counts_reference(pred, gt)


def test_skeleton_equals_skimage():
    rng = np.random.default_rng(2)
    for i in range(60):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.95)
        if i % 2:
            mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert np.array_equal(zhang_suen_skeleton(mask), skeletonize(mask)), i
    disc = np.zeros((120, 140), np.uint8)
    cv2.circle(disc, (60, 60), 45, 1, -1)
    cv2.line(disc, (0, 100), (139, 110), 1, 3)
    assert np.array_equal(zhang_suen_skeleton(disc.astype(bool)), skeletonize(disc.astype(bool)))


def test_skeleton_cache_is_keyed_by_content(tmp_path):
    gt = np.zeros((30, 40), np.uint8)
    gt[5:25, 8:30] = 255
    cache = SkeletonCache(tmp_path)
    first = cache.get(gt)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and np.array_equal(first, skeletonize(gt > 128))
    assert np.array_equal(cache.get(np.where(gt > 0, 200, 3).astype(np.uint8)), first)  # same binary content
    assert len(list(tmp_path.glob("*.npy"))) == 1
    files[0].write_bytes(b"garbage")  # a corrupt entry is recomputed, not trusted
    assert np.array_equal(cache.get(gt), first)


def test_in_memory_probabilities_equal_saved_png(tmp_path):
    rng = np.random.default_rng(4)
    gt = np.zeros((50, 60), np.uint8)
    cv2.circle(gt, (30, 25), 15, 255, -1)
    probs = np.clip(cv2.GaussianBlur(gt.astype(np.float32) / 255, (0, 0), 2) + rng.normal(0, 0.05, gt.shape), 0, 1)
    write_png(tmp_path / "p.png", probs_to_u8(probs))
    on_disk = Evaluator().update(read_gray_u8(tmp_path / "p.png"), gt, "a")
    torch = pytest.importorskip("torch")
    in_memory = Evaluator().update(torch.from_numpy(probs)[None, None], gt, "a")
    assert on_disk == in_memory


def test_bad_maps_and_misuse():
    with pytest.raises(ValueError, match=r"probabilities in \[0,1\]"):
        as_u8_map(np.full((4, 4), 2.0))
    with pytest.raises(ValueError, match="single"):
        as_u8_map(np.zeros((2, 4, 4), np.uint8))
    ev = Evaluator(hce=False)
    with pytest.raises(ValueError, match="no images"):
        ev.compute()
    ev.update(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), "x")
    with pytest.raises(ValueError, match="already evaluated"):
        ev.update(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), "x")


def test_parallel_equals_sequential(tmp_path):
    rng = np.random.default_rng(5)
    items = [(str(i), *_varied_pair(i, rng)) for i in range(8)]
    seq = Evaluator(hce=True)
    seq.update_many(items)
    par = Evaluator(hce=True, skeleton_cache=tmp_path, workers=2)
    par.update_many(items)
    assert seq.compute() == par.compute()


@pytest.mark.skipif(not DIS_SAMPLES.is_dir(), reason="../shared/data/dis5k-samples not available")
def test_real_dis_samples_agree():
    rng = np.random.default_rng(6)
    paths = sorted((DIS_SAMPLES / "DIS-TE2" / "gt").glob("*.png"))
    paths = sorted(paths, key=lambda p: p.stat().st_size)[:3]  # the smallest files keep this fast
    pairs = []
    for path in paths:
        gt = read_gray_u8(path)
        pred = np.clip(cv2.GaussianBlur(gt, (0, 0), 2).astype(float) + rng.normal(0, 20, gt.shape), 0, 255)
        pairs.append((cv2.resize(pred.astype(np.uint8), (gt.shape[1] // 2, gt.shape[0] // 2)), gt))
    ours, ref = _ours(pairs), _pysod(pairs)
    for key in STANDARD:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
    for pred, gt in pairs[:1]:
        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
        assert hce_counts(pred, gt) == hce_counts_reference(pred, gt)
