"""Robust reading of images, masks and maps, and atomic writing of outputs.

Masks and predicted maps are 8-bit grayscale; colour, alpha, palette and 16-bit files are converted. Files are read
from bytes so that names with '#', spaces or non-ASCII characters work on every platform.

Decoding is bounded: an image's width and height are read from its header first, and an image of more than
:func:`max_pixels` pixels (default 100 million; ``PDFNET_MAX_PIXELS`` or ``--max_pixels``) or more elongated than
1:``MAX_ASPECT`` is refused before a byte of it is decoded: a 100-byte PNG can claim 30000x30000 pixels.
"""

from __future__ import annotations

import errno
import io
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 100_000_000  # a 108 MP phone photo is 12000x9000; 100 MP RGB is 300 MB decoded
MAX_PIXELS_ENV = "PDFNET_MAX_PIXELS"
# Depth Anything resizes the short side to 518 and keeps the aspect: a 1x8000 strip would become 518 x 4.1 million.
MAX_ASPECT = 16


class ImageReadError(OSError):
    """A file that is missing or cannot be decoded; the message names it."""


def max_pixels() -> int:
    """The largest image (width x height) any reader here decodes: ``PDFNET_MAX_PIXELS`` or 100 million. An
    environment variable, so that DataLoader workers started any way see the value the command line set."""
    text = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        value = int(text) if text else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={text[:40]!r} is not a whole number of pixels") from None
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be at least 1, got {value}")
    return value


def set_max_pixels(value: int | None) -> None:
    """Set the decoding limit for this process and the processes it starts (None: leave it as it is)."""
    if value is not None:
        if value < 1:
            raise ValueError(f"--max_pixels must be at least 1, got {value}")
        os.environ[MAX_PIXELS_ENV] = str(int(value))


def header_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header without decoding it; None where Pillow cannot tell (OpenCV's
    own limit of 2^30 pixels then still applies). For a header past Pillow's own bomb limit the width is the pixel
    count and the height 1 (Pillow says no more)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(memoryview(data))) as im:
                return im.size
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        return (int(found.group(1)), 1) if found else None
    except Exception:  # noqa: BLE001 - not a format Pillow reads (or a broken header): OpenCV decides
        return None


def size_problem(width: int, height: int) -> str | None:
    """Why an image of ``width`` x ``height`` is refused, or None."""
    limit = max_pixels()
    if width * height > limit:
        shown = f"{width}x{height}" if height > 1 or width < limit else f"{width:,} pixels"
        return (f"{shown} is over the limit of {limit:,} pixels (raise it with --max_pixels or "
                f"{MAX_PIXELS_ENV} if the image is genuine)")
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        return f"{width}x{height} is more elongated than 1:{MAX_ASPECT}, which no model here can use"
    return None


_ENDINGS = {".png": b"IEND\xaeB`\x82", ".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9"}


def is_truncated(path: str | os.PathLike) -> bool:
    """Whether an image file was cut short (an interrupted download or copy). Decoders fill a truncated JPEG with
    grey and go on, so it is checked here: a PNG or JPEG that ends with its end marker is complete (reading its last
    KiB); any other file is decoded in full, strictly."""
    from PIL import Image

    path = Path(path)
    ending = _ENDINGS.get(path.suffix.lower())
    if ending is not None:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 1024))
            if f.read().rstrip(b"\x00\r\n ").endswith(ending):
                return False
    try:
        with Image.open(path) as im:
            if im.width * im.height > max_pixels():
                return False  # refused for its size, by the reader; not decoded here
            im.load()
    except OSError:
        return True
    return False


def _decode(path: str | os.PathLike, flags: int) -> np.ndarray:
    """Decode a file with OpenCV from its bytes (so any file name works) after checking its size from the header;
    ImageReadError names the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"cannot read {path}: {err.strerror or err}") from err
    if not data.size:
        raise ImageReadError(f"cannot decode {path} as an image: the file is empty")
    size = header_size(data)
    if size is not None and (problem := size_problem(*size)):
        raise ImageReadError(f"{path}: {problem}")
    try:
        img = cv2.imdecode(data, flags)
    except cv2.error as err:  # e.g. a header past OpenCV's own pixel limit
        raise ImageReadError(f"cannot decode {path}: {str(err).strip().splitlines()[-1][:200]}") from err
    except MemoryError:
        raise ImageReadError(f"cannot decode {path}: out of memory") from None
    if img is None:
        raise ImageReadError(f"cannot decode {path} as an image (corrupt, truncated or unsupported format)")
    if size is None and (problem := size_problem(img.shape[1], img.shape[0])):
        raise ImageReadError(f"{path}: {problem}")
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


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file made through a temp file the permissions ``open()`` would have given it (0666 less the umask)."""
    os.chmod(path, 0o666 & ~_UMASK)


_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # what atomic_write's mkstemp names: ".NAME.XXXXXXXX.tmp"
STALE_AFTER_S = 15 * 60


class _Recording:
    """A file wrapper that keeps the first OSError of a write: torch.save reports a full disk as
    "unexpected pos" from its C++ writer, and the cause would be lost."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):
        return getattr(self.f, name)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temp file in the target folder, fsync, then rename over ``path``: readers (and a
    crash at any moment) never see a partial file. A full disk (or any failed write) is an OSError naming ``path``
    and the cause."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    f = None
    try:
        with os.fdopen(fd, "wb") as raw:
            f = _Recording(raw)
            write(f)
            raw.flush()
            os.fsync(raw.fileno())
        usual_permissions(tmp)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        cause = f.error if f is not None and f.error is not None else err
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(cause.errno, f"could not write {path}: {os.strerror(cause.errno)} (nothing was replaced; "
                                       "free some space and run again)") from err
        raise


def remove_stale_temp_files(folder: str | os.PathLike, recursive: bool = False) -> int:
    """Remove what interrupted atomic writes left in ``folder`` (temp files untouched for 15 minutes, so that a write
    in progress elsewhere is never removed); returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed, now = 0, time.time()
    for tmp in (folder.rglob if recursive else folder.glob)(".*.tmp"):
        try:
            if _TEMP_NAME.fullmatch(tmp.name) and now - tmp.stat().st_mtime > STALE_AFTER_S:
                tmp.unlink()
                removed += 1
        except OSError:  # gone already, or not ours to remove
            pass
    return removed


def writable_folder_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written in ``folder``, or None; checked before any work. Nothing is created: a missing
    folder is judged by the nearest folder above it that exists (where it would be made)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{folder} exists and is not a folder" if existing == folder else \
            f"cannot write in {folder}: {existing} is a file"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return f"cannot write in {folder}: {err.strerror or err}"
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


FILE_TYPES = ("png", "jpg", "webp")  # what write_image writes; jpg and webp for 3-channel pictures only
LOSSY_QUALITY = 90


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = LOSSY_QUALITY) -> None:
    """Atomically write ``image`` in the format its suffix names: ``.png`` as :func:`write_png`, ``.jpg``/``.webp``
    (uint8 RGB [H,W,3] only, at ``quality``) for pictures a viewer looks at (a 12 MP overlay is 24 MB as PNG)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        return write_png(path, image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path.name}: only 8-bit RGB pictures are written as {path.suffix}; masks and cut-outs "
                         "with transparency need .png")
    flag = {".jpg": cv2.IMWRITE_JPEG_QUALITY, ".jpeg": cv2.IMWRITE_JPEG_QUALITY, ".webp": cv2.IMWRITE_WEBP_QUALITY}
    ok, buf = cv2.imencode(path.suffix.lower(), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [flag[path.suffix.lower()], int(quality)])
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


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
