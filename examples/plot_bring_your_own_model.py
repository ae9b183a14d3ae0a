"""
Bring your own Keras model and unlabeled beats
==============================================

The usual situation: you have a trained Keras classifier saved as a legacy ``.h5`` file (written
by tf.keras 2.x or Keras 3) and a NumPy file of beats **without labels**. You want to know what
the model relies on, from the command line first and then from Python.

This tutorial makes such a pair of files (a small Keras CNN trained on real MIT-BIH beats, and
beats it never saw, saved without labels), then runs ``trustmap explain``, ``locate``,
``evaluate`` and ``report`` on them, and does the same in Python. Without labels, the model's
own predictions stand in for them, and every record says so.
"""

# %%
# The user's files
# ----------------
# A Keras 3 model (torch backend) trained on beats of MIT-BIH record 208, labelled N or V by
# the shape of their QRS complex (see the dnn-locate tutorial for how), saved as ``beats_cnn.h5``.
# The unlabeled beats are the rest of the record (about 300 beats), saved as ``beats.npy``, shape (N, 187).
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

import trustmap  # noqa: E402
from trustmap import datasets, plot  # noqa: E402

QUICK = os.environ.get("TRUSTMAP_DOCS_QUICK") == "1"
torch.set_num_threads(1)
keras.utils.set_random_seed(0)
workdir = tempfile.mkdtemp(prefix="trustmap-byom-")
CLASSES = "N,V"

beats = datasets.load("ecg208", split="all")
qrs = beats.X[:, 11:51]
cluster = KMeans(2, n_init=10, random_state=0).fit_predict(qrs)
wide = int(np.argmax([(qrs[cluster == k] > 0.5).sum(1).mean() for k in range(2)]))
labels = (cluster == wide).astype(int)  # 1 = V (wide QRS)
seen = beats.per_sample["r_time_s"] < 100  # the model trains on the first 100 s

inp = keras.Input(shape=(187, 1), name="beat")
h = keras.layers.Conv1D(16, 5, padding="same", activation="relu", name="conv1")(inp)
h = keras.layers.Conv1D(16, 3, padding="same", activation="relu", name="conv2")(h)
h = keras.layers.MaxPooling1D(2, name="pool")(h)
h = keras.layers.Flatten(name="flatten")(h)
out = keras.layers.Dense(2, activation="softmax", name="out")(h)
user_net = keras.Model(inp, out, name="beats_cnn")
user_net.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
user_net.fit(beats.X[seen, :, None], labels[seen], epochs=20 if QUICK else 40, batch_size=32, verbose=0)
model_path = os.path.join(workdir, "beats_cnn.h5")
user_net.save(model_path)  # the legacy HDF5 format
data_path = os.path.join(workdir, "beats.npy")
np.save(data_path, beats.X[~seen])  # no labels
print(f"{model_path}: {os.path.getsize(model_path) / 1024:.0f} KiB")
print(f"{data_path}: {np.load(data_path).shape} float32, unlabeled")

# %%
# From the command line
# ---------------------
# Four commands on the same file (``evaluate`` scores folders made on the same samples; it refuses
# folders that cover different ones, e.g. one made with ``--n``): explain (Grad-CAM and LIME), locate (the TRUST localizer, fitted on
# these beats with the model's predictions as labels), evaluate (scores the explanations) and
# report (one self-contained HTML file). ``--classes N,V`` names the model's outputs in
# class-index order; every plot and table uses the names. Here the commands run through
# ``subprocess``, exactly as you would type them.


def trustmap_cli(*args):
    cmd = [sys.executable, "-m", "trustmap.cli", *args]
    print("$ trustmap " + " ".join(a if " " not in a else repr(a) for a in args))
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    print(res.stdout.strip())
    if res.stderr.strip():
        print("stderr:", res.stderr.strip())
    print("exit code", res.returncode)
    return res


EPOCHS = 30 if QUICK else 60
TAUS = "1,2,4,8,16,32,48"  # up to a quarter of the 187 samples: a wide QRS alone spans about 25
trustmap_cli("explain", "--model", "beats_cnn.h5", "--data", "beats.npy", "--classes", CLASSES,
             "--method", "gradcam,lime", "--param", "gradcam.per_channel=true",
             "--param", f"lime.n_samples={100 if QUICK else 1000}", "--quiet", "--out", "runs/ex")
trustmap_cli("locate", "--model", "beats_cnn.h5", "--data", "beats.npy", "--classes", CLASSES,
             "--tau", TAUS, "--epochs", str(EPOCHS), "--quiet", "--out", "runs/loc")
trustmap_cli("evaluate", "--model", "beats_cnn.h5", "--data", "beats.npy", "--classes", CLASSES,
             "--explanations", "runs/ex", "runs/loc", "--quiet", "--out", "runs/ev")
res = trustmap_cli("report", "runs/ex", "runs/loc", "runs/ev", "--quiet")
report = os.path.join(workdir, "runs", "ex", "report.html")
print("report:", report, f"({os.path.getsize(report) / 1e6:.1f} MB, self-contained)")

# %%
# Every run folder holds a ``run.json`` record. Without labels, it says where the labels came
# from (``predictions``) and which names the classes have:
import json  # noqa: E402

with open(os.path.join(workdir, "runs", "loc", "run.json")) as f:
    record = json.load(f)
print(json.dumps({k: record[k] for k in ("command", "data") if k in record}, indent=1)[:1500])
print(sorted(os.listdir(os.path.join(workdir, "runs", "loc"))))

# %%
# From Python
# -----------
# The same steps in the library. :func:`trustmap.load_model` reads the ``.h5`` file (Keras'
# safe mode on; ``compile=False``), :func:`trustmap.datasets.read` the ``.npy`` (layout guessed
# as ``(N, L)``: 187 samples of one channel). The class names go to the plots.
model = trustmap.load_model(model_path)
data = datasets.read(data_path)
names = CLASSES.split(",")
print(model.framework, "model with", model.n_classes, "classes;", data)
X = data.X
pred = model.predict(X)
print("predicted:", {names[k]: int((pred == k).sum()) for k in range(2)})
cam = trustmap.explain(model, X, method="gradcam")
i = int(np.flatnonzero(pred == 1)[0])
fig = plot.plot_attribution(cam, X, index=i, class_names=names)
# trustmap's plot functions return a matplotlib Figure that pyplot does not hold (a library
# opens no windows); plt.figure(fig) hands it to pyplot, so plt.show() and this page show it.
fig = plt.figure(fig)

# %%
# The localizer without labels: ``y`` left out, the classifier's predictions are the labels, so
# the R² measures how much of *the model's decision* the located features carry (not how
# accurate the model is). With a few hundred beats the localizer's calibration and held-out splits
# hold about 60 beats each: most beats are predicted with a probability near 1, so a handful of
# beats carry the whole masked risk, and the bootstrap intervals are wide. When they are too wide to
# tell the τ values on the path apart, the localizer takes the smallest τ and says so in a warning.
# With thousands of beats of your own the intervals narrow and the choice sharpens.
taus = [float(v) for v in TAUS.split(",")]
loc = trustmap.Localizer(tau=taus, epochs=EPOCHS, seed=0, n_boot=1000).fit(model, data.X)
print("labels from:", loc.labels_source_)
print(f"τ = {loc.tau_:.3g}; R² = {loc.r2_.estimate:.3f} [{loc.r2_ci_[0]:.3f}, {loc.r2_ci_[1]:.3f}]")
print(loc.r2_meaning_)
fig = loc.da_plot(data.X, n_per_class=3, fs=125)
fig = plt.figure(fig)
fig.suptitle("located regions, grouped by the predicted class (0 = N, 1 = V)", fontsize=9)
plt.show()
