"""trustmap inside Quantus / Captum workflows: quantus_explain_func, Model.as_torch, Captum tensors.

Quantus is not installed here (it imports torchvision); ``quantus_max_sensitivity`` below is
Quantus' ``MaxSensitivity.__call__`` flow written out: channels-first ``x_batch``, the model
wrapped as Quantus' ``PyTorchModel`` (``model(torch.Tensor(x))`` then softmax), ``explain_func``
called as ``explain_func(model=model, inputs=x, targets=y, **explain_func_kwargs)``, the
attributions' shape asserted against ``x_batch``.
"""

import numpy as np
import pytest
import torch
from torch import nn

from trustmap import load_model
from trustmap.errors import InputError, LayoutError
from trustmap.explain import get_explainer
from trustmap.interop import quantus_explain_func
from trustmap.models import import_keras


def keras_channels_last(tmp_path, length=40, channels=1, k=3):
    keras = import_keras()
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((length, channels)),
                            keras.layers.Conv1D(4, 5, padding="same", activation="relu"),
                            keras.layers.Flatten(),
                            keras.layers.Dense(k, activation="softmax")])
    path = tmp_path / "cl.keras"
    net.save(path)
    return keras.models.load_model(path, compile=False)


class QuantusPyTorchModel:
    """What Quantus does with an nn.Module: channels-first numpy in, softmax out."""

    def __init__(self, model):
        self.model = model

    def predict(self, x):
        with torch.no_grad():
            return torch.softmax(self.model(torch.Tensor(x)), dim=-1).numpy()

    def get_model(self):
        return self.model


def quantus_max_sensitivity(model, x_batch, y_batch, a_batch=None, explain_func=None, explain_func_kwargs=None,
                            nr_samples=3, lower_bound=0.2, seed=0):
    explain_func_kwargs = explain_func_kwargs or {}
    channel_first = x_batch.shape[1] <= x_batch.shape[-1]          # quantus.utils.infer_channel_first (1D)
    if not channel_first:
        x_batch = np.moveaxis(x_batch, -1, 1)                        # quantus.utils.make_channel_first
    wrapped = QuantusPyTorchModel(model)
    if a_batch is None:
        a_batch = explain_func(model=wrapped.get_model(), inputs=x_batch, targets=y_batch, **explain_func_kwargs)
    assert np.shape(a_batch)[0] == np.shape(x_batch)[0] and np.shape(a_batch)[1:] == np.shape(x_batch)[1:], \
        "a_batch must have the shape of x_batch"
    rng = np.random.default_rng(seed)
    scores = []
    for x, y, a in zip(x_batch, y_batch, a_batch):
        y_pred = int(np.argmax(wrapped.predict(x[None])))
        best = 0.0
        for _ in range(nr_samples):
            xp = (x + rng.uniform(-lower_bound, lower_bound, size=x.shape)).astype(np.float32)
            if int(np.argmax(wrapped.predict(xp[None]))) != y_pred:
                continue                                            # Quantus skips changed predictions
            ap = explain_func(model=wrapped.get_model(), inputs=xp[None], targets=np.array([y]),
                              **explain_func_kwargs)[0]
            best = max(best, np.linalg.norm((a - ap).ravel()) / np.linalg.norm(x.ravel()))
        scores.append(best)
    return np.array(scores)


def test_quantus_loop_on_a_channels_last_keras_model(tmp_path):
    keras_net = keras_channels_last(tmp_path)
    rng = np.random.default_rng(0)
    X_nlc = rng.normal(size=(8, 40, 1)).astype(np.float32)
    x_cf = np.moveaxis(X_nlc, -1, 1)                                 # what Quantus hands over: (8, 1, 40)
    y = load_model(keras_net).predict(X_nlc)
    # the failure a Quantus user meets today: the Keras model called on Quantus' channels-first batch
    with pytest.raises(Exception):
        QuantusPyTorchModel(keras_net).predict(x_cf)
    # trustmap's view takes the channels-first batch and predicts what Keras predicts on its own layout
    view = load_model(keras_net).as_torch()
    np.testing.assert_allclose(QuantusPyTorchModel(view).predict(x_cf), keras_net.predict(X_nlc, verbose=0),
                               rtol=1e-5, atol=1e-6)
    f = quantus_explain_func("saliency", absolute=False)
    a = f(model=keras_net, inputs=x_cf, targets=y)
    assert a.shape == x_cf.shape and a.dtype == np.float32
    own = get_explainer("saliency", absolute=False).explain(keras_net, X_nlc, target=y).maps   # (8, 40, 1)
    np.testing.assert_allclose(a, np.moveaxis(own, -1, 1), rtol=1e-5, atol=1e-7)
    # the whole Quantus-style metric loop runs with the view as the model and our explain_func
    s = quantus_max_sensitivity(view, x_cf, y, explain_func=f, nr_samples=3)
    s2 = quantus_max_sensitivity(view, X_nlc, y, explain_func=f, nr_samples=3)   # channels-last given: same
    assert np.isfinite(s).all() and (s >= 0).all()
    np.testing.assert_allclose(s, s2)
    # explain_func_kwargs override parameters; unknown ones are named
    g = quantus_explain_func("saliency")
    np.testing.assert_allclose(g(view, x_cf, y, absolute=False, device="cpu"), a, rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError):
        g(view, x_cf, y, not_a_parameter=1)
    with pytest.raises(InputError):
        quantus_explain_func("not_a_method")


def test_quantus_explain_func_on_a_torch_image_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    f = quantus_explain_func("integrated_gradients", n_steps=16)
    a = f(net, x, np.array([0, 1, 2, 3]))
    assert a.shape == x.shape
    a1 = f(net, x, 2)                                                 # one int for the batch
    assert a1.shape == x.shape and not np.allclose(a, a1)


def test_as_torch_view(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.Dropout(0.5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))
    net.train()
    m = load_model(net)
    view = m.as_torch()
    x = torch.randn(5, 2, 16, requires_grad=True)
    out = view(x)
    assert out.shape == (5, 3) and net.training                       # evaluated in eval mode, mode restored
    out[:, 1].sum().backward()                                        # Captum-style gradient through the view
    sal = get_explainer("saliency", absolute=False).explain(m, x.detach().numpy(), target=1).maps
    np.testing.assert_allclose(x.grad.numpy(), sal, rtol=1e-5, atol=1e-7)
    assert list(view.parameters()) == []                              # the view owns nothing
    # channels-last view of the same model
    v2 = m.as_torch(layout="NLC")
    torch.testing.assert_close(v2(x.detach().transpose(1, 2)), view(x.detach()))
    with pytest.raises(LayoutError):
        m.as_torch(layout="NCHW")
    # a Keras model seen channels-first gives Keras' own logits
    keras_net = keras_channels_last(tmp_path, length=16, channels=2)
    km = load_model(keras_net)
    xk = np.random.default_rng(1).normal(size=(3, 16, 2)).astype(np.float32)
    got = km.as_torch()(torch.as_tensor(np.moveaxis(xk, -1, 1))).detach().numpy()
    np.testing.assert_allclose(got, km.logits(xk), rtol=1e-5, atol=1e-6)
