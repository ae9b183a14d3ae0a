"""Adapter for ONNX files through onnxruntime: forward only (black-box methods)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DependencyError, ModelLoadError, UnsupportedError
from .base import LayerInfo, Model

__all__ = ["OnnxModel", "BLACK_BOX_METHODS", "black_box_methods"]

def black_box_methods() -> tuple[str, ...]:
    """The forward-only explainers (derived from their classes; imported lazily: explain imports models).

    Returns
    -------
    tuple of str
        The method names that need no gradients: the ones an :class:`OnnxModel` can run.

    Examples
    --------
    >>> from trustmap.models import black_box_methods
    >>> "occlusion" in black_box_methods(), "gradcam" in black_box_methods()
    (True, False)
    """
    from ..explain.registry import methods_where

    return tuple(methods_where(needs_gradients=False))


def __getattr__(name):  # BLACK_BOX_METHODS, derived on use
    if name == "BLACK_BOX_METHODS":
        return black_box_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OnnxModel(Model):
    """An ONNX classifier run by onnxruntime on the CPU.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file.
    channels_last : bool
        Whether the graph's input is ``(N, *spatial, C)`` (e.g. exported from Keras) rather
        than ``(N, C, *spatial)`` (exported from PyTorch, the default). A 2-axis input
        ``(N, L)`` is a single-channel 1D model either way.
    output : 'auto' | 'logits' | 'probs' | 'sigmoid'
        What the graph returns; 'auto' looks at the first outputs it sees.
    max_batch : int, optional
        At most this many samples per run (default: sized by a memory budget).
    name : str, optional
        A name for messages (default: the file's stem).

    Raises
    ------
    DependencyError
        onnxruntime is not installed.
    ModelLoadError
        A missing or unreadable file, an input that is not 1D or 2D, or no fixed channel count.
    InputError
        An unknown ``output``.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch
    >>> from trustmap.models import OnnxModel
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> path = os.path.join(tempfile.mkdtemp(), "net.onnx")
    >>> torch.onnx.export(net, torch.zeros(1, 1, 32), path, input_names=["x"], dynamic_axes={"x": {0: "n"}},
    ...                   dynamo=False)
    >>> m = OnnxModel(path, output="logits")
    >>> m.differentiable, m.predict(np.zeros((2, 32), np.float32)).shape
    (False, (2,))
    """

    framework = "onnx"
    differentiable = False

    def __init__(self, path, *, channels_last: bool = False, output: str = "auto", max_batch: int | None = None,
                 name: str | None = None, **kw) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DependencyError("onnxruntime is not installed", parameter="model", expected="onnxruntime",
                                  got="no module named onnxruntime", fix="pip install 'trustmap[onnx]'") from exc
        path = Path(path)
        if not path.exists():
            raise ModelLoadError("model file not found", parameter="path", got=str(path), fix="check the path")
        try:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime could not load the file ({type(exc).__name__})", parameter="path",
                                 expected="a valid .onnx file", got=str(path),
                                 fix="check the file is complete; re-export it") from exc
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        if len(dims) == 2:
            rank, channels, spatial, self._native = 1, 1, dims[1:], "squeeze"
        elif len(dims) in (3, 4):
            self._native = "last" if channels_last else "first"
            c = dims[-1] if channels_last else dims[1]
            if c is None:
                raise ModelLoadError("the ONNX input has no fixed channel count", parameter="channels_last",
                                     expected="a fixed channel axis", got=inp.shape,
                                     fix="pass channels_last=True if the graph takes (N, *spatial, C)")
            rank, channels = len(dims) - 2, int(c)
            spatial = dims[1:-1] if channels_last else dims[2:]
        else:
            raise ModelLoadError("only 1D and 2D inputs are supported", parameter="path",
                                 expected="input of 2, 3 or 4 axes", got=inp.shape, fix="export a 1D or 2D model")
        # a graph exported with a fixed batch size (torch.onnx.export's default: 1) runs in blocks of that size,
        # the last block padded by repeating its last row
        self._fixed_batch = int(inp.shape[0]) if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self._np_dtype = np.float64 if "double" in inp.type else np.float32
        self.path = path
        super().__init__(rank=rank, channels=channels, spatial=spatial, output=output, max_batch=max_batch,
                         name=name or path.stem, **kw)

    def _raw(self, t: torch.Tensor) -> torch.Tensor:
        x = t.detach().cpu().numpy().astype(self._np_dtype, copy=False)
        if self._native == "squeeze":
            x = x[:, 0]
        elif self._native == "last":
            x = np.moveaxis(x, 1, -1)
        b = self._fixed_batch
        if b is None or len(x) == b:
            out = self.session.run(None, {self._input_name: np.ascontiguousarray(x)})[0]
            return torch.from_numpy(np.asarray(out, dtype=np.float32))
        outs = []
        for i in range(0, len(x), b):
            block = x[i:i + b]
            n = len(block)
            if n < b:
                block = np.concatenate([block, np.repeat(block[-1:], b - n, axis=0)])
            outs.append(np.asarray(self.session.run(None, {self._input_name: np.ascontiguousarray(block)})[0])[:n])
        return torch.from_numpy(np.concatenate(outs).astype(np.float32, copy=False))

    def logits_t(self, t: torch.Tensor) -> torch.Tensor:
        if t.requires_grad:
            raise UnsupportedError("ONNX models give no gradients", parameter="method",
                                   expected="a forward-only method: " + ", ".join(black_box_methods()),
                                   got="a gradient method",
                                   fix="use one of those methods, or load the PyTorch/Keras model instead")
        return super().logits_t(t)

    def layers(self) -> list[LayerInfo]:
        return [LayerInfo(o.name, "output", tuple(o.shape[1:])) for o in self.session.get_outputs()]

    def default_layer(self) -> str:
        raise UnsupportedError("ONNX models expose no layers to trustmap", parameter="layer",
                               expected="a forward-only method: " + ", ".join(black_box_methods()),
                               got="a layer-based method", fix="load the PyTorch/Keras model for CAM methods")

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
