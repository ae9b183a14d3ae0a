"""Occlusion: analytic identities on linear models, a brute-force reference for overlapping windows,
batch invariance, the memory budget, ONNX models, typed errors."""

import numpy as np
import pytest
import torch
from torch import nn

import trustmap
from trustmap.errors import InputError, ShapeError
from trustmap.explain import explain
from trustmap.explain.perturbation import window_plan


def linear(c, spatial, k=3, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(c * int(np.prod(spatial)), k))
    return net.eval(), trustmap.load_model(net, input_shape=(c, *spatial), output="logits")


def small_cnn(c=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(c, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 4, 3, padding=1), nn.Tanh(),
                         nn.Flatten(), nn.Linear(4 * 12, 3)).eval()


@pytest.mark.parametrize("spatial", [(12,), (5, 4)])
@pytest.mark.parametrize("baseline", ["zero", "mean", 0.3, "array"])
def test_window_one_on_linear_is_w_times_x_minus_baseline(spatial, baseline):
    c = 2
    net, m = linear(c, spatial)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, c, *spatial)).astype("float32")
    if baseline == "array":
        baseline = rng.normal(size=(c, *spatial)).astype("float32")
    a = explain(m, x, "occlusion", window=1, per_channel=True, baseline=baseline, target=[0, 1, 2, 1])
    w = net[1].weight.detach().numpy().reshape(3, c, *spatial)[a.targets]
    if isinstance(baseline, str):
        b = {"zero": np.zeros_like(x), "mean": x.mean(tuple(range(2, x.ndim)), keepdims=True)}[baseline]
    else:
        b = np.broadcast_to(baseline, x.shape)
    np.testing.assert_allclose(a.maps, w * (x - b), atol=1e-5)
    # across channels, a window of 1 removes a position in every channel: each channel gets the sum
    a2 = explain(m, x, "occlusion", window=1, per_channel=False, baseline=baseline, target=[0, 1, 2, 1])
    want = (w * (x - b)).sum(1, keepdims=True)
    np.testing.assert_allclose(a2.maps, np.broadcast_to(want, x.shape), atol=1e-5)


def brute_occlusion(net, x, target, window, stride):
    """Independent reference: loop over samples and window starts, average the drops."""
    n, c, L = x.shape
    out = np.zeros_like(x, dtype=np.float64)
    cnt = np.zeros(L)
    starts = list(range(0, L - window + 1, stride))
    if starts[-1] != L - window:
        starts.append(L - window)
    with torch.no_grad():
        for i in range(n):
            f0 = net(torch.as_tensor(x[i:i + 1]))[0, target[i]].item()
            for s in starts:
                xo = x[i:i + 1].copy()
                xo[..., s:s + window] = 0
                d = f0 - net(torch.as_tensor(xo))[0, target[i]].item()
                out[i, :, s:s + window] += d
        for s in starts:
            cnt[s:s + window] += 1
    return out / cnt


def test_overlapping_windows_match_a_brute_force_loop():
    net = small_cnn()
    x = np.random.default_rng(1).normal(size=(3, 2, 12)).astype("float32")
    a = explain(net, x, "occlusion", window=5, stride=2, target=[0, 1, 2])
    np.testing.assert_allclose(a.maps, brute_occlusion(net, x, [0, 1, 2], 5, 2), atol=1e-5)
    assert a.extras["n_windows"] == len(window_plan((12,), (5,), (2,))) == 5  # 0, 2, 4, 6, and 7 at the edge
    np.testing.assert_allclose(a.extras["score"], net(torch.as_tensor(x)).detach().numpy()[[0, 1, 2], [0, 1, 2]],
                               atol=1e-6)


def test_probability_score_and_default_window():
    net = small_cnn()
    x = np.random.default_rng(2).normal(size=(3, 2, 12)).astype("float32")
    a = explain(net, x, "occlusion", score="prob", target=1, window=12)
    with torch.no_grad():
        p = torch.softmax(net(torch.as_tensor(x)), 1)[:, 1].numpy()
        p0 = torch.softmax(net(torch.zeros_like(torch.as_tensor(x))), 1)[:, 1].numpy()
    # one window covering everything: every entry carries p(x) - p(baseline)
    np.testing.assert_allclose(a.maps, np.broadcast_to((p - p0)[:, None, None], x.shape), atol=1e-6)
    assert explain(net, x, "occlusion").extras["n_windows"] == 6  # default window ceil(12 / 10) = 2, stride 2


class CountRows(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.sizes = net, []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.net(x)


@pytest.mark.parametrize("per_channel", [False, True])
def test_batch_equals_one_by_one_and_the_budget_bounds_model_calls(per_channel):
    net = CountRows(small_cnn())
    x = np.random.default_rng(3).normal(size=(5, 2, 12)).astype("float32")
    m = trustmap.load_model(net, max_batch=7)
    a = explain(m, x, "occlusion", window=3, stride=1, per_channel=per_channel, baseline="noise", seed=4)
    assert max(net.sizes) <= 7
    n_win = 10 * (2 if per_channel else 1)
    assert a.extras["n_windows"] == n_win
    assert sum(net.sizes) >= 5 * (n_win + 1)
    one = np.concatenate([explain(small_cnn(), x[i:i + 1], "occlusion", window=3, stride=1, per_channel=per_channel,
                                  baseline="noise", seed=4, target=int(a.targets[i])).maps for i in range(5)])
    np.testing.assert_allclose(one, a.maps, rtol=1e-5, atol=1e-6)
    if per_channel:
        assert not np.allclose(a.maps[:, 0], a.maps[:, 1])


def test_channels_last_keras_style_input_and_2d_windows():
    net, m = linear(3, (6, 5))
    x = np.random.default_rng(4).normal(size=(2, 6, 5, 3)).astype("float32")  # NHWC
    a = explain(m, x, "occlusion", window=(1, 1), per_channel=True, layout="NHWC", target=0)
    w = np.moveaxis(net[1].weight.detach().numpy()[0].reshape(3, 6, 5), 0, -1)
    assert a.layout == "NHWC" and a.maps.shape == x.shape
    np.testing.assert_allclose(a.maps, w * x, atol=1e-5)
    b = explain(m, x, "occlusion", window=(2, 5), stride=(2, 5), layout="NHWC", target=0)
    assert b.extras["n_windows"] == 3
    # a 2 x 5 window across channels: rows 0-1, 2-3, 4-5 each carry their block's total w * x
    blk = (w * x).sum(-1).reshape(2, 3, 2, 5).sum((2, 3))
    np.testing.assert_allclose(b.maps[:, 0, 0, 0], blk[:, 0], atol=1e-5)
    np.testing.assert_allclose(b.maps[:, 5, 4, 2], blk[:, 2], atol=1e-5)


def test_onnx_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(20, 3)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "W"], ["z"])],
        "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 10])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "lin.onnx")
    m = trustmap.load_model(tmp_path / "lin.onnx", output="logits")
    x = np.random.default_rng(1).normal(size=(3, 2, 10)).astype("float32")
    a = explain(m, x, "occlusion", window=1, per_channel=True, target=2)
    np.testing.assert_allclose(a.maps, w[:, 2].reshape(2, 10) * x, atol=1e-5)


def test_typed_errors():
    net = small_cnn()
    x = np.zeros((2, 2, 12), "float32")
    with pytest.raises(ShapeError, match="window"):
        explain(net, x, "occlusion", window=(2, 2))
    with pytest.raises(ShapeError, match="larger than the input"):
        explain(net, x, "occlusion", window=13)
    with pytest.raises(InputError, match="stride"):
        explain(net, x, "occlusion", stride=0)
    with pytest.raises(ShapeError, match="baseline"):
        explain(net, x, "occlusion", baseline=np.zeros((2, 11), "float32"))
    with pytest.raises(InputError, match="baseline"):
        explain(net, x, "occlusion", baseline="gaussian")
    with pytest.raises(InputError, match="score"):
        explain(net, x, "occlusion", score="proba")


def test_progress_bar_on_stderr_only_when_asked(capsys):
    net = small_cnn()
    x = np.zeros((2, 2, 12), "float32")
    explain(net, x, "occlusion")
    assert capsys.readouterr().err == ""
    explain(net, x, "occlusion", progress=True)
    assert "occlusion" in capsys.readouterr().err
