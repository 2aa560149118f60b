"""Synthetic DIS-like scenes: thin, intricate foregrounds over clutter, with depth that follows the integrity prior.

Each scene has a foreground made of wires, meshes, rings, branching trees and holed blobs, drawn in colours that also
appear in the background clutter (including look-alike distractor wires), so RGB alone is ambiguous. Its depth is
what the PDFNet prior assumes: the foreground is one smooth, near surface (low variance); the background is far and
chaotic (random patches with discontinuities and noise). A model can therefore learn from depth what RGB makes hard.

Scenes are deterministic per (seed, index) and cheap (hundreds of 256² scenes per second on one core).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from .io import atomic_write_bytes, write_png


@dataclasses.dataclass
class Scene:
    image: np.ndarray  # uint8 RGB [S,S,3]
    mask: np.ndarray   # uint8 [S,S] in {0, 255}
    depth: np.ndarray  # uint16 [S,S], larger = nearer (Depth Anything's convention)


def _point(rng: np.random.Generator, size: int, margin: float = 0.05) -> tuple[int, int]:
    lo, hi = int(margin * size), int((1 - margin) * size)
    return int(rng.integers(lo, hi)), int(rng.integers(lo, hi))


def _draw_wires(canvas: np.ndarray, rng: np.random.Generator, colour: int = 255) -> None:
    size = canvas.shape[0]
    for _ in range(int(rng.integers(2, 6))):
        pts = np.array([_point(rng, size) for _ in range(int(rng.integers(2, 5)))], np.int32)
        cv2.polylines(canvas, [pts], False, colour, int(rng.integers(1, 3)), cv2.LINE_8)


def _draw_mesh(canvas: np.ndarray, rng: np.random.Generator) -> None:
    size = canvas.shape[0]
    cx, cy = _point(rng, size, 0.3)
    half = int(rng.integers(size // 8, size // 3))
    step = int(rng.integers(max(4, size // 40), max(6, size // 12)))
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    width = int(rng.integers(1, 3))
    for offset in range(-half, half + 1, step):
        for a, b in (((offset, -half), (offset, half)), ((-half, offset), (half, offset))):
            p = (rot @ np.array(a) + (cx, cy)).astype(int)
            q = (rot @ np.array(b) + (cx, cy)).astype(int)
            cv2.line(canvas, tuple(int(v) for v in p), tuple(int(v) for v in q), 255, width)


def _draw_rings(canvas: np.ndarray, rng: np.random.Generator) -> None:
    size = canvas.shape[0]
    for _ in range(int(rng.integers(1, 4))):
        centre = _point(rng, size, 0.2)
        radius = int(rng.integers(size // 16, size // 4))
        cv2.circle(canvas, centre, radius, 255, int(rng.integers(1, 4)))


def _draw_tree(canvas: np.ndarray, rng: np.random.Generator, start: tuple[float, float], angle: float,
               length: float, depth: int) -> None:
    if depth == 0 or length < 3:
        return
    end = (start[0] + length * np.cos(angle), start[1] + length * np.sin(angle))
    cv2.line(canvas, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), 255, max(1, depth // 2))
    for turn in (-1, 1):
        _draw_tree(canvas, rng, end, angle + turn * rng.uniform(0.3, 0.8), length * rng.uniform(0.55, 0.8),
                   depth - 1)


def _draw_holed_blob(canvas: np.ndarray, rng: np.random.Generator) -> None:
    size = canvas.shape[0]
    centre = _point(rng, size, 0.25)
    axes = (int(rng.integers(size // 12, size // 5)), int(rng.integers(size // 12, size // 5)))
    cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    for _ in range(int(rng.integers(2, 7))):  # holes
        hole = (centre[0] + int(rng.integers(-axes[0] // 2, axes[0] // 2 + 1)),
                centre[1] + int(rng.integers(-axes[1] // 2, axes[1] // 2 + 1)))
        cv2.circle(canvas, hole, int(rng.integers(2, max(3, min(axes) // 3))), 0, -1)


def _foreground(size: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    def tree(m: np.ndarray, r: np.random.Generator) -> None:
        root = (size * r.uniform(0.3, 0.7), size * 0.95)
        _draw_tree(m, r, root, -np.pi / 2 + r.uniform(-0.3, 0.3), size * r.uniform(0.2, 0.35), int(r.integers(5, 8)))

    painters = [_draw_wires, _draw_mesh, _draw_rings, _draw_holed_blob, tree]
    for index in rng.choice(len(painters), size=int(rng.integers(2, 4)), replace=False):
        painters[index](mask, rng)
    return mask


def _smooth_noise(size: int, rng: np.random.Generator, cells: int, channels: int = 1) -> np.ndarray:
    coarse = rng.random((cells, cells, channels)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)


def make_scene(size: int, rng: np.random.Generator) -> Scene:
    """One synthetic DIS-like scene of ``size`` x ``size`` pixels."""
    mask = _foreground(size, rng)
    fg = mask > 0
    palette = rng.integers(0, 256, size=(4, 3))
    fg_colour = palette[0]

    # Background: smooth colour field, clutter shapes, and distractor wires in the foreground's colour.
    image = (_smooth_noise(size, rng, 6, 3) * 180 + 40).astype(np.float32)
    clutter = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(6, 14))):
        colour = palette[int(rng.integers(1, 4))].tolist()
        p, q = _point(rng, size, 0.0), _point(rng, size, 0.0)
        if rng.random() < 0.5:
            cv2.rectangle(image, p, q, colour, -1)
        else:
            cv2.ellipse(image, p, (int(rng.integers(3, size // 6)), int(rng.integers(3, size // 6))),
                        float(rng.uniform(0, 180)), 0, 360, colour, -1)
    _draw_wires(clutter, rng)
    distractor = (clutter > 0) & ~fg
    image[distractor] = fg_colour * 0.9 + 10
    shade = 0.75 + 0.5 * _smooth_noise(size, rng, 4)[..., 0]
    image[fg] = (fg_colour[None, :] * shade[fg][:, None]).clip(0, 255)
    image += rng.normal(0, 6, image.shape).astype(np.float32)

    # Depth: near smooth plane on the object; far, discontinuous, noisy patches behind it.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    plane = 0.15 + 0.08 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy)
    patches = _smooth_noise(size, rng, int(rng.integers(6, 12)))[..., 0]
    steps = np.floor(patches * int(rng.integers(3, 7))) / 6.0  # piecewise-constant: discontinuities
    background = 0.55 + 0.4 * steps + rng.normal(0, 0.03, (size, size)).astype(np.float32)
    distance = np.where(fg, plane, background).clip(0, 1)
    # Stored like Depth Anything's relative depth: larger = nearer.
    return Scene(image=image.clip(0, 255).astype(np.uint8), mask=mask,
                 depth=((1 - distance) * 65535).round().astype(np.uint16))


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """Independent, reproducible stream per (seed, index): a sample never depends on how many came before."""
    return np.random.default_rng([seed, index])


def write_split(out: str | Path, split: str, count: int, size: int, seed: int, first_index: int = 0) -> None:
    """Write ``count`` scenes as ``<out>/<split>/{im/*.jpg, gt/*.png, depth/*.png}`` (DIS-5K layout), atomically."""
    base = Path(out) / split
    for i in range(count):
        index = first_index + i
        scene = make_scene(size, scene_rng(seed, index))
        name = f"synthetic#{index:05d}"
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise OSError(f"could not encode {name}.jpg")
        atomic_write_bytes(base / "im" / f"{name}.jpg", jpg.tobytes())
        write_png(base / "gt" / f"{name}.png", scene.mask)
        write_png(base / "depth" / f"{name}.png", scene.depth)


def ensure_synthetic_dataset(root: str | Path, n_train: int, n_val: int, size: int, seed: int = 0) -> None:
    """DIS-TR (``n_train`` scenes) and DIS-VD (``n_val`` scenes, distinct indices) under ``root``; a split that
    already holds the requested number of scenes is kept, any other is rewritten."""
    import shutil

    root = Path(root)
    for split, count, first in (("DIS-TR", n_train, 0), ("DIS-VD", n_val, 100_000)):
        masks = root / split / "gt"
        if masks.is_dir() and len(list(masks.glob("*.png"))) == count:
            continue
        shutil.rmtree(root / split, ignore_errors=True)
        write_split(root, split, count, size, seed=seed, first_index=first)


def hair_composite(size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A soft-edged photo with known parts, for judging cut-outs: (image, alpha, foreground, background), float32
    in [0,1]. A solid warm region on the left with 40 hair-like strands leaving it and thinning out, over a cool
    background, composited as a camera would: image = alpha·foreground + (1 − alpha)·background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    fg = np.stack([0.9 + 0 * xx, 0.55 + 0.25 * yy, 0.2 + 0.1 * xx], -1).astype(np.float32)
    bg = np.stack([0.1 + 0.2 * xx, 0.3 + 0 * yy, 0.9 - 0.3 * yy], -1).astype(np.float32)
    alpha = np.zeros((size, size), np.float32)
    edge = int(size * 0.4)
    alpha[:, :edge] = 1
    cols = np.arange(size)
    fade = np.clip(1 - (cols - edge) / (0.45 * size), 0, 1) * (cols >= edge)
    for k in range(40):
        x0, slope = edge + rng.uniform(-10, 10) + 2 * k * size / 256, rng.uniform(-0.3, 0.3)
        x = x0 + slope * np.arange(size)[:, None] + rng.normal(0, 0.3, (size, 1))
        alpha = np.maximum(alpha, 0.9 * np.exp(-((cols[None] - x) ** 2) / 2) * fade[None])
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return image.astype(np.float32), alpha.astype(np.float32), fg, bg
