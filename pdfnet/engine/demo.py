"""The web demo: a Gradio page over :class:`~pdfnet.engine.predictor.Predictor` (extra ``[demo]``).

Upload an image (and, optionally, its depth map: a cached ``pdfnet depth`` map, say); otherwise Depth Anything makes
the pseudo-depth. PDFNet predicts the mask at the image's own size, and the page shows the mask, the cut-out (RGBA
PNG, downloadable) and the depth map side by side, with the TTA and tiling switches of ``pdfnet predict``.
``pdfnet demo`` (pdfnet/cli/demo.py) loads the models and launches it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..config import Config
from ..data.io import list_images, probs_to_u8, read_depth, read_rgb_u8, size_problem, write_png
from .cutout import cut_out
from .predictor import Predictor

DepthFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
TITLE = "PDFNet: dichotomous image segmentation"
API_NAME = "segment"


def example_images(folder: str | os.PathLike | None, limit: int = 6) -> list[str]:
    """Up to ``limit`` images for the example gallery: ``folder`` itself, or the ``im``/``images`` folders of the
    splits inside it (e.g. ../shared/data/dis5k-samples), sorted by name. Missing folder: none."""
    if not folder or not Path(folder).is_dir():
        return []
    root = Path(folder)
    candidates = [root] + sorted(p / name for p in root.iterdir() if p.is_dir() for name in ("im", "images"))
    found: list[str] = []
    for candidate in candidates:
        if candidate.is_dir():
            found += [str(path) for _, path in sorted(list_images(candidate).items())]
    return found[:limit]


def given_depth(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """An uploaded depth map file (8- or 16-bit, gray or colour; read as training reads it) as float32 [H,W] in
    [0,1] at the image's size [H,W]."""
    import cv2

    depth = read_depth(path)
    if depth.shape != size:
        depth = cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return depth


class Segmenter:
    """image (a file path, as the page passes uploads, or uint8 [H,W,3]) (+ optional depth map file) -> (mask uint8
    [H,W], cut-out uint8 [H,W,4], depth uint8 [H,W], cut-out PNG path).

    ``depth_fn`` maps RGB images to depth maps in [0,1] (a :class:`~pdfnet.depth.DepthEstimator`); it runs only when
    no depth map is given. Without one (``None``, ``--depth_model none``) every image needs its depth map. Files are
    read as ``pdfnet predict`` reads them, with the same limit on pixels checked from the header before decoding.
    The cut-out files live in a temporary folder: the last ``keep`` of them (a visitor's download link stays valid
    for a while), removed when the segmenter goes.
    """

    def __init__(self, model, cfg: Config, depth_fn: DepthFn | None, half: bool | None = None, keep: int = 16) -> None:
        self.model, self.cfg, self.depth_fn, self.half = model, cfg, depth_fn, half
        self.out_dir = Path(tempfile.mkdtemp(prefix="pdfnet-demo-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.out_dir, ignore_errors=True)
        self.recent: deque[Path] = deque()
        self.keep = keep

    def __call__(self, image: str | np.ndarray | None, depth: str | None = None, tta: bool = False,
                 tile: bool = False):
        if image is None:
            raise ValueError("upload an image first")
        name = "cutout.png"
        if isinstance(image, (str, os.PathLike)):
            name = f"{Path(image).stem}_cutout.png"
            image = read_rgb_u8(image)  # its size checked from the header, before decoding
        elif (problem := size_problem(image.shape[1], image.shape[0])) is not None:  # pixels handed in directly
            raise ValueError(problem)
        image = np.ascontiguousarray(image[..., :3] if image.ndim == 3 else np.dstack([image] * 3), dtype=np.uint8)
        if depth is None:
            if self.depth_fn is None:
                raise ValueError("this demo runs without a depth model (--depth_model none): upload the image's depth "
                                 "map too")
            depth = self.depth_fn([image])[0]
        else:
            depth = given_depth(depth, image.shape[:2])
        predictor = Predictor.from_config(self.model, self.cfg, tta=bool(tta), tile=bool(tile), half=self.half,
                                          batch_size=1)
        mask = probs_to_u8(predictor([image], [depth])[0])
        cutout = cut_out(image, mask)  # foreground colours estimated in the soft edge, as `pdfnet predict`
        folder = Path(tempfile.mkdtemp(dir=self.out_dir))  # a name of the visitor's file, not a request count
        write_png(folder / name, cutout)
        self.recent.append(folder)
        while len(self.recent) > self.keep:
            shutil.rmtree(self.recent.popleft(), ignore_errors=True)
        return mask, cutout, probs_to_u8(depth), str(folder / name)

    def close(self) -> None:
        """Remove the temporary folder now."""
        self._finalizer()


def build_demo(segmenter: Segmenter, examples: Sequence[str] = (), description: str = ""):
    """The Gradio Blocks page; its one API endpoint is ``/segment`` (image, depth or None, tta, tile) -> the four
    outputs."""
    import gradio as gr

    # Gradio's own copies of uploads and outputs: removed an hour after they were made, checked every 10 minutes.
    with gr.Blocks(title=TITLE, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"## {TITLE}\n{description}")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    # A file path, not pixels: Gradio would decode any upload before we could check its size.
                    image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], label="image",
                                     elem_id="input-image", scale=2)
                    # a file path, so that 16-bit maps keep their precision (a numpy image would be 8-bit)
                    depth_in = gr.Image(type="filepath", image_mode=None, sources=["upload"], elem_id="input-depth",
                                        label="depth map (optional; else Depth Anything)", scale=1)
                with gr.Row():
                    tta = gr.Checkbox(False, label="TTA (flip x 3 scales)", elem_id="tta")
                    tile = gr.Checkbox(False, label="tiling (large images)", elem_id="tile")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image], label="DIS-5K samples")
            with gr.Column(scale=2):
                with gr.Row():
                    mask = gr.Image(label="mask", format="png", image_mode="L", elem_id="mask",
                                    buttons=["download", "fullscreen"])
                    cutout = gr.Image(label="cut-out (RGBA)", format="png", image_mode="RGBA", elem_id="cutout",
                                      buttons=["download", "fullscreen"])
                    depth = gr.Image(label="pseudo-depth", format="png", image_mode="L", elem_id="depth",
                                     buttons=["download", "fullscreen"])
                download = gr.File(label="cut-out PNG", elem_id="cutout-file")
        run.click(segmenter, inputs=[image, depth_in, tta, tile], outputs=[mask, cutout, depth, download],
                  api_name=API_NAME)
    return demo
