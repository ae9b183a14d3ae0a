"""
The course report's protocol on MNIST-1D
========================================

A course report explained a small 1D CNN trained on MNIST-1D (Greydanus 2020: ten digit-like
templates, 40 samples long, shifted, scaled, sheared and noised) with four methods and two
scores. This tutorial runs the whole protocol with trustmap:

1. train the report's CNN (13,960 parameters) and write its **model report** (accuracy,
   per-class accuracy, ROC-AUC, confusion);
2. explain test samples with **Grad-CAM**, **Grad-CAM++**, **LIME** and **Ablation-CAM**;
3. score each method with the **average drop** and the **increase in confidence** when only the
   top 30 % of the map is kept (``frac=0.3``), with bootstrap intervals;
4. look at a **success and a failure gallery** (confident right and confident wrong predictions);
5. turn CAMs into **thresholded masks** and look at what the model kept.

Everything runs on CPU in about a minute; the MNIST-1D data are generated offline by the
``mnist1d`` package.
"""

# %%
# Setup
# -----
# One thread and fixed seeds make the numbers on this page reproducible. ``TRUSTMAP_DOCS_QUICK=1``
# (used by the documentation test) shrinks the sizes.
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import trustmap
from trustmap import datasets, metrics, plot, zoo

QUICK = os.environ.get("TRUSTMAP_DOCS_QUICK") == "1"
torch.set_num_threads(1)
torch.manual_seed(0)
N_EXPLAIN = 120 if QUICK else 400
LIME_SAMPLES = 200 if QUICK else 1000

train = datasets.load("mnist1d", split="train")
test = datasets.load("mnist1d", split="test")
print(train)
print(test)

# %%
# Train the report's CNN
# ----------------------
# :func:`trustmap.zoo.mnist1d_cnn` is the report's network (three 'same' 1D convolutions with
# 25 channels, then a linear layer). :class:`trustmap.zoo.Trainer` holds out 10 % of the training
# set for early stopping and halves the learning rate on plateaus (``zoo.RECIPES``).
net = zoo.mnist1d_cnn()
print(net)
print("parameters:", zoo.n_parameters(net))
history = zoo.Trainer(**zoo.RECIPES["mnist1d_cnn"], progress=False).fit(net, train.X, train.y)
print(f"best epoch {history.best_epoch} of {len(history.train_loss)}")
model = trustmap.load_model(net)

# %%
# Model report
# ------------
# Numbers on the test split: the model has never seen these samples.
report = metrics.model_report(model, test.X, test.y, class_names=test.classes)
print(f"test accuracy {report.accuracy:.3f}, macro ROC-AUC {report.macro_roc_auc:.3f}")
for name, acc, f1 in zip(report.class_names, report.class_accuracy, report.f1):
    print(f"  class {name}: accuracy {acc:.3f}  F1 {f1:.3f}")
fig = plot.plot_model_report(report, history)
# trustmap's plot functions return a matplotlib Figure that pyplot does not hold (a library
# opens no windows); plt.figure(fig) hands it to pyplot, so plt.show() and this page show it.
fig = plt.figure(fig)

# %%
# Four explanations of the same samples
# -------------------------------------
# Every method explains the predicted class and returns an :class:`~trustmap.Attribution`
# whose maps have the input's shape ``(N, 40)``: CAMs are upsampled from the last convolution
# (``model.default_layer()``) to the input's length.
X = test.X[:N_EXPLAIN]
y = test.y[:N_EXPLAIN]
print("explained layer:", model.default_layer())
atts = {
    "gradcam": trustmap.explain(model, X, method="gradcam"),
    "gradcam_pp": trustmap.explain(model, X, method="gradcam_pp"),
    "lime": trustmap.explain(model, X, method="lime", n_samples=LIME_SAMPLES, segment_size=4),
    "ablationcam": trustmap.explain(model, X, method="ablationcam"),
}
for name, a in atts.items():
    print(f"{name:12s} maps {a.maps.shape}, targets {a.targets[:8]}")
fig = plot.plot_method_grid(X, atts, index=0,
                            title=f"test sample 0, label {y[0]}")
fig = plt.figure(fig)

# %%
# Drop and increase at ``frac = 0.3``
# -----------------------------------
# The report's two scores: keep the top 30 % of each map (the rest set to the baseline, zero) and
# look at the probability of the explained class. *Average drop* is the mean relative loss of
# probability (lower is better); *increase in confidence* is the share of samples whose
# probability went up (higher is better); both in percent, as in the report (Chattopadhay et al. 2018). :func:`trustmap.evaluate` adds 95 % bootstrap intervals
# and paired comparisons between the methods.
scores = trustmap.evaluate(model, X, y, attributions=atts,
                           metrics=["average_drop", "increase_in_confidence"], frac=0.3,
                           n_boot=1000 if QUICK else 2000)
print(scores.to_markdown())
for name in atts:
    lo, hi = scores.interval(name, "average_drop")
    print(f"{name:12s} average drop {scores.value(name, 'average_drop'):.1f} % [{lo:.1f}, {hi:.1f}]")
fig = plot.plot_metric_comparison(scores)
fig = plt.figure(fig)

# %%
# Success and failure galleries
# -----------------------------
# :func:`~trustmap.plot.select_gallery` picks four rows: the most and the least confident right
# predictions ("success") and the most and the least confident wrong ones ("failure"); the
# Grad-CAM band behind each trace shows what the model used. Confident successes have one sharp
# peak on the template's defining stroke; failures spread the map over several places.
probs = model.probs(X)
pred = probs.argmax(1)
conf = probs.max(1)
picks = plot.select_gallery(y, pred, conf, n=4)
print({k: v.tolist() for k, v in picks.items()})
fig = plot.plot_gallery(X, atts["gradcam"], picks, y_true=y, y_pred=pred, confidence=conf,
                        class_names=test.classes, title="Grad-CAM: success and failure")
fig = plt.figure(fig)

# %%
# Thresholded CAM masks
# ---------------------
# The report turned each Grad-CAM map into a binary mask (entries above half of the sample's
# maximum) and looked at the signal kept. Red spans are the mask; the grey trace is the input.
cam = atts["gradcam"].maps
mask = cam >= 0.5 * cam.max(axis=1, keepdims=True)
print(f"the mask covers {mask.mean():.1%} of each signal on average")
fig, axes = plt.subplots(2, 4, figsize=(11, 4), sharex=True, constrained_layout=True)
for ax, i in zip(axes.ravel(), range(8)):
    ax.plot(X[i], color="0.4", lw=1)
    lo, hi = X[i].min(), X[i].max()
    ax.bar(np.arange(X.shape[1]), np.where(mask[i], hi - lo, 0.0), bottom=lo, width=1.0, color="tab:red",
           alpha=0.25)
    ax.set_title(f"label {y[i]}, predicted {pred[i]}", fontsize=8)
fig.suptitle("Grad-CAM >= 0.5 x max")

# %%
# The same masks, scored: keeping only the masked part should keep the prediction, removing it
# should lose it. The probability of the predicted class under each:
p_clean = conf
p_keep = model.probs(np.where(mask, X, 0.0))[np.arange(len(X)), pred]
p_remove = model.probs(np.where(mask, 0.0, X))[np.arange(len(X)), pred]
print(f"p(predicted): clean {p_clean.mean():.3f}, mask kept {p_keep.mean():.3f}, "
      f"mask removed {p_remove.mean():.3f}")
plt.show()
