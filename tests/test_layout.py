import numpy as np
import pytest
import torch

from trustmap.errors import LayoutError, ShapeError
from trustmap.layout import LAYOUTS, Layout, resize_to, resolve_layout

CASES = [  # layout, shape, model rank, channels, spatial
    ("NL", (4, 50), 1, 1, (50,)),
    ("NLC", (4, 50, 3), 1, 3, (50,)),
    ("NCL", (4, 3, 50), 1, 3, (50,)),
    ("NHW", (4, 8, 9), 2, 1, (8, 9)),
    ("NHWC", (4, 8, 9, 3), 2, 3, (8, 9)),
    ("NCHW", (4, 3, 8, 9), 2, 3, (8, 9)),
]


@pytest.mark.parametrize("name,shape,rank,channels,spatial", CASES)
def test_each_layout_resolves_and_round_trips(name, shape, rank, channels, spatial):
    x = np.random.default_rng(0).normal(size=shape)
    lay = resolve_layout(x.shape, rank=rank, channels=channels, spatial=spatial)
    assert lay.name == name
    internal = lay.to_internal(x)
    assert internal.shape == (shape[0], channels, *spatial)
    back = lay.from_internal(internal)
    np.testing.assert_array_equal(back, x)
    # torch tensors take the same path
    t = lay.to_internal(torch.from_numpy(x))
    np.testing.assert_array_equal(t.numpy(), internal)


def test_internal_values_follow_the_axes():
    x = np.arange(2 * 5 * 3).reshape(2, 5, 3)  # NLC
    internal = Layout("NLC").to_internal(x)
    assert internal[1, 2, 4] == x[1, 4, 2]


def test_ambiguous_layout_asks_for_layout():
    with pytest.raises(LayoutError, match="layout="):
        resolve_layout((4, 3, 3), rank=1, channels=3, spatial=(3,))
    assert resolve_layout((4, 3, 3), rank=1, channels=3, spatial=(3,), layout="NLC").name == "NLC"


def test_unknown_spatial_size_is_ambiguous_only_when_both_fit():
    assert resolve_layout((4, 12, 250), rank=1, channels=12, spatial=None).name == "NCL"
    assert resolve_layout((4, 250, 12), rank=1, channels=12, spatial=(None,)).name == "NLC"
    with pytest.raises(LayoutError):
        resolve_layout((4, 12, 12), rank=1, channels=12, spatial=(None,))


def test_wrong_rank_names_the_fix():
    with pytest.raises(ShapeError, match="batch axis"):
        resolve_layout((50, 3), rank=1, channels=3, spatial=(50,))


def test_channel_mismatch():
    with pytest.raises(ShapeError, match="channel"):
        resolve_layout((4, 50, 5), rank=1, channels=3, spatial=(50,))


def test_explicit_layout_that_does_not_fit():
    with pytest.raises(ShapeError, match="NCL"):
        resolve_layout((4, 50, 3), rank=1, channels=3, spatial=(50,), layout="NCL")


def test_unknown_layout_name():
    with pytest.raises(LayoutError, match="NLC"):
        Layout("LN")
    assert set(LAYOUTS) == {"NL", "NLC", "NCL", "NHW", "NHWC", "NCHW"}


def test_resize_linear_and_bilinear():
    m = torch.arange(5.0).reshape(1, 1, 5)
    up = resize_to(m, (10,))
    assert up.shape == (1, 1, 10)
    assert torch.all(up[..., 1:] >= up[..., :-1])  # linear upsampling of a ramp stays monotone
    m2 = torch.ones(2, 3, 4, 4)
    assert torch.allclose(resize_to(m2, (8, 6)), torch.ones(2, 3, 8, 6))
    assert resize_to(m, (5,)) is m
