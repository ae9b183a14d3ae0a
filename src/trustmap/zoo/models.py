"""The seeds' reference CNNs, in PyTorch (``nn.Sequential``, input ``(N, C, *spatial)``) and Keras 3.

Every torch model carries ``input_shape`` ``(C, *spatial)``, ``arch`` (its name in
:data:`ARCHITECTURES`) and ``config`` (the constructor keyword arguments, JSON-ready), so
:func:`trustmap.zoo.save` can write it and :func:`trustmap.zoo.load` can rebuild it.

========================  ==============================================================  ===============
name                      network                                                         from
========================  ==============================================================  ===============
``mnist1d_cnn``           3 x Conv1d(25) + ReLU, Flatten, Linear (13,960 parameters)      MNIST-1D report
``ecg_fcn``               Conv1d 128/256/128 (k 8/5/3, 'same') + BN + ReLU, GAP, Linear   Wang et al. FCN
``mnist2d_cnn``           Conv2d 32, 64 (k 3) + ReLU, MaxPool, Dropout, Dense 128, Dense  Keras MNIST
========================  ==============================================================  ===============

The models return logits (no final softmax/sigmoid) unless ``final_activation`` is asked for.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError

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
]

FINAL_ACTIVATIONS = (None, "sigmoid", "softmax")


class ZooModel(nn.Sequential):
    """An ``nn.Sequential`` that remembers how it was built.

    Attributes
    ----------
    arch : str
        Its name in :data:`ARCHITECTURES`.
    config : dict
        The keyword arguments that rebuild it: ``build(arch, **config)``.
    input_shape : tuple
        ``(C, *spatial)`` of one input sample.
    classes : list | None
        Class names, when known (set by :func:`trustmap.zoo.load` from the saved JSON).

    Parameters
    ----------
    layers : OrderedDict of str to nn.Module
        The layers, by name.
    arch : str
        The architecture's name in :data:`ARCHITECTURES`.
    config : dict
        The keyword arguments that rebuild it.
    input_shape : sequence of int
        ``(C, *spatial)`` of one input sample.

    Examples
    --------
    >>> from trustmap import zoo
    >>> net = zoo.build("mnist1d_cnn", n_classes=4)
    >>> net.arch, net.config["n_classes"], net.input_shape
    ('mnist1d_cnn', 4, (1, 40))
    >>> type(net[:2]).__name__                      # a slice is a plain Sequential sharing the layers
    'Sequential'
    """

    def __init__(self, layers: "OrderedDict[str, nn.Module]", *, arch: str, config: dict[str, Any],
                 input_shape: Sequence[int]) -> None:
        super().__init__(layers)
        self.arch = arch
        self.config = dict(config)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.classes: list | None = None

    def __getitem__(self, idx):
        if isinstance(idx, slice):  # a part of the network is a plain Sequential (sharing the layers)
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, input_shape={self.input_shape}"


class SameConv1d(nn.Conv1d):
    """``Conv1d`` with Keras' 'same' padding (left ``(k-1)//2``, right the rest), also for even kernels.

    Same parameters and state-dict keys as ``nn.Conv1d``; torch's own ``padding='same'`` warns
    on every call for even kernels, this pads explicitly instead.

    Parameters
    ----------
    in_channels, out_channels : int
        Input and output channels.
    kernel_size : int
        Kernel length (odd or even); the output has the input's length.

    Examples
    --------
    >>> import torch
    >>> from trustmap.zoo import SameConv1d
    >>> conv = SameConv1d(2, 3, 4)
    >>> conv.same_padding, tuple(conv(torch.zeros(1, 2, 10)).shape)
    ((1, 2), (1, 3, 10))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=0)
        total = self.dilation[0] * (self.kernel_size[0] - 1)
        self.same_padding = (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.same_padding))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", padding='same' {self.same_padding}"


def n_parameters(module: nn.Module) -> int:
    """Number of trainable parameters.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    int

    Examples
    --------
    >>> import torch
    >>> from trustmap.zoo import n_parameters
    >>> n_parameters(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---- argument checks --------------------------------------------------------------------
def _positive_int(value: Any, parameter: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not (hasattr(value, "__index__")):
        raise InputError("must be an integer", parameter=parameter, expected=f"an int >= {minimum}",
                         got=repr(value), fix=f"pass {parameter}={max(minimum, 1)} or larger")
    value = int(value)
    if value < minimum:
        raise InputError("too small", parameter=parameter, expected=f"an int >= {minimum}", got=value,
                         fix=f"pass {parameter}={minimum} or larger")
    return value


def _final(final_activation: str | None, n_classes: int) -> tuple[str, nn.Module] | None:
    if final_activation not in FINAL_ACTIVATIONS:
        raise InputError("unknown final activation", parameter="final_activation",
                         expected="None, 'sigmoid' or 'softmax'", got=final_activation,
                         fix="leave final_activation=None to get logits (what trustmap prefers)")
    if final_activation is None:
        return None
    if final_activation == "softmax":
        if n_classes < 2:
            raise InputError("softmax needs at least two outputs", parameter="final_activation",
                             expected="'sigmoid' (or None) for n_classes=1", got="softmax",
                             fix="use final_activation='sigmoid' with one output unit")
        return "softmax", nn.Softmax(dim=1)
    return "sigmoid", nn.Sigmoid()


# ---- torch models ---------------------------------------------------------------------
def mnist1d_cnn(n_classes: int = 10, length: int = 40, channels: int = 25) -> ZooModel:
    """The MNIST-1D CNN of the seed report: 3 x Conv1d(``channels``) + ReLU, Flatten, Linear.

    Input ``(N, 1, length)``; output logits ``(N, n_classes)``. With the defaults it has
    exactly 13,960 parameters (150 + 1,900 + 1,900 + 10,010).

    Parameters
    ----------
    n_classes : int, default 10
    length : int, default 40
        Input length (the Linear layer's width depends on it).
    channels : int, default 25
        Filters of each convolution.

    Returns
    -------
    ZooModel
        A ``torch.nn.Module`` that :func:`save` can write.

    Raises
    ------
    InputError
        A size that is not a positive int (or a ``length`` too short for the convolutions).

    Examples
    --------
    >>> import torch
    >>> from trustmap import zoo
    >>> net = zoo.mnist1d_cnn()
    >>> zoo.n_parameters(net), net(torch.zeros(2, 1, 40)).shape
    (13960, torch.Size([2, 10]))
    """
    n_classes = _positive_int(n_classes, "n_classes")
    length = _positive_int(length, "length")
    channels = _positive_int(channels, "channels")
    layers = OrderedDict([
        ("conv1", nn.Conv1d(1, channels, 5, padding=2)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv1d(channels, channels, 3, padding=1)),
        ("relu2", nn.ReLU()),
        ("conv3", nn.Conv1d(channels, channels, 3, padding=1)),
        ("relu3", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(channels * length, n_classes)),
    ])
    return ZooModel(layers, arch="mnist1d_cnn",
                    config={"n_classes": n_classes, "length": length, "channels": channels},
                    input_shape=(1, length))


def ecg_fcn(in_channels: int = 12, length: int = 250, n_classes: int = 1,
            final_activation: str | None = None) -> ZooModel:
    """The fully convolutional network of Wang et al. (2017) for multi-channel signals.

    Conv1d 128 (k 8) / 256 (k 5) / 128 (k 3), 'same' padding, each followed by BatchNorm1d and
    ReLU; global average pooling; Linear(128, ``n_classes``). ``n_classes=1`` is one
    logit unit (binary, trained with BCE-with-logits). Input ``(N, in_channels, length)``;
    the network itself accepts any length, ``length`` is what ``input_shape`` declares.
    Outputs logits unless ``final_activation`` is 'sigmoid' or 'softmax'.

    Parameters
    ----------
    in_channels : int, default 12
    length : int, default 250
        The length ``input_shape`` declares.
    n_classes : int, default 1
    final_activation : {None, 'sigmoid', 'softmax'}, optional

    Returns
    -------
    ZooModel

    Raises
    ------
    InputError
        A size that is not a positive int, or an unknown ``final_activation``.

    Examples
    --------
    >>> import torch
    >>> from trustmap import zoo
    >>> zoo.ecg_fcn(in_channels=2, length=50, n_classes=3)(torch.zeros(1, 2, 50)).shape
    torch.Size([1, 3])
    """
    in_channels = _positive_int(in_channels, "in_channels")
    length = _positive_int(length, "length")
    n_classes = _positive_int(n_classes, "n_classes")
    final = _final(final_activation, n_classes)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    widths, kernels, c_in = (128, 256, 128), (8, 5, 3), in_channels
    for i, (c_out, k) in enumerate(zip(widths, kernels), start=1):
        layers[f"conv{i}"] = SameConv1d(c_in, c_out, k)
        layers[f"bn{i}"] = nn.BatchNorm1d(c_out)
        layers[f"relu{i}"] = nn.ReLU()
        c_in = c_out
    layers["gap"] = nn.AdaptiveAvgPool1d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c_in, n_classes)
    if final is not None:
        layers[final[0]] = final[1]
    return ZooModel(layers, arch="ecg_fcn",
                    config={"in_channels": in_channels, "length": length, "n_classes": n_classes,
                            "final_activation": final_activation},
                    input_shape=(in_channels, length))


def _size2d(size: Any) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise InputError("size must be (height, width)", parameter="size", expected="two ints, e.g. (28, 28)",
                         got=repr(size), fix="pass size=(28, 28) or size=(8, 8)") from None
    if min(h, w) < 6:
        raise InputError("image too small for two 3x3 convolutions and a 2x2 pool", parameter="size",
                         expected="height and width >= 6", got=(h, w), fix="pass images of at least 6x6")
    return h, w


def mnist2d_cnn(in_channels: int = 1, size: Sequence[int] | int = (28, 28), n_classes: int = 10) -> ZooModel:
    """The Keras MNIST example CNN: Conv2d(32, 3)-ReLU-Conv2d(64, 3)-ReLU-MaxPool2d(2)-Dropout(0.25)-
    Flatten-Linear(., 128)-ReLU-Dropout(0.5)-Linear(128, ``n_classes``).

    Input ``(N, in_channels, H, W)`` with ``size=(H, W)`` (28 x 28 MNIST, 8 x 8 scikit-learn
    digits, anything >= 6 x 6); output logits.

    Parameters
    ----------
    in_channels : int, default 1
    size : int or (int, int), default (28, 28)
    n_classes : int, default 10

    Returns
    -------
    ZooModel

    Raises
    ------
    InputError
        A size that is not a positive int, or an image smaller than 6 x 6.

    Examples
    --------
    >>> import torch
    >>> from trustmap import zoo
    >>> zoo.mnist2d_cnn(size=8, n_classes=3)(torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 3])
    """
    in_channels = _positive_int(in_channels, "in_channels")
    n_classes = _positive_int(n_classes, "n_classes")
    h, w = _size2d(size)
    flat = 64 * ((h - 4) // 2) * ((w - 4) // 2)
    layers = OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 32, 3)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 64, 3)),
        ("relu2", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)),
        ("dropout1", nn.Dropout(0.25)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(flat, 128)),
        ("relu3", nn.ReLU()),
        ("dropout2", nn.Dropout(0.5)),
        ("fc2", nn.Linear(128, n_classes)),
    ])
    return ZooModel(layers, arch="mnist2d_cnn",
                    config={"in_channels": in_channels, "size": [h, w], "n_classes": n_classes},
                    input_shape=(in_channels, h, w))


#: name -> builder; ``build(name, **config)`` rebuilds a saved model.
ARCHITECTURES: dict[str, Callable[..., ZooModel]] = {
    "mnist1d_cnn": mnist1d_cnn,
    "ecg_fcn": ecg_fcn,
    "mnist2d_cnn": mnist2d_cnn,
}


def build(name: str, **kwargs: Any) -> ZooModel:
    """Build the architecture registered as ``name`` with ``kwargs`` (see :data:`ARCHITECTURES`).

    Parameters
    ----------
    name : str
        A key of :data:`ARCHITECTURES` (``'mnist1d_cnn'``, ``'ecg_fcn'``, ``'mnist2d_cnn'``, ...).
    **kwargs
        The builder's arguments (input channels and length, number of classes, ...).

    Returns
    -------
    ZooModel
        An untrained ``nn.Module`` carrying ``arch``, ``config`` and ``input_shape``.

    Raises
    ------
    InputError
        An unknown ``name`` or argument.

    Examples
    --------
    >>> from trustmap import zoo
    >>> net = zoo.build("mnist1d_cnn")
    >>> zoo.n_parameters(net)
    13960
    """
    if name not in ARCHITECTURES:
        raise InputError("unknown architecture", parameter="name", expected="one of " + ", ".join(ARCHITECTURES),
                         got=name, fix="pick a name from trustmap.zoo.ARCHITECTURES")
    try:
        return ARCHITECTURES[name](**kwargs)
    except TypeError as exc:  # unknown keyword
        raise InputError(f"bad arguments for {name} ({exc})", parameter="kwargs",
                         expected=f"keyword arguments of trustmap.zoo.{ARCHITECTURES[name].__name__}",
                         got=sorted(kwargs), fix="check the argument names") from None


# ---- Keras 3 builders (channels-last, activations fused, probabilities out) -----------------------
def _keras():
    from ..models import import_keras

    return import_keras()


def keras_mnist1d_cnn(n_classes: int = 10, length: int = 40, channels: int = 25):
    """Keras twin of :func:`mnist1d_cnn`: input ``(N, length, 1)``, softmax output (13,960 parameters).

    Parameters
    ----------
    n_classes : int
        Output units.
    length : int
        Signal length.
    channels : int
        Filters of each of the three convolutions.

    Returns
    -------
    keras.Model
        A Functional model named ``mnist1d_cnn`` (layers ``conv1``-``conv3``, ``flatten``, ``fc``).

    Raises
    ------
    InputError
        An argument that is not a positive integer.
    BackendError
        keras was imported with a backend other than torch.
    DependencyError
        keras is not installed.

    Examples
    --------
    >>> from trustmap import zoo
    >>> k = zoo.keras_mnist1d_cnn()
    >>> k.input_shape, k.count_params()
    ((None, 40, 1), 13960)
    """
    keras = _keras()
    L = keras.layers
    n_classes, length, channels = (_positive_int(n_classes, "n_classes"), _positive_int(length, "length"),
                                   _positive_int(channels, "channels"))
    inp = keras.Input(shape=(length, 1), name="input")
    x = L.Conv1D(channels, 5, padding="same", activation="relu", name="conv1")(inp)
    x = L.Conv1D(channels, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.Conv1D(channels, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(n_classes, activation="softmax", name="fc")(x)
    return keras.Model(inp, out, name="mnist1d_cnn")


def keras_ecg_fcn(in_channels: int = 12, length: int = 250, n_classes: int = 1):
    """Keras twin of :func:`ecg_fcn`: input ``(N, length, in_channels)``; Conv-BN-ReLU x 3, GAP, Dense
    with sigmoid (``n_classes=1``) or softmax. The ReLU follows the BatchNorm, so it is its own layer.

    Parameters
    ----------
    in_channels : int
        Input channels (leads).
    length : int
        Signal length.
    n_classes : int
        Output units: 1 for a binary sigmoid head, otherwise a softmax over ``n_classes``.

    Returns
    -------
    keras.Model
        A Functional model named ``ecg_fcn``.

    Raises
    ------
    InputError
        An argument that is not a positive integer.
    BackendError
        keras was imported with a backend other than torch.
    DependencyError
        keras is not installed.

    Examples
    --------
    >>> from trustmap import zoo
    >>> k = zoo.keras_ecg_fcn(in_channels=2, length=64, n_classes=3)
    >>> k.input_shape, k.output_shape
    ((None, 64, 2), (None, 3))
    """
    keras = _keras()
    L = keras.layers
    in_channels, length, n_classes = (_positive_int(in_channels, "in_channels"), _positive_int(length, "length"),
                                      _positive_int(n_classes, "n_classes"))
    inp = keras.Input(shape=(length, in_channels), name="input")
    x = inp
    for i, (c, k) in enumerate(zip((128, 256, 128), (8, 5, 3)), start=1):
        x = L.Conv1D(c, k, padding="same", name=f"conv{i}")(x)
        x = L.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"bn{i}")(x)  # torch's BatchNorm1d defaults
        x = L.Activation("relu", name=f"relu{i}")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    out = L.Dense(n_classes, activation="sigmoid" if n_classes == 1 else "softmax", name="fc")(x)
    return keras.Model(inp, out, name="ecg_fcn")


def keras_mnist2d_cnn(in_channels: int = 1, size: Sequence[int] | int = (28, 28), n_classes: int = 10):
    """Keras twin of :func:`mnist2d_cnn` (the Keras MNIST notebook): input ``(N, H, W, C)``, softmax output.

    Parameters
    ----------
    in_channels : int
        Input channels.
    size : int or (int, int)
        ``(height, width)``; an int means square. At least 6 x 6.
    n_classes : int
        Output units (softmax).

    Returns
    -------
    keras.Model
        A Functional model named ``mnist2d_cnn``.

    Raises
    ------
    InputError
        An argument that is not a positive integer, or a ``size`` that is not a pair or is too small.
    BackendError
        keras was imported with a backend other than torch.
    DependencyError
        keras is not installed.

    Examples
    --------
    >>> from trustmap import zoo
    >>> k = zoo.keras_mnist2d_cnn(size=12, n_classes=3)
    >>> k.input_shape, k.output_shape
    ((None, 12, 12, 1), (None, 3))
    """
    keras = _keras()
    L = keras.layers
    in_channels, n_classes = _positive_int(in_channels, "in_channels"), _positive_int(n_classes, "n_classes")
    h, w = _size2d(size)
    inp = keras.Input(shape=(h, w, in_channels), name="input")
    x = L.Conv2D(32, 3, activation="relu", name="conv1")(inp)
    x = L.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Dropout(0.25, name="dropout1")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(128, activation="relu", name="fc1")(x)
    x = L.Dropout(0.5, name="dropout2")(x)
    out = L.Dense(n_classes, activation="softmax", name="fc2")(x)
    return keras.Model(inp, out, name="mnist2d_cnn")
