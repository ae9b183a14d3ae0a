"""
The Keras MNIST saliency notebook, on Keras 3
=============================================

A classic Keras notebook trained the Keras MNIST CNN (two 3 x 3 convolutions, max pooling,
dropout, a dense layer) and looked inside it with ``keras-vis``: activation maximization for each
class and for a unit of a hidden layer, guided-backprop saliency, class-average saliency, and the
first layer's filters. ``keras-vis`` needs TensorFlow 1; this tutorial does the same on Keras 3
with the torch backend, with trustmap doing the explaining.

The images are scikit-learn's 8 x 8 handwritten digits (1,797 images, shipped with
scikit-learn), so everything runs offline in a few seconds; the network is the notebook's,
sized for 8 x 8 inputs (:func:`trustmap.zoo.keras_mnist2d_cnn`).
"""

# %%
# Model and summary
# -----------------
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import trustmap  # noqa: E402
from trustmap import datasets, metrics, plot, zoo  # noqa: E402
from trustmap.explain import class_average  # noqa: E402

QUICK = os.environ.get("TRUSTMAP_DOCS_QUICK") == "1"
torch.set_num_threads(1)
keras.utils.set_random_seed(0)

train = datasets.load("digits", split="train")
test = datasets.load("digits", split="test")
print(train, test, sep="\n")
net = zoo.keras_mnist2d_cnn(in_channels=1, size=8, n_classes=10)
net.summary()

# %%
# Train with Keras as usual (channels-last ``(N, 8, 8, 1)``), then hand the model to trustmap as it
# is: :func:`trustmap.load_model` wraps it without changing it.
net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
net.fit(train.X[..., None], train.y, epochs=15 if QUICK else 40, batch_size=32, verbose=0,
        validation_split=0.1)
model = trustmap.load_model(net)
report = metrics.model_report(model, test.X, test.y, class_names=test.classes)
print(f"test accuracy {report.accuracy:.3f}")
print("layers:", [(layer.name, layer.kind) for layer in model.layers()])

# %%
# Activation maximization: the classes
# ------------------------------------
# For each class, gradient ascent on the input from noise maximizes the class's pre-softmax
# score, with L2 and total-variation penalties keeping the image smooth
# (``method="activation_max"``). The result is what the network "thinks" a digit looks like.
start = np.repeat(test.X[:1], 10, axis=0)  # sets the shape and value range of the synthesized inputs
am = trustmap.explain(model, start, method="activation_max", target=np.arange(10),
                      n_steps=100 if QUICK else 300, seed=0)
print("score before/after:", np.round(am.extras["start_score"], 1), np.round(am.extras["score"], 1))
print("predicted class of each synthesized image:", model.predict(am.maps))
fig, axes = plt.subplots(1, 10, figsize=(12, 1.6), constrained_layout=True)
for k, ax in enumerate(axes):
    ax.imshow(am.maps[k], cmap="gray")
    ax.set_title(f"class {k}", fontsize=8)
    ax.axis("off")

# %%
# Activation maximization: a unit of a hidden layer
# -------------------------------------------------
# With ``layer=``, the target is a channel of that layer (here the dense layer ``fc1``, 128 units):
# the images that excite four of its units most.
units = np.array([0, 1, 2, 3])
am_unit = trustmap.explain(model, start[:4], method="activation_max", layer="fc1", target=units,
                           n_steps=100 if QUICK else 300, seed=0)
fig, axes = plt.subplots(1, 4, figsize=(6, 1.8), constrained_layout=True)
for ax, u, img in zip(axes, units, am_unit.maps):
    ax.imshow(img, cmap="gray")
    ax.set_title(f"fc1 unit {u}", fontsize=8)
    ax.axis("off")

# %%
# Guided-backprop saliency
# ------------------------
# Guided backpropagation passes only positive gradients through positive activations. Keras fuses
# the ReLU into the convolution and dense layers; trustmap applies the guided rule to those fused
# activations too, without editing the model.
X = test.X[:8]
gb = trustmap.explain(model, X, method="guided_backprop")
sal = trustmap.explain(model, X, method="saliency")
fig = plot.plot_image_maps(X, {"guided backprop": gb, "saliency": sal}, index=0)
# trustmap's plot functions return a matplotlib Figure that pyplot does not hold (a library
# opens no windows); plt.figure(fig) hands it to pyplot, so plt.show() and this page show it.
fig = plt.figure(fig)
fig, axes = plt.subplots(2, 8, figsize=(12, 3.2), constrained_layout=True)
for i in range(8):
    axes[0, i].imshow(X[i], cmap="gray")
    axes[0, i].set_title(f"pred {gb.targets[i]}", fontsize=8)
    axes[1, i].imshow(gb.maps[i], cmap="RdBu_r", vmin=-abs(gb.maps[i]).max(), vmax=abs(gb.maps[i]).max())
for ax in axes.ravel():
    ax.axis("off")

# %%
# Class-average saliency with SEM and marginal plots
# --------------------------------------------------
# :func:`trustmap.explain.class_average` explains up to ``n_per_class`` correctly classified test
# images of each class for their own class and averages the maps, with the standard error of the
# mean and a bootstrap interval per pixel.
avg = class_average(model, test.X, test.y, method="saliency", n_per_class=40 if QUICK else 100,
                    correct_only=True, seed=0)
print("maps:", avg.maps.shape, "images per class:", avg.extras["n"])
sem_share = (avg.extras["sem"] / np.maximum(avg.maps, 1e-12)).mean(axis=(1, 2))
print("mean SEM / mean, per class:", np.round(sem_share, 2))

# %%
# The figure draws, for each class, the mean map and its marginal plots: the mean map summed over
# rows (top) and over columns (right), each with its 95 % bootstrap band.
sal_all = trustmap.explain(model, test.X, method="saliency", target=test.y)
fig = plot.plot_class_average(sal_all, test.y, classes=[0, 1, 3, 8], class_names=test.classes,
                              n_boot=500)
fig = plt.figure(fig)

# %%
# The same marginal (summed over rows) with ± 1 SEM bands, for two classes side by side. Saliency
# is where a change of the pixels would change the class score most, not where the ink is: for a 0
# it peaks in the empty centre (ink there would make it another digit), for a 1 it is spread over
# the middle columns around the stroke.
fig, ax = plt.subplots(figsize=(5, 2.6), constrained_layout=True)
for k in (0, 1):
    rows = sal_all.maps[(test.y == k)].sum(axis=1)  # (n, 8): each image's saliency per column
    mean, sem = rows.mean(0), rows.std(0, ddof=1) / np.sqrt(len(rows))
    ax.plot(mean, marker="o", label=f"class {k} (n={len(rows)})")
    ax.fill_between(range(8), mean - sem, mean + sem, alpha=0.3)
ax.set_xlabel("column")
ax.set_ylabel("saliency summed over rows")
ax.legend(fontsize=8)

# %%
# First-layer filters
# -------------------
# The 32 learned 3 x 3 kernels of ``conv1``, read from the Keras layer.
kernels = net.get_layer("conv1").get_weights()[0]  # (3, 3, 1, 32)
print("conv1 kernels:", kernels.shape)
fig, axes = plt.subplots(4, 8, figsize=(8, 4.2), constrained_layout=True)
v = np.abs(kernels).max()
for j, ax in enumerate(axes.ravel()):
    ax.imshow(kernels[:, :, 0, j], cmap="RdBu_r", vmin=-v, vmax=v)
    ax.set_title(str(j), fontsize=7)
    ax.axis("off")
plt.show()
