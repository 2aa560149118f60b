"""ONNX export of PDFNet for deployment: probabilities from ImageNet-normalised images and raw depth maps.

The exported graph takes ``image`` [B,3,H,W] (RGB in [0,1], ImageNet mean/std normalised) and ``depth`` [B,1,H,W]
(any range; min-max normalised per sample inside) and returns ``probs`` [B,1,H,W] in [0,1].

* fixed (default): B = 1 and H = W = the model size; the graph is the network alone.
* ``dynamic=True``: any B, H and W. The graph resizes the inputs to the model size (bilinear, no corner alignment),
  runs the network there and resizes the probabilities back to H x W: the same steps as predict.py. The network itself
  always runs at the model size, which is also how PDFNet is trained and evaluated.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import IMAGENET_MEAN, IMAGENET_STD

OPSET = 18


class ProbabilityGraph(nn.Module):
    """What is exported: ``(image [B,3,H,W], depth [B,1,H,W]) -> probs [B,1,H,W]`` (see the module docstring)."""

    def __init__(self, model: nn.Module, size: int, resize_inputs: bool) -> None:
        super().__init__()
        self.model, self.size, self.resize_inputs = model, size, resize_inputs

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if self.resize_inputs:
            image = F.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False)
            depth = F.interpolate(depth, size=(self.size, self.size), mode="bilinear", align_corners=False)
        probs = self.model(image, depth)[0].sigmoid()
        if self.resize_inputs:
            probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
        return probs


def example_inputs(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random image [B,3,H,W] (ImageNet-normalised range) and depth [B,1,H,W] in [0,1], deterministic."""
    g = torch.Generator().manual_seed(seed)
    image = F.interpolate(torch.rand(batch, 3, 12, 12, generator=g), size=(height, width), mode="bilinear")
    mean, std = IMAGENET_MEAN[None], IMAGENET_STD[None]
    depth = F.interpolate(torch.rand(batch, 1, 6, 6, generator=g), size=(height, width), mode="bilinear")
    return (image - mean) / std, depth


def export_onnx(model: nn.Module, path: str | os.PathLike, size: int, dynamic: bool = False,
                optimize: bool = False) -> None:
    """Write ``model`` (eval mode, on CPU) as ONNX to ``path`` atomically (see the module docstring).
    ``optimize``: also run the exporter's graph optimiser; off by default because onnxruntime optimises the graph
    when it loads it, and on the paper-size model the exporter's pass takes longer than the export itself."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"ONNX export needs the optional extras: pip install -e '.[onnx]' ({err})") from err
    graph = ProbabilityGraph(model.eval(), size, resize_inputs=dynamic).eval()
    # Batch 2 in the example: a batch of 1 would be specialised into the graph.
    inputs = example_inputs(2 if dynamic else 1, size, size)
    dynamic_shapes = None
    if dynamic:
        batch, height, width = (torch.export.Dim(n, min=1, max=4096) for n in ("batch", "height", "width"))
        dynamic_shapes = {"image": {0: batch, 2: height, 3: width}, "depth": {0: batch, 2: height, 3: width}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # image and depth share their height and width dimensions on purpose; the exporter says so once per name
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        program = torch.onnx.export(graph, inputs, dynamo=True, opset_version=OPSET, input_names=["image", "depth"],
                                    output_names=["probs"], dynamic_shapes=dynamic_shapes, verbose=False,
                                    optimize=optimize)
    # One file (weights embedded) when it fits protobuf's 2 GiB limit, as the paper-size model does.
    program.save(str(tmp), external_data=False)
    import onnx

    proto = onnx.load(str(tmp))
    if cast_like_to_cast(proto):
        onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def cast_like_to_cast(proto) -> int:
    """Replace each ``CastLike(x, like)`` whose ``like`` type shape inference knows by ``Cast(x, to=type)``; returns
    how many. The exporter writes CastLike for scalar constants; onnxruntime has no CPU kernel to fold it and prints a
    warning per node whenever a session opens (2 on the tiny test model, 22 on the paper-size one)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    replaced = 0
    for node in proto.graph.node:
        if node.op_type == "CastLike" and node.domain in ("", "ai.onnx") and types.get(node.input[1]):
            to = types[node.input[1]]
            del node.input[1]
            node.op_type = "Cast"
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("to", to))
            replaced += 1
    return replaced


def verify_onnx(model: nn.Module, path: str | os.PathLike, size: int,
                shapes: list[tuple[int, int, int]]) -> list[tuple[tuple[int, int, int], float]]:
    """Run the ONNX file with onnxruntime and the PyTorch model on inputs of each (B, H, W) in ``shapes``;
    returns [(shape, max |probability difference|)]."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: unfoldable-constant notices are not actionable
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if names != ["image", "depth"]:
        raise RuntimeError(f"{path}: inputs are {names}, expected ['image', 'depth']")
    resize = any(not isinstance(d, int) for d in session.get_inputs()[0].shape[2:])  # a --dynamic graph
    graph = ProbabilityGraph(model.eval(), size, resize_inputs=resize).eval()
    results = []
    for seed, (batch, height, width) in enumerate(shapes):
        image, depth = example_inputs(batch, height, width, seed=seed + 1)
        with torch.no_grad():
            expected = graph(image, depth).numpy()
        got = session.run(None, {"image": image.numpy(), "depth": depth.numpy()})[0]
        if got.shape != expected.shape:
            raise RuntimeError(f"{path}: output shape {got.shape} for input {tuple(image.shape)}, expected "
                               f"{expected.shape}")
        results.append(((batch, height, width), float(np.abs(got - expected).max())))
    return results
