"""Robust reading of images, masks and maps, and atomic writing of outputs.

Masks and predicted maps are 8-bit grayscale; colour, alpha, palette and 16-bit files are converted. Files are read
from bytes so that names with '#', spaces or non-ASCII characters work on every platform.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """A file that is missing or cannot be decoded; the message names it."""


def _decode(path: str | os.PathLike, flags: int) -> np.ndarray:
    """Decode a file with OpenCV from its bytes (so any file name works); ImageReadError names the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"cannot read {path}: {err.strerror or err}") from err
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise ImageReadError(f"cannot decode {path} as an image (corrupt, empty or unsupported format)")
    return img


def read_gray_u8(path: str | os.PathLike) -> np.ndarray:
    """Read a map as uint8 [H,W]. Colour -> luminance (OpenCV), alpha dropped, 16-bit scaled to 8-bit (>> 8)."""
    img = _decode(path, cv2.IMREAD_UNCHANGED)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {img.dtype}")
    return img


def probs_to_u8(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0,1] -> the uint8 map a saved PNG holds (round half to even, clipped)."""
    return np.clip(np.rint(np.asarray(probs, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it, which is not thread-safe


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temp file in the target folder, fsync, then rename over ``path``: readers (and a
    crash at any moment) never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Atomically write a uint8 [H,W] or [H,W,C] (RGB/RGBA order) array, or a uint16 [H,W] map (16-bit depth), as
    PNG."""
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, buf.tobytes())


def read_rgb_u8(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 RGB [H,W,3] (EXIF orientation applied; gray and alpha converted)."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """Read a pseudo-depth map (8- or 16-bit, gray or colour) as float32 [H,W] in [0,1]."""
    img = _decode(path, cv2.IMREAD_UNCHANGED)
    if img.ndim == 3:
        img = img[:, :, 0]
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype)
    if scale is None:
        raise ImageReadError(f"{path}: unsupported depth pixel type {img.dtype} (expected 8- or 16-bit)")
    return img.astype(np.float32) / scale


def list_images(folder: str | os.PathLike) -> dict[str, Path]:
    """{file stem: path} of the images in ``folder`` (names may contain '#', spaces). Two files with one stem
    (``a.png`` and ``a.jpg``) are an error, since matching is by stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("."):
            continue
        if path.stem in found:
            raise ValueError(f"two files named {path.stem!r} in {folder}: {found[path.stem].name} and {path.name}")
        found[path.stem] = path
    return found
