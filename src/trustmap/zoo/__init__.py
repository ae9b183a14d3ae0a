"""The seeds' reference CNNs (PyTorch and Keras 3), a small trainer, and safetensors save/load.

>>> from trustmap import zoo
>>> model = zoo.mnist1d_cnn()                      # 13,960 parameters
>>> history = zoo.Trainer(**zoo.RECIPES["mnist1d_cnn"]).fit(model, X, y)   # doctest: +SKIP
>>> zoo.save(model, "mnist1d.safetensors", history=history)                # doctest: +SKIP
>>> trustmap.load_model("mnist1d.safetensors")                             # doctest: +SKIP
"""

from .io import load, read_info, save
from .models import (
    ARCHITECTURES,
    SameConv1d,
    ZooModel,
    build,
    ecg_fcn,
    keras_ecg_fcn,
    keras_mnist1d_cnn,
    keras_mnist2d_cnn,
    mnist1d_cnn,
    mnist2d_cnn,
    n_parameters,
)
from .train import RECIPES, History, Trainer

__all__ = [
    "ARCHITECTURES",
    "build",
    "ZooModel",
    "SameConv1d",
    "mnist1d_cnn",
    "ecg_fcn",
    "mnist2d_cnn",
    "keras_mnist1d_cnn",
    "keras_ecg_fcn",
    "keras_mnist2d_cnn",
    "n_parameters",
    "Trainer",
    "History",
    "RECIPES",
    "save",
    "load",
    "read_info",
]
