"""
Grad-CAM per lead on a 12-lead Keras ECG model
==============================================

A StackOverflow question asked: *"I have a Keras CNN on 12-lead ECGs of shape (250, 12). Grad-CAM
gives me one heatmap of length 250. How do I get one heatmap per lead, (250, 12)?"* It had no
answer. A CAM has one value per time step, because the last convolution mixes all leads; to
say *which lead* carries the evidence, trustmap's ``per_channel=True`` splits the CAM value at
each time step among the leads in proportion to ``|gradient × input|`` there, so the twelve lead
maps add up to the ordinary Grad-CAM.

To check the answer we need data where we *know* which lead matters: the built-in
``synthetic-1d-12ch`` task has 12 correlated-noise leads, three classes that differ by a
waveform (bump, square, triangle) drawn **only on lead 5 (index 4, aVL)**, and a distractor
waveform shared by all classes. A good per-lead map puts its mass on that lead, at the waveform.
"""

# %%
# Data and a Keras model
# ----------------------
# The data come channels-last, ``(N, 250, 12)``, as a Keras user has them. The model is a small
# Keras 3 CNN (Conv-BN-ReLU blocks, max pooling, global max pooling), trained on
# the torch backend and saved as a ``.keras`` file, then loaded back with
# :func:`trustmap.load_model`, as you would load yours.
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import trustmap  # noqa: E402
from trustmap import datasets, metrics, plot  # noqa: E402

QUICK = os.environ.get("TRUSTMAP_DOCS_QUICK") == "1"
torch.set_num_threads(1)
keras.utils.set_random_seed(0)
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]

train = datasets.load("synthetic-1d-12ch", split="train", layout="NLC", n_train=600 if QUICK else 1000)
test = datasets.load("synthetic-1d-12ch", split="test", layout="NLC", n_test=150 if QUICK else 500)
print(train)
print("classes:", train.classes)
print("informative lead(s):", [LEADS[c] for c in np.flatnonzero(train.mask.any(axis=(0, 1)))])


def lead_block(x, filters, kernel, name):
    x = keras.layers.Conv1D(filters, kernel, padding="same", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.8, name=f"{name}_bn")(x)  # few steps: faster moving stats
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


inp = keras.Input(shape=(250, 12), name="ecg")
h = lead_block(inp, 32, 9, "b1")
h = keras.layers.MaxPooling1D(2, name="pool1")(h)
h = lead_block(h, 32, 5, "b2")
h = keras.layers.MaxPooling1D(2, name="pool2")(h)
h = lead_block(h, 64, 3, "b3")
h = keras.layers.GlobalMaxPooling1D(name="gmp")(h)
out = keras.layers.Dense(3, activation="softmax", name="out")(h)
net = keras.Model(inp, out, name="ecg12")
net.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
net.fit(train.X, train.y, epochs=8 if QUICK else 20, batch_size=32, verbose=0)

workdir = tempfile.mkdtemp(prefix="trustmap-ecg12-")
path = os.path.join(workdir, "ecg12.keras")
net.save(path)
model = trustmap.load_model(path)
print(f"saved and reloaded {path}; {model.framework} model, {model.n_classes} classes")
report = metrics.model_report(model, test.X, test.y, class_names=test.classes)
print(f"test accuracy {report.accuracy:.3f}")
print("layers:", [layer.name for layer in model.layers()])
print("Grad-CAM layer (the last convolution, after its BatchNorm and ReLU; 62 steps, upsampled to 250):", model.default_layer())

# %%
# Grad-CAM: one map for all leads
# -------------------------------
# The ordinary Grad-CAM has one value per time step. trustmap gives it back in the input's shape
# (every lead gets the same map), which is exactly what the question's author saw.
X = test.X
cam = trustmap.explain(model, X, method="gradcam")
print("maps:", cam.maps.shape, "- identical across leads:", bool(np.allclose(cam.maps, cam.maps[..., :1])))

# %%
# Grad-CAM per lead
# -----------------
# ``per_channel=True`` gives the answer the question asked for: one map per lead, ``(N, 250, 12)``,
# summing over the leads to the map above.
per_lead = trustmap.explain(model, X, method="gradcam", per_channel=True)
print("per-lead maps:", per_lead.maps.shape)
print("lead maps sum to Grad-CAM:", bool(np.allclose(per_lead.maps.sum(-1), cam.maps[..., 0], atol=1e-5)))
i = int(np.flatnonzero(test.y == 0)[0])
fig = plot.plot_attribution(per_lead, X, index=i, channel_names=LEADS, class_names=test.classes)
# trustmap's plot functions return a matplotlib Figure that pyplot does not hold (a library
# opens no windows); plt.figure(fig) hands it to pyplot, so plt.show() and this page show it.
fig = plt.figure(fig)
fig.suptitle(f"Grad-CAM per lead, test sample {i} (class {test.classes[test.y[i]]})")

# %%
# One heatmap per lead, as an image
# ---------------------------------
# Leads in rows, time in columns, for one sample of each class. The mass sits on aVL, where the
# class waveform is; the known region is outlined.
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True, constrained_layout=True)
for k, ax in enumerate(axes):
    j = int(np.flatnonzero((test.y == k) & (per_lead.targets == k))[0])
    ax.imshow(per_lead.maps[j].T, aspect="auto", cmap="Reds", interpolation="nearest")
    ax.contour(test.mask[j].T, levels=[0.5], colors="k", linewidths=0.8)
    ax.set_title(f"sample {j}: {test.classes[k]}", fontsize=9)
    ax.set_xlabel("time step")
axes[0].set_yticks(range(12), LEADS)

# %%
# For the bump and the square the evidence is a sharp spot on aVL, at the waveform. For the triangle
# the map is diffuse: with three classes the model can call a signal "triangle" when it finds
# neither a bump nor a square, and the absence of something has no place a heatmap can point at.
# The per-class numbers below show the same.
#
# How much of each map is on the right lead?
# ------------------------------------------
# The share of each map's mass per lead, averaged over the test set, and the share inside the
# known region (:func:`trustmap.metrics.mass_inside`). With one map for all leads exactly 1/12 of
# the mass is on aVL; per lead, aVL gets several times the share of any other lead, and the mass
# inside the known region grows accordingly. The rest is spread thinly over the other leads:
# gradient × input is never exactly zero on a noisy lead.
share = per_lead.maps.sum(axis=1) / per_lead.maps.sum(axis=(1, 2))[:, None]
for name, s in zip(LEADS, share.mean(0)):
    print(f"  {name:4s} {s:6.1%}")
inside_cam = metrics.mass_inside(cam.maps, test.mask, layout="NLC")
inside_lead = metrics.mass_inside(per_lead.maps, test.mask, layout="NLC")
print(f"mass inside the known region: Grad-CAM {inside_cam.value:.3f}, per lead {inside_lead.value:.3f}")
for k, name in enumerate(test.classes):
    print(f"  class {name}: per-lead mass inside {np.nanmean(inside_lead.per_sample[test.y == k]):.3f}")
fig, ax = plt.subplots(figsize=(6, 2.5), constrained_layout=True)
ax.bar(LEADS, share.mean(0), color=["tab:red" if n == "aVL" else "0.6" for n in LEADS])
ax.set_ylabel("share of the map")
ax.set_title("per-lead Grad-CAM: mass per lead (test mean)")
plt.show()
