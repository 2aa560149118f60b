"""Data pipeline: layouts, up-front validation, joint augmentation alignment, determinism, cache, real samples."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from conftest import DIS_SAMPLES
from pdfnet.config import AugmentConfig
from pdfnet.data.dataset import DISDataset
from pdfnet.data.datasets import DatasetError, discover, validate_samples
from pdfnet.data.io import read_depth, write_png
from pdfnet.data.synthetic import write_split
from pdfnet.data.transforms import JointAugment


def _official_layout(root, split="DIS-TR", n=2):
    for i in range(n):
        write_png(root / split / "images" / f"a #{i}.png", np.full((20, 30, 3), 100, np.uint8))
        write_png(root / split / "masks" / f"a #{i}.png", np.zeros((20, 30), np.uint8))
        write_png(root / split / "depth_large" / f"a #{i}.png", np.zeros((20, 30), np.uint8))


def test_layouts_are_discovered(tmp_path):
    write_split(tmp_path / "dis", "DIS-VD", 3, 64, seed=0)
    assert [s.name for s in discover(tmp_path / "dis", "DIS-VD")] == [f"synthetic#{i:05d}" for i in range(3)]
    _official_layout(tmp_path / "off")
    official = discover(tmp_path / "off", "DIS-TR")
    assert len(official) == 2 and official[0].depth.parent.name == "depth_large"
    lst = tmp_path / "mine"
    for name in ("x y", "z"):
        write_png(lst / "img" / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
        write_png(lst / "msk" / f"{name}.png", np.zeros((8, 8), np.uint8))
    (lst / "train.txt").write_text("# my data\nimg/x y.png\tmsk/x y.png\n\nimg/z.png\tmsk/z.png\n")
    samples = discover(lst, "train", need_depth=False)
    assert [s.name for s in samples] == ["x y", "z"] and samples[0].mask.name == "x y.png"


def test_bad_list_and_unknown_layout(tmp_path):
    (tmp_path / "train.txt").write_text("only_one_field.png\nimg/missing.png\tmsk/missing.png\n")
    with pytest.raises(DatasetError) as err:
        discover(tmp_path, "train", need_depth=False)
    assert "expected 2 tab-separated paths" in str(err.value) and "file not found" in str(err.value)
    with pytest.raises(DatasetError, match="cannot tell the layout"):
        discover(tmp_path, "DIS-TE3")


def test_validation_reports_every_problem(tmp_path):
    write_split(tmp_path, "DIS-VD", 3, 64, seed=0)
    names = sorted((tmp_path / "DIS-VD" / "gt").iterdir())
    write_png(names[0], np.zeros((32, 64), np.uint8))  # size mismatch
    names[1].write_bytes(b"broken")  # unreadable
    samples = discover(tmp_path, "DIS-VD")
    with pytest.raises(DatasetError) as err:
        validate_samples(samples)
    text = str(err.value)
    assert "2 problem(s)" in text and "size mismatch (image 64x64, mask 64x32, depth 64x64)" in text
    assert "unreadable mask" in text


def test_geometric_augmentation_keeps_maps_aligned():
    """Image, depth and mask move together pixel for pixel; photometric ops touch the image only; a mask stays
    binary through flips and the nearest-neighbour rotation (the bilinear resizes after a crop soften its edge, as in
    the official recipe)."""
    mask = np.zeros((64, 64), np.uint8)
    cv2.circle(mask, (20, 30), 12, 255, -1)
    cv2.line(mask, (0, 63), (63, 5), 255, 2)
    geometric = AugmentConfig(hflip_p=1.0, rotate_p=1.0, colour_p=0.0, gray_p=0.0, crop_p=1.0)
    for seed in range(10):
        maps = {"image": np.repeat(mask[..., None], 3, 2), "depth": mask.astype(np.uint16) * 257, "mask": mask.copy()}
        out = JointAugment(geometric)(maps, np.random.default_rng(seed))
        assert out["mask"].shape == (64, 64) and out["mask"].dtype == np.uint8 and out["depth"].dtype == np.uint16
        assert np.array_equal(out["image"][..., 0], out["mask"])  # same type: the same pixels
        assert np.abs(out["depth"] / 257 - out["mask"]).max() <= 1.5  # each 16-bit interpolation rounds on its grid
    binary = AugmentConfig(hflip_p=1.0, rotate_p=0.0, colour_p=0.0, gray_p=0.0, crop_p=0.0)
    assert set(np.unique(JointAugment(binary)({"image": np.zeros((64, 64, 3), np.uint8), "mask": mask},
                                              np.random.default_rng(0))["mask"])) == {0, 255}
    photometric = AugmentConfig(hflip_p=0.0, rotate_p=0.0, colour_p=1.0, gray_p=1.0, crop_p=0.0)
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = JointAugment(photometric)({"image": image, "mask": mask[:32, :32].copy()}, np.random.default_rng(0))
    assert np.array_equal(out["mask"], mask[:32, :32]) and np.array_equal(out["image"][..., 0], out["image"][..., 1])


def _float_recipe_oracle(maps: dict[str, np.ndarray], cfg: AugmentConfig, rng: np.random.Generator) -> dict:
    """The previous implementation of the recipe (float tensors, torchvision), kept as the oracle the integer
    pipeline's distribution is checked against."""
    import math

    from PIL import Image, ImageEnhance
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    levels = {"image": 255.0, "mask": 255.0, "depth": 65535.0}
    out = {k: (torch.from_numpy(v.astype(np.float32)).permute(2, 0, 1) if v.ndim == 3
               else torch.from_numpy(v.astype(np.float32))[None]) / levels[k] for k, v in maps.items()}
    keys = list(out)
    if rng.random() < cfg.hflip_p:
        out = {k: v.flip(-1) for k, v in out.items()}
    if rng.random() < cfg.rotate_p:
        angle = float(rng.integers(-cfg.rotate_max_deg, cfg.rotate_max_deg))
        for k in keys:
            _, h, w = out[k].shape
            rotated = TF.rotate(out[k], angle, interpolation=InterpolationMode.NEAREST)
            theta = math.radians(abs(angle) % 180)
            side = int(h / (math.cos(min(theta, math.pi - theta)) + math.sin(min(theta, math.pi - theta))))
            top, left = (h - side) // 2, (w - side) // 2
            out[k] = TF.resize(rotated[:, top:top + side, left:left + side], [h, w], antialias=True)
    if rng.random() < cfg.colour_p:
        pil = Image.fromarray((out["image"] * 255).clamp(0, 255).byte().permute(1, 2, 0).numpy(), "RGB")
        for enhancer, (lo, hi) in ((ImageEnhance.Brightness, (5, 15)), (ImageEnhance.Contrast, (5, 15)),
                                   (ImageEnhance.Color, (0, 20)), (ImageEnhance.Sharpness, (0, 30))):
            pil = enhancer(pil).enhance(int(rng.integers(lo, hi + 1)) / 10.0)
        out["image"] = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255.0
    if rng.random() < cfg.gray_p:
        out["image"] = TF.rgb_to_grayscale(out["image"], num_output_channels=3)
    if rng.random() < cfg.crop_p and cfg.crop_border > 0:
        _, h, w = out["image"].shape
        crop_w = int(rng.integers(max(1, w - cfg.crop_border), w))
        crop_h = int(rng.integers(max(1, h - cfg.crop_border), h))
        for k in keys:
            top, left = (h - crop_h) // 2, (w - crop_w) // 2
            out[k] = torch.nn.functional.interpolate(out[k][None, :, top:top + crop_h, left:left + crop_w],
                                                     size=(h, w), mode="bilinear", align_corners=True)[0]
    return {k: (v.permute(1, 2, 0) if v.shape[0] == 3 else v[0]).numpy() * levels[k] for k, v in out.items()}


def test_integer_augmentation_draws_the_float_recipes_parameters_and_images():
    """The integer pipeline (OpenCV on uint8/uint16) against the previous float implementation (torchvision) with the
    same generator: the same random parameters (the streams stay in step), images within rounding, and the
    nearest-neighbour rotation differing only where a sample falls on a pixel boundary."""
    from pdfnet.data.transforms import centre_crop_resize, inscribed_side

    g = np.random.default_rng(0)
    base = cv2.GaussianBlur(g.integers(0, 256, (96, 96, 3), dtype=np.uint8), (9, 9), 3)
    depth = cv2.GaussianBlur(g.integers(0, 65536, (96, 96), dtype=np.uint16), (9, 9), 3)
    mask = np.where(cv2.GaussianBlur(base[..., 0], (15, 15), 5) > 128, 255, 0).astype(np.uint8)
    cfg = AugmentConfig()
    for seed in range(24):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        got = JointAugment(cfg)({"image": base, "depth": depth, "mask": mask}, a)
        want = _float_recipe_oracle({"image": base, "depth": depth, "mask": mask}, cfg, b)
        assert a.random() == b.random()  # both consumed the same draws
        for key, scale in (("image", 255), ("depth", 65535), ("mask", 255)):
            levels = np.abs(got[key].astype(np.float64) - want[key]) * 255 / scale  # in 8-bit levels
            # Rounding (the old code truncated to uint8 before PIL's colour ops, which amplify it: mean <= 1.2
            # levels here), except where a nearest-neighbour rotation sample falls on a pixel boundary.
            assert levels.mean() <= 1.5 and (levels > 8).mean() < 0.005, (seed, key, levels.mean())
    # the parameter ranges: crops inside the image, rotation square inside the rotated frame
    for angle in range(-30, 30):
        side = inscribed_side(1024, angle)
        assert side <= 1024 and side * (np.cos(np.radians(abs(angle))) + np.sin(np.radians(abs(angle)))) <= 1024 + 1
    ramp = np.tile(np.arange(64, dtype=np.uint16)[None] * 1000, (64, 1))
    cropped = centre_crop_resize(ramp, 40, 40)
    assert cropped[:, 0].min() == 12 * 1000 and cropped[:, -1].max() == 51 * 1000  # corners aligned


def test_items_are_deterministic_per_epoch_and_cached_items_equal(tmp_path):
    write_split(tmp_path, "DIS-TR", 2, 96, seed=1)
    samples = discover(tmp_path, "DIS-TR")
    plain = DISDataset(samples, 64, AugmentConfig(), seed=3)
    cached = DISDataset(samples, 64, AugmentConfig(), cache_dir=tmp_path / "cache", seed=3)
    a, b = plain[1], cached[1]
    assert a["image"].shape == (3, 64, 64) and a["depth"].shape == (1, 64, 64) and a["mask"].shape == (1, 64, 64)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert len(list((tmp_path / "cache").glob("*.bin"))) == 1
    assert torch.equal(cached[1]["depth"], b["depth"])  # read back from the cache
    plain.set_epoch(1)
    assert not torch.equal(plain[1]["image"], a["image"])
    # A changed source file is a new cache entry, never a stale one.
    src = samples[1].image
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    cached[1]
    assert len(list((tmp_path / "cache").glob("*.bin"))) == 2


def test_sixteen_bit_depth_round_trip(tmp_path):
    depth = (np.arange(64 * 64, dtype=np.float64).reshape(64, 64) / (64 * 64 - 1) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), depth)
    assert np.array_equal(np.rint(read_depth(tmp_path / "d.png") * 65535).astype(np.uint16), depth)


@pytest.mark.skipif(not DIS_SAMPLES.is_dir(), reason="../shared/data/dis5k-samples not available")
def test_real_dis5k_samples_load():
    samples = discover(DIS_SAMPLES, "DIS-TE2", need_depth=False)
    assert len(samples) == 16 and any("#" in s.name and " " not in s.name for s in samples)
    validate_samples(samples[:4])
    smallest = sorted(samples, key=lambda s: s.image.stat().st_size)[:2]
    dataset = DISDataset(smallest, 256, AugmentConfig())
    item = dataset[0]
    assert item["image"].shape == (3, 256, 256) and item["mask"].max() == 255 and tuple(item["orig_size"]) > (256, 256)


def _recipe_split(root, folders, n=3):
    """A DIS-5K style split whose depth folders hold constant maps of distinct values (to tell them apart)."""
    for i in range(n):
        write_png(root / "DIS-TR" / "im" / f"s{i}.png", np.full((64, 64, 3), 90, np.uint8))
        write_png(root / "DIS-TR" / "gt" / f"s{i}.png", np.zeros((64, 64), np.uint8))
        for value, folder in enumerate(folders, start=1):
            write_png(root / "DIS-TR" / folder / f"s{i}.png", np.full((64, 64), value * 10000, np.uint16))


def test_paper_depth_recipe_draws_input_per_sample_and_uses_the_target_map(tmp_path):
    from pdfnet.config import DataConfig
    from pdfnet.data.datasets import training_samples

    folders = ["depth_large", "depth_base", "depth_small", "depth_large_1024"]
    _recipe_split(tmp_path, folders, n=12)
    cfg = DataConfig(root=str(tmp_path), depth_choices=folders[:3], depth_target_dir=folders[3], size=128)
    samples, notices = training_samples(cfg)
    assert not notices and len(samples[0].depth_choices) == 3 and samples[0].depth_target.parent.name == folders[3]
    ds = DISDataset(samples, 128, augment=None, seed=5)
    drawn = {int(ds[i]["depth"][0, 0, 0]) for i in range(12)}
    assert drawn == {10000, 20000, 30000}  # all three maps are used (12 draws, fixed seed)
    assert all(int(ds[i]["depth_target"][0, 0, 0]) == 40000 for i in range(3))
    again = DISDataset(samples, 128, augment=None, seed=5)
    assert all(torch.equal(ds[i]["depth"], again[i]["depth"]) for i in range(12))  # reproducible choice


def test_depth_recipe_falls_back_to_a_single_map_or_names_missing_folders(tmp_path):
    from pdfnet.config import DataConfig
    from pdfnet.data.datasets import training_samples

    _recipe_split(tmp_path / "single", ["depth"])
    recipe = dict(depth_choices=["depth_large", "depth_base"], depth_target_dir="depth_large_1024", size=128)
    samples, notices = training_samples(DataConfig(root=str(tmp_path / "single"), **recipe))
    assert len(notices) == 1 and "single map folder 'depth'" in notices[0]
    item = DISDataset(samples, 128)[0]
    assert torch.equal(item["depth"], item["depth_target"])

    _recipe_split(tmp_path / "partial", ["depth_large"])
    with pytest.raises(DatasetError, match="depth_base"):
        training_samples(DataConfig(root=str(tmp_path / "partial"), **recipe))


def test_items_are_integer_maps_converted_on_the_device_exactly(tmp_path):
    """Workers hand uint8/uint16 maps (8 MB instead of 24 MB per 1024² sample); batch_to_device gives the float
    inputs bitwise; augmentation works on the integer maps themselves."""
    from pdfnet.data.dataset import IMAGENET_MEAN, IMAGENET_STD, batch_to_device, load_resized

    write_split(tmp_path, "DIS-TR", 2, 96, seed=1)
    samples = discover(tmp_path, "DIS-TR")
    plain = DISDataset(samples, 64, augment=None)
    item = plain[0]
    assert (item["image"].dtype, item["depth"].dtype, item["mask"].dtype) == (torch.uint8, torch.uint16, torch.uint8)
    arrays = load_resized(samples[0], 64)
    old_image = (torch.from_numpy(arrays["image"]).permute(2, 0, 1).float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    old_depth = torch.from_numpy(arrays["depth"].astype(np.float32) / 65535.0)[None]
    old_mask = torch.from_numpy((arrays["mask"] > 128).astype(np.float32))[None]
    batch = batch_to_device(torch.utils.data.default_collate([item]), torch.device("cpu"))
    assert torch.equal(batch["image"][0], old_image) and torch.equal(batch["depth"][0], old_depth)
    assert torch.equal(batch["mask"][0], old_mask) and torch.equal(batch["depth_target"][0], old_depth)

    augment = AugmentConfig(hflip_p=1, rotate_p=1, crop_p=1, colour_p=0, gray_p=0)
    augmented = DISDataset(samples, 64, augment=augment, seed=3)
    mask = np.where(arrays["mask"] > 128, 255, 0).astype(np.uint8)
    expected = JointAugment(augment)({"image": arrays["image"], "depth": arrays["depth"], "mask": mask},
                                     np.random.default_rng([3, 0, 0]))
    got = augmented[0]
    assert np.array_equal(got["image"].permute(1, 2, 0).numpy(), expected["image"])
    assert np.array_equal(got["mask"][0].numpy(), expected["mask"])
    assert np.array_equal(got["depth"][0].numpy(), expected["depth"])


def test_persistent_workers_see_each_epoch_through_the_sampler(tmp_path):
    """Persistent workers keep their own dataset copy, so the epoch travels with the index: two epochs through
    two persistent workers equal the same epochs read in this process."""
    from pdfnet.engine.sampler import ResumableSampler

    write_split(tmp_path, "DIS-TR", 4, 64, seed=2)
    dataset = DISDataset(discover(tmp_path, "DIS-TR"), 64, AugmentConfig(), seed=1)
    sampler = ResumableSampler(len(dataset), seed=1, with_epoch=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=2,
                                         persistent_workers=True)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        images = torch.cat([b["image"] for b in loader])
        expected = torch.stack([dataset[(epoch, i)]["image"] for i in sampler.epoch_indices()])
        assert torch.equal(images, expected), epoch


def test_a_sample_decodes_and_reads_only_the_depth_map_it_draws(tmp_path, monkeypatch):
    """The recipe draws one of three input maps per sample and epoch: without the cache only that map (and the
    target) is decoded; with it, only those arrays of the entry are read."""
    from pdfnet.config import DataConfig
    from pdfnet.data import dataset as dataset_module
    from pdfnet.data.datasets import training_samples

    folders = ["depth_large", "depth_base", "depth_small", "depth_large_1024"]
    _recipe_split(tmp_path, folders, n=4)
    cfg = DataConfig(root=str(tmp_path), depth_choices=folders[:3], depth_target_dir=folders[3], size=64)
    samples, _ = training_samples(cfg)
    decoded = []
    real_read = dataset_module.read_depth
    monkeypatch.setattr(dataset_module, "read_depth", lambda path: decoded.append(path.parent.name) or real_read(path))
    plain = DISDataset(samples, 64, augment=None, seed=5)
    item = plain[(2, 1)]
    assert len(decoded) == 2 and decoded[1] == "depth_large_1024" and decoded[0] in folders[:3]
    drawn = decoded[0]
    assert int(item["depth"][0, 0, 0]) == {"depth_large": 10000, "depth_base": 20000, "depth_small": 30000}[drawn]

    read = []
    real = dataset_module.ResizedSampleCache.read
    monkeypatch.setattr(dataset_module.ResizedSampleCache, "read",
                        lambda self, key, names: read.append(names) or real(self, key, names))
    cached = DISDataset(samples, 64, augment=None, cache_dir=tmp_path / "cache", seed=5)
    cached[(2, 1)]  # fills the entry: every map decoded once
    decoded.clear()
    again = cached[(2, 1)]
    assert decoded == [] and set(read[-1]) == {"image", "orig_size", "mask", f"depth_choice{folders.index(drawn)}",
                                               "depth_target"}
    assert torch.equal(again["depth"], item["depth"]) and torch.equal(again["mask"], item["mask"])


def test_the_cache_folder_auto_and_an_unwritable_one(tmp_path):
    from pdfnet.config import DataConfig
    from pdfnet.data.datasets import cache_folder

    assert cache_folder(DataConfig(root=str(tmp_path), cache_dir="")) is None
    assert cache_folder(DataConfig(root=str(tmp_path), cache_dir="auto")) == tmp_path / ".pdfnet_cache"
    assert (tmp_path / ".pdfnet_cache").is_dir()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DatasetError, match=r"data.cache_dir: cannot write the sample cache in .*a_file/cache"):
        cache_folder(DataConfig(root=str(tmp_path), cache_dir=str(blocker / "cache")))
