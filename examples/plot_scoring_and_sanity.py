"""
Scoring explanations and sanity checks
======================================

Two explanation maps of the same prediction can disagree; which one should you believe? This
tutorial scores explanations three ways and checks them for sanity:

* **faithfulness**: does the prediction change when the features a map ranks highest are
  removed or kept? (average drop and increase in confidence at ``frac=0.3``, deletion and
  insertion curves);
* **localization**: on a task whose discriminative region is *known*, does the map point at it?
  (pointing game, mass inside the region);
* **sanity** (Adebayo et al. 2018): does the map change when the model's weights are
  randomized, layer by layer? A map that survives randomization describes the input, not the
  model.

The task is the built-in ``synthetic-1d``: three classes that differ by a waveform at a known
place, a distractor waveform shared by all classes, correlated noise.
"""

# %%
# A model with a known answer
# ---------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import trustmap
from trustmap import datasets, metrics, plot, zoo

QUICK = os.environ.get("TRUSTMAP_DOCS_QUICK") == "1"
torch.set_num_threads(1)
torch.manual_seed(0)
N = 100 if QUICK else 300

train = datasets.load("synthetic-1d", split="train")
test = datasets.load("synthetic-1d", split="test")
print(train, "classes:", train.classes)
print("known region covers", f"{test.mask.mean():.1%}", "of each signal; distractor:", test.meta["distractor"])
net = zoo.mnist1d_cnn(n_classes=3, length=128)
zoo.Trainer(epochs=20, lr=3e-3, patience=4, progress=False).fit(net, train.X, train.y)
model = trustmap.load_model(net)
print(f"test accuracy {metrics.model_report(model, test.X, test.y).accuracy:.3f}")

# %%
# Five explanations of the same test samples, and a random map as a floor: any score should put
# the real methods clearly above it.
X, y, mask = test.X[:N], test.y[:N], test.mask[:N]
atts = {m: trustmap.explain(model, X, method=m) for m in
        ("saliency", "integrated_gradients", "gradcam", "hirescam", "guided_backprop", "occlusion")}
rng = np.random.default_rng(0)
atts["random"] = rng.random(X.shape).astype(np.float32)
fig = plot.plot_method_grid(X, {k: v for k, v in atts.items() if k != "random"}, index=0,
                            title=f"test sample 0 ({test.classes[y[0]]})")
# trustmap's plot functions return a matplotlib Figure that pyplot does not hold (a library
# opens no windows); plt.figure(fig) hands it to pyplot, so plt.show() and this page show it.
fig = plt.figure(fig)

# %%
# Faithfulness and localization in one table
# ------------------------------------------
# :func:`trustmap.evaluate` computes every metric for every method on the same samples with
# 95 % bootstrap intervals, and tests the differences between methods pairwise (paired
# permutation test, Holm-corrected). ``mask=`` is the known region; the localization metrics need it.
scores = trustmap.evaluate(model, X, y, attributions=atts, mask=mask, layout="NL",
                           metrics=["average_drop", "increase_in_confidence", "deletion", "insertion",
                                    "pointing_game", "mass_inside"],
                           n_boot=1000, n_perm=2000 if QUICK else 10000)
table, comparisons = scores.to_markdown().split("Paired comparisons")
print(table)
print(f"{len(scores.comparisons)} paired comparisons; for example:")
for metric in ("deletion", "mass_inside"):
    c = scores.comparison(metric, "integrated_gradients", "gradcam")
    print(f"  {metric}: integrated_gradients - gradcam = {c['diff']:+.3f} "
          f"[{c['low']:.3f}, {c['high']:.3f}], p (Holm) = {c['p_holm']:.4f}")
fig = plot.plot_metric_comparison(scores, metrics=["deletion", "insertion", "pointing_game", "mass_inside"])
fig = plt.figure(fig)

# %%
# Grad-CAM does *worse than the random map* here, and that is a property of Grad-CAM, not a bug:
# this CNN ends in ``Flatten`` and a dense layer, not global average pooling. Grad-CAM weights each
# channel by its gradient averaged over positions, which mixes the dense weights of every position,
# so the map can peak far from what the class score uses (Draelos & Carin 2020). HiResCAM keeps the
# gradient per position and, on such heads, is faithful to the score; the scores say so.
#
# Deletion and insertion curves
# -----------------------------
# Deletion removes the highest-ranked entries first and follows the probability of the explained
# class down (lower area is better); insertion starts from the baseline and adds them (higher is
# better). The per-method mean curves, from the same computation as the table:
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
for ax, kind in zip(axes, ("deletion", "insertion")):
    for name in atts:
        r = scores.results[name][kind]
        ax.plot(r.extras["fractions"], r.extras["mean_curve"], label=f"{name} ({r.value:.3f})",
                ls=":" if name == "random" else "-")
    ax.set_xlabel("fraction of entries " + ("removed" if kind == "deletion" else "inserted"))
    ax.set_ylabel("p(explained class)")
    ax.set_title(kind)
axes[1].legend(fontsize=7)

# %%
# The same metrics one at a time, as functions: each returns a :class:`~trustmap.metrics.MetricResult`
# with the per-sample values.
drop, inc = metrics.drop_increase(model, X, atts["gradcam"].maps, frac=0.3)
print(drop, inc)
pg = metrics.pointing_game(atts["gradcam"].maps, mask, layout="NL")
print(pg, "- share of samples whose map's maximum is inside the known region")

# %%
# Sanity check: cascading model randomization
# -------------------------------------------
# Re-initialize the layers from the output side, one more at each stage, and compare the maps with
# those of the trained model (Spearman rank correlation of absolute values). A method that depends
# on the model falls to near zero; guided backpropagation is known to stay similar (it acts
# partly as an edge detector).
sanity = {m: metrics.model_randomization(model, X[:40], m) for m in
          ("saliency", "gradcam", "guided_backprop", "integrated_gradients")}
fig, ax = plt.subplots(figsize=(7, 3.2), constrained_layout=True)
for name, s in sanity.items():
    mean, ci = s.mean("spearman"), s.ci("spearman")
    ax.plot(range(len(s.stages)), mean, marker="o", label=name)
    ax.fill_between(range(len(s.stages)), ci[:, 0], ci[:, 1], alpha=0.15)
    print(f"{name:22s} final similarity {mean[-1]:+.3f} -> {'FLAGGED' if s.flagged else 'passes'}")
ax.set_xticks(range(len(s.stages)), s.stages, rotation=30, fontsize=7)
ax.axhline(0, color="0.5", lw=0.8)
ax.set_ylabel("Spearman vs trained")
ax.set_title("cascading randomization (output layer first)")
ax.legend(fontsize=7)
plt.show()
