"""The physical floor of the three reference models, and the adapter's own overhead.

For 1000 inputs: one batched forward pass and one forward+backward pass (gradient w.r.t. the
input) of the raw network, next to the same through ``trustmap.load_model(...)`` (layout
conversion, validation, batching). Torch and Keras (torch backend) versions.
"""

from __future__ import annotations

import numpy as np
import torch

from harness import floor_backward, floor_forward, timeit

import trustmap
from trustmap import zoo

CASES = [  # name, torch builder kwargs, keras builder, input shape (C, *spatial)
    ("MNIST-1D CNN", "mnist1d_cnn", {}, "keras_mnist1d_cnn", (1, 40)),
    ("12-lead FCN", "ecg_fcn", {"in_channels": 12, "length": 250, "n_classes": 1}, "keras_ecg_fcn", (12, 250)),
    ("MNIST 2D CNN", "mnist2d_cnn", {}, "keras_mnist2d_cnn", (1, 28, 28)),
]


def run(quick: bool = False) -> str:
    n = 200 if quick else 1000
    reps = 2 if quick else 5
    rows = ["## Floor: forward and forward+backward of the reference models\n",
            f"{n} inputs, batch {n}; minimum of {reps} runs.\n",
            "| model | framework | raw forward (s) | trustmap `logits` (s) | overhead | fwd+bwd floor (s) |",
            "|---|---|---|---|---|---|"]
    for title, arch, kw, keras_builder, shape in CASES:
        torch.manual_seed(0)
        x = np.random.default_rng(0).normal(size=(n, *shape)).astype("float32")
        module = zoo.build(arch, **kw).eval()
        xt = torch.from_numpy(x)

        def raw():
            with torch.inference_mode():
                module(xt)

        m = trustmap.load_model(module)
        t_raw = timeit(raw, reps)
        t_ours = timeit(lambda: m.logits(x, batch_size=n), reps)
        t_fb = timeit(floor_backward(m, m.to_internal(x)[0], batch=n), reps)
        rows.append(f"| {title} | torch | {t_raw:.4f} | {t_ours:.4f} | {t_ours / t_raw:.2f}x | {t_fb:.4f} |")
        km = trustmap.load_model(getattr(zoo, keras_builder)(**({"in_channels": 12, "length": 250} if arch == "ecg_fcn" else {})))
        xk = np.moveaxis(x, 1, -1)
        xi = km.to_internal(xk)[0]
        t_kfloor = timeit(floor_forward(km, xi, batch=n), reps)
        t_kours = timeit(lambda: km.logits(xk, batch_size=n), reps)
        t_kfb = timeit(floor_backward(km, xi, batch=n), reps)
        rows.append(f"| {title} | keras (torch backend) | {t_kfloor:.4f} | {t_kours:.4f} | "
                    f"{t_kours / t_kfloor:.2f}x | {t_kfb:.4f} |")
    rows.append("\nThe Keras 'raw forward' is the clone's forward in the internal layout (the floor every "
                "Keras method pays); `logits` adds validation and layout conversion.")
    return "\n".join(rows) + "\n"
