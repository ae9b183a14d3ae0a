"""Figures: the right data in the right rows, labelled axes, colorbars, the caller's layout."""

from types import SimpleNamespace

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
import matplotlib.pyplot as plt  # noqa: E402

from trustmap import Attribution  # noqa: E402
from trustmap.errors import InputError, ShapeError  # noqa: E402
from trustmap.metrics import report_from_scores  # noqa: E402
from trustmap.plot import (plot_attribution, plot_class_accuracy, plot_confusion, plot_image_attribution,  # noqa: E402
                           plot_image_maps, plot_model_report, plot_roc, plot_signal_maps,
                           plot_training_curves)


@pytest.fixture
def figs():
    """Collects the figures a test makes and closes them afterwards."""
    made = []
    n_pyplot = len(plt.get_fignums())
    yield made
    # trustmap never registers figures with pyplot (nothing to show, nothing leaks)
    assert len(plt.get_fignums()) == n_pyplot
    for f in made:
        plt.close(f)
        f.clear()


def is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None or ax.get_label() == "<colorbar>"


def panels(fig):
    return [a for a in fig.axes if not is_colorbar(a) and a.get_visible()]


def colorbars(fig):
    return [a._colorbar for a in fig.axes if is_colorbar(a)]


def saves_png(fig, path):
    fig.savefig(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


@pytest.fixture
def signal_case():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 50, 3))  # NLC: 2 samples, 50 steps, 3 channels
    maps = rng.uniform(0, 1, size=(2, 50, 3))
    maps[1, 20:30, 1] += 2.0
    return x, Attribution(maps, [2, 1], "saliency", layout="NLC")


def test_nlc_signal_one_row_per_channel_with_the_right_data(figs, signal_case, tmp_path):
    x, att = signal_case
    fig = plot_attribution(att, x, index=1)
    figs.append(fig)
    rows = panels(fig)
    assert len(rows) == 3
    for c, ax in enumerate(rows):
        assert ax.get_ylabel() == f"channel {c}"
        (line,) = ax.get_lines()
        np.testing.assert_array_equal(line.get_xdata(), np.arange(50))
        np.testing.assert_allclose(line.get_ydata(), x[1, :, c])  # row c holds the caller's channel c
        (band,) = ax.get_images()
        np.testing.assert_allclose(np.asarray(band.get_array()), att.maps[1, :, c][None, :])
        lo, hi = band.get_extent()[:2]
        assert (lo, hi) == (-0.5, 49.5)
    assert rows[-1].get_xlabel() == "time / sample"
    (cb,) = colorbars(fig)
    assert cb.ax.get_ylabel() == "attribution"
    # one colour scale for all rows: 0 .. the largest value drawn
    for ax in rows:
        norm = ax.get_images()[0].norm
        assert (norm.vmin, norm.vmax) == pytest.approx((0.0, att.maps[1].max()))
    assert (cb.norm.vmin, cb.norm.vmax) == pytest.approx((0.0, att.maps[1].max()))
    title = fig._suptitle.get_text()
    assert "saliency" in title and "target 1" in title
    saves_png(fig, tmp_path / "signal.png")


def test_attribution_plot_method_and_single_sample_input(figs, signal_case):
    x, att = signal_case
    fig = att.plot(x[0])  # one sample without its batch axis, drawn for index 0
    figs.append(fig)
    rows = panels(fig)
    assert len(rows) == 3
    np.testing.assert_allclose(rows[2].get_lines()[0].get_ydata(), x[0, :, 2])


def test_signal_without_input_draws_bands_only(figs, signal_case):
    _, att = signal_case
    fig = plot_attribution(att)
    figs.append(fig)
    rows = panels(fig)
    assert len(rows) == 3
    assert all(not ax.get_lines() and len(ax.get_images()) == 1 for ax in rows)
    assert all(ax.get_ylabel() for ax in rows) and rows[-1].get_xlabel() == "time / sample"
    assert len(colorbars(fig)) == 1


def test_signed_map_uses_symmetric_diverging_scale(figs):
    maps = np.zeros((1, 2, 40))
    maps[0, 0, 5] = -3.0
    maps[0, 1, 30] = 1.0
    fig = plot_attribution(Attribution(maps, [0], "integrated_gradients", layout="NCL"),
                           np.ones((1, 2, 40)))
    figs.append(fig)
    (cb,) = colorbars(fig)
    assert (cb.norm.vmin, cb.norm.vmax) == (-3.0, 3.0)
    assert cb.cmap.name == "RdBu_r" and "signed" in cb.ax.get_ylabel()


def test_channel_selection_names_and_layout_without_channels(figs, signal_case):
    x, att = signal_case
    fig = plot_attribution(att, x, channels=[2], channel_names=["I", "II", "V1"])
    figs.append(fig)
    (row,) = panels(fig)
    assert row.get_ylabel() == "V1"
    np.testing.assert_allclose(row.get_lines()[0].get_ydata(), x[0, :, 2])
    nl = Attribution(att.maps[..., 0], [0, 0], "occlusion", layout="NL")
    fig2 = plot_attribution(nl, x[..., 0], index=1)
    figs.append(fig2)
    (row,) = panels(fig2)
    np.testing.assert_allclose(row.get_lines()[0].get_ydata(), x[1, :, 0])


def test_drawing_into_callers_axes(figs, signal_case):
    x, att = signal_case
    fig = matplotlib.figure.Figure()
    axes = fig.subplots(3, 1)
    out = plot_attribution(att, x, ax=axes)
    figs.append(out)
    assert out is fig
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), x[0, :, 1])
    with pytest.raises(InputError, match="3 panel"):
        plot_attribution(att, x, ax=axes[0])


def test_bad_plot_arguments(signal_case):
    x, att = signal_case
    with pytest.raises(ShapeError):
        plot_attribution(att, x[:, :40])
    with pytest.raises(ShapeError):
        plot_attribution(att, x[:1])
    with pytest.raises(InputError, match="index"):
        plot_attribution(att, x, index=5)
    with pytest.raises(InputError, match="channel"):
        plot_attribution(att, x, channels=[3])
    with pytest.raises(InputError):
        plot_attribution(att.maps, x)


def test_image_overlay_shared_map(figs, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(2, 16, 12, 3))  # NHWC
    heat = np.zeros((2, 16, 12))
    heat[:, 4:8, 3:6] = 1.0
    att = Attribution(np.repeat(heat[..., None], 3, -1), [4, 4], "gradcam", layout="NHWC")
    fig = plot_attribution(att, x, class_names=[str(i) for i in range(4)] + ["cat"])
    figs.append(fig)
    (ax,) = panels(fig)
    grey, overlay = ax.get_images()
    np.testing.assert_allclose(np.asarray(grey.get_array()), x[0].mean(-1))
    np.testing.assert_allclose(np.asarray(overlay.get_array()), heat[0])
    # a separate layer: transparent where the map is zero, nearly opaque at its peak, and in the
    # colour bar's colours (its colormap and scale; nothing blended into the colormap)
    alpha = np.asarray(overlay.get_alpha())
    assert alpha.shape == heat[0].shape
    np.testing.assert_allclose(alpha[heat[0] == 0], 0.0)
    assert np.all(alpha[heat[0] == 1] > 0.8)
    (cb,) = colorbars(fig)
    assert overlay.cmap.name == cb.cmap.name and overlay.norm.vmax == cb.norm.vmax
    assert ax.get_xlabel() and ax.get_ylabel()
    assert len(colorbars(fig)) == 1
    assert "gradcam" in fig._suptitle.get_text() and "cat" in fig._suptitle.get_text()
    saves_png(fig, tmp_path / "image.png")


def test_image_panel_per_channel_when_maps_differ(figs):
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(1, 3, 10, 10))  # NCHW
    maps = rng.normal(size=(1, 3, 10, 10))
    fig = plot_attribution(Attribution(maps, [0], "saliency", layout="NCHW"), x)
    figs.append(fig)
    axs = panels(fig)
    assert len(axs) == 3
    for c, ax in enumerate(axs):
        grey, overlay = ax.get_images()
        np.testing.assert_allclose(np.asarray(grey.get_array()), x[0, c])
        np.testing.assert_allclose(np.asarray(overlay.get_array()), maps[0, c])
        assert ax.get_title() == f"channel {c}"
    (cb,) = colorbars(fig)
    assert cb.norm.vmin == pytest.approx(-np.abs(maps).max())
    fig2 = plot_image_attribution(maps[0], None, channels=[1])
    figs.append(fig2)
    (ax,) = panels(fig2)
    np.testing.assert_allclose(np.asarray(ax.get_images()[0].get_array()), maps[0, 1])
    assert len(colorbars(fig2)) == 1


def test_signal_maps_grid(figs, signal_case, tmp_path):
    x, att = signal_case
    maps = {"saliency": att.maps, "ig": att.maps - 0.5, "gradcam": Attribution(att.maps ** 2, [0, 0], "gradcam",
                                                                                layout="NLC")}
    fig = plot_signal_maps(x, maps, layout="NLC", index=1)
    figs.append(fig)
    axs = panels(fig)
    assert len(axs) == 9  # 3 channels x 3 methods
    grid = np.array(axs).reshape(3, 3)
    assert [a.get_title() for a in grid[0]] == ["saliency", "ig", "gradcam"]
    assert [a.get_ylabel() for a in grid[:, 0]] == ["channel 0", "channel 1", "channel 2"]
    assert all(a.get_xlabel() == "time / sample" for a in grid[-1])
    np.testing.assert_allclose(np.asarray(grid[2, 1].get_images()[0].get_array())[0], att.maps[1, :, 2] - 0.5)
    np.testing.assert_allclose(grid[2, 1].get_lines()[0].get_ydata(), x[1, :, 2])
    cbs = colorbars(fig)
    assert len(cbs) == 3
    assert cbs[1].norm.vmin < 0 < cbs[1].norm.vmax and cbs[0].norm.vmin == 0
    saves_png(fig, tmp_path / "maps.png")
    shared = plot_signal_maps(None, {"a": att.maps, "b": 2 * att.maps}, layout="NLC", shared_scale=True)
    figs.append(shared)
    assert len(colorbars(shared)) == 1 and len(panels(shared)) == 6


def test_image_maps_row(figs):
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(2, 1, 8, 8))
    fig = plot_image_maps(x, {"a": rng.uniform(size=(2, 1, 8, 8)), "b": rng.normal(size=(2, 1, 8, 8))})
    figs.append(fig)
    assert len(panels(fig)) == 2 and len(colorbars(fig)) == 2


# ---- model figures ---------------------------------------------------------------------------
@pytest.fixture
def report():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    p = rng.dirichlet(np.ones(3), 90) + 0.8 * np.eye(3)[y]
    return report_from_scores(y, p / p.sum(1, keepdims=True), class_names=["N", "S", "V"])


HISTORY = {"train_loss": [1.0, 0.6, 0.4, 0.3], "val_loss": [1.1, 0.8, 0.7, 0.75],
           "train_acc": [0.5, 0.7, 0.8, 0.9], "val_acc": [0.45, 0.6, 0.7, 0.68]}


@pytest.mark.parametrize("as_object", [False, True])
def test_training_curves(figs, as_object):
    history = SimpleNamespace(**HISTORY, best_epoch=2) if as_object else HISTORY
    fig = plot_training_curves(history)
    figs.append(fig)
    ax_loss, ax_acc = panels(fig)
    assert (ax_loss.get_xlabel(), ax_loss.get_ylabel()) == ("epoch", "loss")
    assert (ax_acc.get_xlabel(), ax_acc.get_ylabel()) == ("epoch", "accuracy")
    curves = {line.get_label(): line for line in ax_loss.get_lines()}
    np.testing.assert_allclose(curves["validation"].get_ydata(), HISTORY["val_loss"])
    np.testing.assert_allclose(curves["training"].get_xdata(), [1, 2, 3, 4])
    assert any("best epoch (3)" in k for k in curves) == as_object
    with pytest.raises(InputError, match="no curves"):
        plot_training_curves({})


def test_training_curves_from_zoo_like_history_without_validation(figs):
    # the trainer's History: NaN validation curves and best_epoch=-1 when there was no validation set
    history = SimpleNamespace(train_loss=[1.0, 0.5], train_acc=[0.4, 0.7], val_loss=[np.nan, np.nan],
                              val_acc=[None, None], best_epoch=-1)
    fig = plot_training_curves(history)
    figs.append(fig)
    ax_loss, ax_acc = panels(fig)
    assert [line.get_label() for line in ax_loss.get_lines()] == ["training"]
    np.testing.assert_allclose(ax_acc.get_lines()[0].get_ydata(), [0.4, 0.7])


def test_roc_curves_and_legend(figs, report, tmp_path):
    fig = plot_roc(report)
    figs.append(fig)
    (ax,) = panels(fig)
    assert ax.get_xlabel() == "false positive rate" and ax.get_ylabel() == "true positive rate"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    for k, name in enumerate(report.class_names):
        assert f"{name} (AUC {report.roc_auc[k]:.3f})" in texts
        line = next(line for line in ax.get_lines() if line.get_label().startswith(name))
        np.testing.assert_allclose(line.get_xdata(), report.roc_curves[k]["fpr"])
        np.testing.assert_allclose(line.get_ydata(), report.roc_curves[k]["tpr"])
    saves_png(fig, tmp_path / "roc.png")
    with pytest.raises(InputError, match="ModelReport"):
        plot_roc({"roc_auc": 1})


@pytest.mark.parametrize("normalized", [True, False])
def test_confusion_annotated_with_colorbar(figs, report, normalized):
    fig = plot_confusion(report, normalized=normalized)
    figs.append(fig)
    (ax,) = panels(fig)
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    (im,) = ax.get_images()
    expected = report.confusion_normalized if normalized else report.confusion
    np.testing.assert_allclose(np.asarray(im.get_array()), expected)
    texts = [t for t in ax.texts]
    assert len(texts) == 9
    first = texts[1].get_text().split("\n")[0]  # cell (0, 1)
    assert first == (f"{report.confusion_normalized[0, 1]:.2f}" if normalized else str(report.confusion[0, 1]))
    assert len(colorbars(fig)) == 1


def test_class_accuracy_bars(figs, report):
    fig = plot_class_accuracy(report)
    figs.append(fig)
    (ax,) = panels(fig)
    np.testing.assert_allclose([b.get_height() for b in ax.patches], report.class_accuracy)
    assert ax.get_xlabel() and ax.get_ylabel()


def test_model_report_grid(figs, report, tmp_path):
    fig = plot_model_report(report, HISTORY)
    figs.append(fig)
    axs = panels(fig)
    assert len(axs) == 5 and all(a.get_xlabel() and a.get_ylabel() for a in axs)
    assert len(colorbars(fig)) == 1
    saves_png(fig, tmp_path / "report.png")
    fig2 = plot_model_report(report)
    figs.append(fig2)
    assert len(panels(fig2)) == 3


def test_tiles_draw_the_map_in_its_colours():
    """Report tiles: the band behind a trace has the colormap's colour of the map value; over an
    image the map is a separate layer (the grey image where the map is 0, the map's colour at
    its peak, 90% opaque)."""
    import io

    import matplotlib
    from PIL import Image

    from trustmap.plot.tiles import image_tile, scale_css, signal_tile

    x = np.zeros((2, 50))
    m = np.zeros((2, 50))
    m[:, 20:30] = 1.0
    img = np.asarray(Image.open(io.BytesIO(signal_tile(x, m, "Reds", 0.0, 1.0, width=100, row_h=20, gap=4))))
    assert img.shape[:2] == (44, 100)
    red = np.array(matplotlib.colormaps["Reds"](1.0)[:3]) * 255
    white = np.array(matplotlib.colormaps["Reds"](0.0)[:3]) * 255
    np.testing.assert_allclose(img[2, 50, :3], red, atol=1)      # inside the region, above the trace
    np.testing.assert_allclose(img[2, 5, :3], white, atol=1)     # outside
    np.testing.assert_allclose(img[24 + 2, 50, :3], red, atol=1)  # second channel row
    grey = np.linspace(0, 1, 16).reshape(4, 4)
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0
    out = np.asarray(Image.open(io.BytesIO(image_tile(grey, heat, "inferno", 0.0, 1.0, size=8))))
    assert out.shape[:2] == (8, 8)
    np.testing.assert_allclose(out[0, 0, :3], [0, 0, 0], atol=1)           # grey 0, no map
    np.testing.assert_allclose(out[6, 6, :3], [255 * grey[3, 3]] * 3, atol=1)
    top = np.array(matplotlib.colormaps["inferno"](1.0)[:3])
    np.testing.assert_allclose(out[2, 4, :3], 255 * (0.1 * grey[1, 2] + 0.9 * top), atol=1.5)
    assert scale_css("Reds").startswith("linear-gradient(to right, rgb(")
