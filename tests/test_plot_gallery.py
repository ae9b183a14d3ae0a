"""Galleries, class averages, metric comparison: the right data drawn, axes labelled, a colorbar
wherever a heatmap is drawn, one row per channel, the caller's layout respected."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from trustmap import Attribution  # noqa: E402
from trustmap.errors import InputError  # noqa: E402
from trustmap.plot import plot_class_average, plot_gallery, plot_metric_comparison, select_gallery  # noqa: E402


def all_axes(fig):
    """Every Axes of a figure and its subfigures, once each, in drawing order."""
    out = list(fig.axes)
    for sub in getattr(fig, "subfigs", []):
        out += all_axes(sub)
    seen, uniq = set(), []
    for a in out:
        if id(a) not in seen:
            seen.add(id(a))
            uniq.append(a)
    return uniq


def is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None or ax.get_label() == "<colorbar>"


def panels(fig):
    return [a for a in all_axes(fig) if not is_colorbar(a) and a.get_visible()]


def heat_panels(fig):
    return [a for a in panels(fig) if a.images]


def test_select_gallery_groups():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    p = np.array([0, 1, 2, 0, 2, 0, 1, 1])  # wrong: 4, 5, 6
    c = np.array([.9, .5, .7, .3, .8, .4, .6, .95])
    g = select_gallery(y, p, c, n=2)
    keys = list(g)
    assert keys == ["correct, most confident", "correct, least confident", "wrong, most confident",
                    "wrong, least confident"]
    assert g[keys[0]].tolist() == [7, 0]        # correct sorted by confidence, highest first
    assert g[keys[1]].tolist() == [3, 1]        # then the lowest among the rest
    assert g[keys[2]].tolist() == [4, 6]
    assert g[keys[3]].tolist() == [5]           # only one wrong left: no padding, no repeat
    for k in keys[:2]:
        assert np.all(y[g[k]] == p[g[k]])
    for k in keys[2:]:
        assert np.all(y[g[k]] != p[g[k]])


def _signal_batch(n=6, c=3, length=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c, length))
    m = np.abs(rng.normal(size=(n, c, length)))
    return x, m


def test_gallery_signal_rows_per_channel_labels_colorbar_and_values():
    x, m = _signal_batch()
    fig = plot_gallery(x, m, {"a": [0, 2], "b": [4]}, layout="NCL", y_true=[0] * 6, y_pred=[0] * 6,
                       confidence=np.linspace(.5, 1, 6))
    hp = heat_panels(fig)
    assert len(hp) == 3 * 3                      # 3 samples x 3 channels: one row per channel
    cbs = [a for a in all_axes(fig) if is_colorbar(a)]
    assert len(cbs) == 2                         # one per group row of heatmaps
    for a in hp:
        assert a.get_ylabel() and a.get_xlabel() or a.get_ylabel()
    assert [a for a in hp if a.get_xlabel() == "time / sample"]
    # panel (sample 0, channel 1): the band is the map scaled by its sample's max |value|
    band = hp[1].images[0].get_array()
    np.testing.assert_allclose(np.asarray(band)[0], m[0, 1] / np.abs(m[0]).max())
    line = hp[1].lines[0].get_ydata()
    np.testing.assert_allclose(line, x[0, 1])


def test_gallery_respects_the_callers_layout():
    x, m = _signal_batch()
    f1 = plot_gallery(x, m, [1, 3], layout="NCL")
    f2 = plot_gallery(np.swapaxes(x, 1, 2), np.swapaxes(m, 1, 2), [1, 3], layout="NLC")
    a1, a2 = heat_panels(f1), heat_panels(f2)
    assert len(a1) == len(a2) == 6
    for p, q in zip(a1, a2):
        np.testing.assert_allclose(np.asarray(p.images[0].get_array()), np.asarray(q.images[0].get_array()))
        np.testing.assert_allclose(p.lines[0].get_ydata(), q.lines[0].get_ydata())
    att = Attribution(np.swapaxes(m, 1, 2), np.zeros(6, int), "saliency", layout="NLC")
    f3 = plot_gallery(np.swapaxes(x, 1, 2), att, [1, 3])  # the Attribution's own layout
    np.testing.assert_allclose(np.asarray(heat_panels(f3)[0].images[0].get_array()),
                               np.asarray(a1[0].images[0].get_array()))


def test_gallery_images_overlay_with_colorbar():
    rng = np.random.default_rng(1)
    x = rng.random((4, 8, 8))
    m = rng.normal(size=(4, 8, 8))  # signed -> diverging scale
    fig = plot_gallery(x, m, [0, 1, 2], layout="NHW")
    hp = heat_panels(fig)
    assert len(hp) == 3 and all(len(a.images) == 2 for a in hp)
    assert all(a.get_xlabel() and a.get_ylabel() for a in hp)
    assert len([a for a in all_axes(fig) if is_colorbar(a)]) == 1
    np.testing.assert_allclose(np.asarray(hp[2].images[1].get_array()), m[2] / np.abs(m[2]).max())
    assert hp[0].images[1].norm.vmin == -1 and hp[0].images[1].norm.vmax == 1


def test_gallery_needs_a_layout_for_arrays_and_valid_indices():
    x, m = _signal_batch()
    with pytest.raises(InputError, match="layout"):
        plot_gallery(x, m, [0])
    with pytest.raises(InputError, match="out of range"):
        plot_gallery(x, m, [9], layout="NCL")


def test_class_average_signal_mean_and_band():
    rng = np.random.default_rng(2)
    n, c, length = 40, 2, 25
    labels = np.repeat([0, 1], n // 2)
    m = rng.normal(size=(n, c, length)) + labels[:, None, None] * 3.0
    m[labels == 1] = m[labels == 1][0]  # class 1: identical maps -> a band of zero width
    fig = plot_class_average(m, labels, layout="NCL", n_boot=300)
    ps = panels(fig)
    assert len(ps) == 2 * c                     # one row per channel, one column per class
    assert all(a.get_xlabel() and a.get_ylabel() for a in ps)
    # column 0 = class 0: the line is the class mean; the band contains it
    ax0 = ps[0]
    np.testing.assert_allclose(ax0.lines[0].get_ydata(), m[labels == 0, 0].mean(axis=0))
    band = ax0.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() <= m[labels == 0, 0].mean(axis=0).min() + 1e-9
    # class 1, channel 1: zero-width band equal to the (constant) map
    ax1 = [a for a in ps if a.get_title().startswith("class 1")][0]
    np.testing.assert_allclose(ax1.lines[0].get_ydata(), m[labels == 1][0, 0])
    verts = ax1.collections[0].get_paths()[0].vertices[:, 1]
    assert np.ptp(verts) == pytest.approx(np.ptp(m[labels == 1][0, 0]), abs=1e-9)
    # layout: the same maps channels-last give the same curves
    fig2 = plot_class_average(np.swapaxes(m, 1, 2), labels, layout="NLC", n_boot=300)
    for p, q in zip(panels(fig), panels(fig2)):
        np.testing.assert_allclose(p.lines[0].get_ydata(), q.lines[0].get_ydata())


def test_class_average_images_marginals_and_colorbar():
    rng = np.random.default_rng(3)
    m = rng.random((12, 6, 7))
    labels = np.array([0] * 6 + [1] * 6)
    fig = plot_class_average(m, labels, layout="NHW", n_boot=200)
    heat = heat_panels(fig)
    assert len(heat) == 2 and all(a.get_xlabel() and a.get_ylabel() for a in heat)
    cbs = [a for a in all_axes(fig) if is_colorbar(a)]
    assert len(cbs) == 2                                   # one per class panel, on one shared scale
    assert heat[0].images[0].norm.vmax == heat[1].images[0].norm.vmax
    np.testing.assert_allclose(np.asarray(heat[0].images[0].get_array()), m[:6].mean(axis=0))
    marg = [a for a in panels(fig) if not a.images and a.lines]
    assert len(marg) == 4
    top = [a for a in marg if a.get_ylabel() == "Σ rows"][0]
    np.testing.assert_allclose(top.lines[0].get_ydata(), m[:6].mean(axis=0).sum(axis=0))
    right = [a for a in marg if a.get_xlabel() == "Σ columns"][0]
    np.testing.assert_allclose(right.lines[0].get_xdata(), m[:6].mean(axis=0).sum(axis=1))


def test_metric_comparison_intervals_and_best():
    d = {"methods": ["a", "b"], "metrics": ["deletion", "insertion"],
         "higher_is_better": {"deletion": False, "insertion": True},
         "cells": {"a": {"deletion": {"value": 0.2, "low": 0.1, "high": 0.3},
                         "insertion": {"value": 0.5, "low": 0.4, "high": 0.6}},
                   "b": {"deletion": {"value": 0.4, "low": 0.35, "high": 0.5},
                         "insertion": {"value": 0.7, "low": 0.6, "high": 0.8}}},
         "settings": {"level": 0.95}}
    fig = plot_metric_comparison(d)
    ps = panels(fig)
    assert len(ps) == 2 and all(a.get_xlabel() and a.get_ylabel() for a in ps)
    dele, ins = ps
    bars = dele.patches
    assert [round(b.get_width(), 6) for b in bars] == [0.2, 0.4]
    # best: lower deletion (a), higher insertion (b) -> orange
    from matplotlib.colors import to_rgba

    assert to_rgba(bars[0].get_facecolor())[:3] == pytest.approx(to_rgba("tab:orange")[:3])
    assert to_rgba(ins.patches[1].get_facecolor())[:3] == pytest.approx(to_rgba("tab:orange")[:3])
    # error bars span [low, high]
    seg = dele.collections[0].get_segments()
    spans = sorted((round(s[0][0], 6), round(s[1][0], 6)) for s in seg)
    assert spans == [(0.1, 0.3), (0.35, 0.5)]
    with pytest.raises(InputError):
        plot_metric_comparison({"nothing": 1})


def test_method_grid_rows_per_channel_scales_and_layout():
    from trustmap.plot import plot_method_grid

    x, m = _signal_batch(n=4, c=2, length=20)
    signed = m - m.mean()
    maps = {"pos": m, "signed": signed, "also": 2 * m}
    fig = plot_method_grid(x, maps, index=1, layout="NCL")
    hp = heat_panels(fig)
    assert len(hp) == 3 * 2                               # one row per channel in each method's panel
    assert all(a.get_ylabel() for a in hp) and [a for a in hp if a.get_xlabel() == "time / sample"]
    cbs = [a for a in all_axes(fig) if is_colorbar(a)]
    assert len(cbs) == 2                                  # a sequential and a signed scale
    np.testing.assert_allclose(np.asarray(hp[0].images[0].get_array())[0], m[1, 0] / np.abs(m[1]).max())
    np.testing.assert_allclose(np.asarray(hp[2].images[0].get_array())[0], signed[1, 0] / np.abs(signed[1]).max())
    # scaled to its own max: 2*m draws exactly like m
    np.testing.assert_allclose(np.asarray(hp[4].images[0].get_array()), np.asarray(hp[0].images[0].get_array()))
    fig2 = plot_method_grid(np.swapaxes(x, 1, 2), {k: np.swapaxes(v, 1, 2) for k, v in maps.items()}, index=1,
                            layout="NLC")
    for p, q in zip(hp, heat_panels(fig2)):
        np.testing.assert_allclose(np.asarray(p.images[0].get_array()), np.asarray(q.images[0].get_array()))
    # images: one panel per method, the image under the overlay
    xi = np.random.default_rng(5).random((2, 6, 6))
    fig3 = plot_method_grid(xi, {"a": xi, "b": -xi}, layout="NHW")
    hp3 = heat_panels(fig3)
    assert len(hp3) == 2 and all(len(a.images) == 2 and a.get_xlabel() and a.get_ylabel() for a in hp3)
    assert len([a for a in all_axes(fig3) if is_colorbar(a)]) == 2
