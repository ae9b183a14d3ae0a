"""The real dnn-locate 0.2 beside trustmap's Localizer, on one Keras classifier, in one command.

    make dnnlocate-env                                   # .venv-tf: TensorFlow 2.21 (CPU) + tf-keras + dnn-locate 0.2
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_dnnlocate.py --tf-python .venv-tf/bin/python
    ... --quick                                          # a smoke run (small data, few epochs)

(``make bench-dnnlocate`` does both.) Per seed:

1. the distractor task of ``bench_localizer.py`` (``trustmap.localizer.tasks.distractor_task``:
   187-sample signals, a distractor bump every signal shares near t = 30, the class bump near
   t = 100 in class 1, 3 % label noise) is drawn in this process: signals to train the classifier
   on, signals to fit the localizers on, validation signals, 1000 test signals — the localizers
   never see the classifier's training signals;
2. in the TensorFlow venv (a subprocess: TensorFlow and torch never share a process) one Keras
   classifier is trained with tf.keras 2 (``tf_keras``, the Keras dnn-locate was written for; the
   small CNN of bench_localizer: Conv1D 8 → pool → Conv1D 16 → pool → Dense 2, softmax) and saved
   as ``.h5``; then dnn-locate's own ``loc_model.fit`` runs on it with the settings of the authors'
   ECG script (``ECG_loc.py`` of github.com/statmlben/dnn-locate, the same 187-sample beats): their
   Conv/ConvTranspose localizer, τ = 10, up to 200 epochs, batch 128, Adam(1e-3),
   ReduceLROnPlateau(0.382, patience 3) and EarlyStopping(patience 10, best weights), target R²
   'auto', r_metric 'acc'; its R² on the validation signals (``X_test``);
3. here the same ``.h5`` file is loaded by trustmap (Keras 3 on the torch backend, ``safe_mode``
   on) and ``Localizer()`` with its defaults is fitted on the same signals (validation signals:
   calibration and held-out halves).

Both fits run on one thread (``OMP_NUM_THREADS=1``; TensorFlow's intra- and inter-op pools set to 1).
The masks of both on the 1000 test signals are scored by the same code (``window_mass``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: dnn-locate's settings, from the authors' ECG script (ECG_loc.py, statmlben/dnn-locate)
DL_SETTINGS = {"tau_range": [10.0], "epochs": 200, "batch_size": 128, "lr": 1e-3, "target_r_square": "auto",
               "r_metric": "acc", "plateau": {"factor": 0.382, "patience": 3, "min_lr": 1e-6},
               "early_stopping": {"min_delta": 1e-4, "patience": 10, "restore_best_weights": True}}
#: the classifier, trained once per seed in the TF venv (as bench_localizer's torch CNN)
CLF_SETTINGS = {"epochs": 8, "batch_size": 64, "lr": 3e-3}


# ---------------------------------------------------------------------------------------------
# the TensorFlow side (run by the TF venv's python: no torch, no trustmap here)
# ---------------------------------------------------------------------------------------------
def tf_worker(work: Path) -> int:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"   # tf.keras = tf_keras (Keras 2), what dnn-locate 0.2 is written for
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras = tf.keras
    cfg = json.loads((work / "config.json").read_text())
    seed, dl = int(cfg["seed"]), cfg["dl"]
    keras.utils.set_random_seed(seed)   # python, numpy (dnn-locate's label permutation) and TF
    d = np.load(work / "data.npz")
    one_hot = lambda y: np.eye(2, dtype=np.float32)[y]  # noqa: E731
    L = d["clf_X"].shape[1]

    # --- the classifier (not timed against anything) ---
    clf = keras.Sequential([
        keras.layers.Input(shape=(L, 1)),
        keras.layers.Conv1D(8, 7, padding="same", activation="relu"), keras.layers.MaxPooling1D(2),
        keras.layers.Conv1D(16, 7, padding="same", activation="relu"), keras.layers.MaxPooling1D(2),
        keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    c = cfg["clf"]
    clf.compile(optimizer=keras.optimizers.Adam(learning_rate=c["lr"]), loss="categorical_crossentropy",
                metrics=["accuracy"])
    t0 = time.perf_counter()
    clf.fit(d["clf_X"], one_hot(d["clf_y"]), epochs=c["epochs"], batch_size=c["batch_size"], verbose=0)
    clf_s = time.perf_counter() - t0
    clf.save(work / "classifier.h5")
    probs_test = clf.predict(d["test_X"], verbose=0)
    np.save(work / "tf_probs_test.npy", probs_test)

    # --- dnn-locate, as the authors' ECG script runs it ---
    import dnn_locate
    from dnn_locate import loc_model
    layers = keras.layers
    backend = keras.Sequential([
        layers.Input(shape=(L, 1)),
        layers.Conv1D(filters=32, kernel_size=5, padding="same", strides=1, activation="relu"),
        layers.Dropout(rate=0.2),
        layers.Conv1D(filters=16, kernel_size=5, padding="same", strides=1, activation="relu"),
        layers.Conv1DTranspose(filters=16, kernel_size=5, padding="same", strides=1, activation="relu"),
        layers.Dropout(rate=0.2),
        layers.Conv1DTranspose(filters=32, kernel_size=5, padding="same", strides=1, activation="relu"),
        layers.Conv1DTranspose(filters=1, kernel_size=5, padding="same")])

    class Epochs(keras.callbacks.Callback):
        """Counts the epochs of each τ's fit (dnn-locate keeps no history)."""

        def __init__(self):
            super().__init__()
            self.per_tau = []

        def on_train_begin(self, logs=None):
            self.per_tau.append(0)

        def on_epoch_end(self, epoch, logs=None):
            self.per_tau[-1] += 1

    counter = Epochs()
    pl, es = dl["plateau"], dl["early_stopping"]
    fit_params = {"callbacks": [keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="min", verbose=0, **pl),
                                keras.callbacks.EarlyStopping(monitor="loss", mode="min", verbose=0, **es), counter],
                  "epochs": dl["epochs"], "batch_size": dl["batch_size"], "verbose": 0}
    cue = loc_model(input_shape=(L, 1), localizer_backend=backend, discriminator=clf,
                    target_r_square=dl["target_r_square"], r_metric=dl["r_metric"], tau_range=dl["tau_range"])
    # the optimizer of the script's era (TF 2.7): the pre-2.11 Adam, kept in tf.keras as optimizers.legacy
    opt = keras.optimizers.legacy.Adam(learning_rate=dl["lr"])
    Ytr, Yval = one_hot(d["train_y"]), one_hot(d["val_y"])
    t0 = time.perf_counter()
    cue.fit(X_train=d["train_X"], y_train=Ytr, fit_params=fit_params, X_test=d["val_X"], y_test=Yval, optimizer=opt)
    fit_s = time.perf_counter() - t0
    masks = cue.locate(d["test_X"])                     # dnn-locate's own δ(x) = -(x_noise - x) / (x + 1e-7)
    np.save(work / "dl_masks_test.npy", np.asarray(masks, dtype=np.float32))
    r2 = [float(v) for v in np.atleast_1d(cue.r_square)]
    out = {"tf": tf.__version__, "tf_keras": __import__("tf_keras").__version__, "dnn_locate": getattr(dnn_locate, "__version__", "0.2"),
           "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
           "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
           "clf_seconds": clf_s, "clf_test_acc": float((probs_test.argmax(1) == d["test_y"]).mean()),
           "fit_seconds": fit_s, "epochs_per_tau": counter.per_tau, "r2_path": r2,
           "tau": float(dl["tau_range"][len(r2) - 1]), "target": float(cue.target_r_square),
           "reached": bool(r2[-1] >= float(cue.target_r_square))}
    (work / "tf_result.json").write_text(json.dumps(out, indent=1))
    return 0


# ---------------------------------------------------------------------------------------------
# this side (trustmap's venv)
# ---------------------------------------------------------------------------------------------
def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def common_r2(model, X, y, masks) -> float:
    """dnn-locate's R² ('acc', zero fill: x ⊙ (1 − δ)) computed by one code for both tools' masks."""
    import numpy as np

    acc_base = float((model.predict(X) == y).mean())
    removed = X * (1.0 - masks.reshape(X.shape))
    acc_noise = float((model.predict(removed) == y).mean())
    return 1.0 - (1.0 - acc_base) / max(1.0 - acc_noise, 1e-12)


def quality(masks, test) -> dict:
    import numpy as np

    from trustmap.localizer.tasks import window_mass

    ones = np.flatnonzero(test.y_clean == 1)
    m = masks[ones]
    w = window_mass(m, test.centers[ones], 10)
    dd = window_mass(m, test.distractor[ones], 10)
    return {"mass": float(w["mass"].mean()), "argmax": float(w["argmax"].mean()), "dist": float(dd["mass"].mean()),
            "total": float(w["total"].mean())}


def run_seed(seed: int, sizes: dict, dl: dict, tf_python: str, work: Path) -> dict:
    import numpy as np
    import torch

    from trustmap import Localizer, load_model
    from trustmap.localizer.tasks import distractor_task

    work.mkdir(parents=True, exist_ok=True)
    clf_data = distractor_task(sizes["clf"], seed=seed + 200)
    train = distractor_task(sizes["train"], seed=seed)
    val = distractor_task(sizes["val"], seed=seed + 50)
    test = distractor_task(1000, seed=seed + 100)
    nlc = lambda t: np.ascontiguousarray(t.X.transpose(0, 2, 1))  # noqa: E731  (N, 187, 1): Keras' layout
    np.savez(work / "data.npz", clf_X=nlc(clf_data), clf_y=clf_data.y, train_X=nlc(train), train_y=train.y,
             val_X=nlc(val), val_y=val.y, test_X=nlc(test), test_y=test.y)
    (work / "config.json").write_text(json.dumps({"seed": seed, "dl": dl, "clf": CLF_SETTINGS}))
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    env.pop("KERAS_BACKEND", None)   # ours is 'torch'; the TF side runs tf.keras
    load_before_tf = load_avg()
    with open(work / "tf_log.txt", "w") as log:
        rc = subprocess.run([tf_python, str(Path(__file__).resolve()), "--tf-worker", str(work)], env=env,
                            stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = (work / "tf_log.txt").read_text()[-3000:]
        raise RuntimeError(f"the TensorFlow side failed (exit {rc}); the end of {work / 'tf_log.txt'}:\n{tail}")
    tfr = json.loads((work / "tf_result.json").read_text())
    tfr["load"] = f"{load_before_tf} → {load_avg()}"

    # --- trustmap on the same file ---
    torch.set_num_threads(1)
    model = load_model(str(work / "classifier.h5"))   # safe_mode=True (the default)
    Xte = nlc(test)
    tm_probs = model.probs(Xte)
    load_diff = float(np.abs(tm_probs - np.load(work / "tf_probs_test.npy")).max())
    load_before = load_avg()
    t0 = time.perf_counter()
    loc = Localizer(seed=seed).fit(model, nlc(train), train.y, nlc(val), val.y)
    tm_s = time.perf_counter() - t0
    tm = {"fit_seconds": tm_s, "epochs": len(loc.history_), "n_tau": len(loc.tau_grid_), "tau": float(loc.tau_),
          "r2": loc.r2_.estimate, "r2_low": loc.r2_.low, "r2_high": loc.r2_.high, "r_metric": loc.r2_.metric,
          "target": float(loc.target_r2_), "reached": bool(getattr(loc, "target_reached_", True)),
          "extended": int(loc.tau_grid_extended_), "backbone": getattr(loc, "backbone_kind_", "?"),
          "load": f"{load_before} → {load_avg()}"}
    tm_masks = loc.masks(Xte)                                   # internal layout (N, 1, 187)
    dl_masks = np.load(work / "dl_masks_test.npy")[:, None, :]  # (N, 187) → (N, 1, 187)
    tfr.update(quality(dl_masks, test), common_r2=common_r2(model, Xte, test.y, dl_masks.transpose(0, 2, 1)))
    tm.update(quality(tm_masks, test), common_r2=common_r2(model, Xte, test.y, tm_masks.transpose(0, 2, 1)))
    return {"seed": seed, "load_diff": load_diff, "test_acc": float((tm_probs.argmax(1) == test.y).mean()),
            "dl": tfr, "tm": tm}


def table(results: list[dict], sizes: dict, dl: dict, quick: bool) -> str:
    v = results[0]["dl"]
    out = [f"Distractor task ({sizes['clf']} signals train the Keras classifier; the localizers are fitted on "
           f"{sizes['train']} other signals with {sizes['val']} validation signals; scored on 1000 test signals, "
           f"class 1). TensorFlow {v['tf']} (CPU wheel), tf-keras {v['tf_keras']}, dnn-locate 0.2 (unmodified, "
           f"installed from PyPI without its deprecated `sklearn` dependency), in `.venv-tf`; trustmap on "
           "Keras 3 / torch (CPU) in `.venv`, loading the classifier's `.h5` with `safe_mode` on. One thread each "
           f"(TF intra/inter-op pools {v['intra_op']}/{v['inter_op']}). dnn-locate with its authors' ECG settings "
           f"(ECG_loc.py): τ = {dl['tau_range']}, ≤ {dl['epochs']} epochs with early stopping (patience "
           f"{dl['early_stopping']['patience']}, on the training loss), batch {dl['batch_size']}, Adam "
           f"{dl['lr']:g}, ReduceLROnPlateau; target 'auto', R² 'acc' on the validation signals. trustmap: "
           "`Localizer()` defaults (12-τ 'auto' path in one fit, 20 epochs, batch 128, R² 'prob' on the held-out "
           "half of the validation signals with its 95 % interval).\n",
           "R² columns: *own* is each tool's own definition — dnn-locate: 1 − err(x)/err(x ⊙ (1 − δ)) with the "
           "0/1 error, on the 2000 validation signals; trustmap: 1 − E[1 − p_y(x)] / E[1 − p_y(x with δ's entries "
           "replaced by the training mean)], on the held-out half. *common*: dnn-locate's definition computed by one "
           "code for both tools' masks on the 1000 test signals. Localization: mask mass within ±10 of the class "
           "bump, argmax there, mass within ±10 of the distractor (`window_mass`). Load: the 1-min load average "
           "before → after each fit (2-core machine shared with other sessions: seconds are noisy, the ratio "
           "between the two columns of one seed less so).\n",
           "| seed | tool | fit (s) | epochs | τ | R² own | target (reached on the fit's own split?) | R² common | mass | argmax | distractor | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, t = r["dl"], r["tm"]
        ep = "+".join(str(e) for e in d["epochs_per_tau"])
        out.append(f"| {r['seed']} | dnn-locate 0.2 | {d['fit_seconds']:.1f} | {ep} | {d['tau']:g} | "
                   f"{d['r2_path'][-1]:.3f} (acc) | {d['target']:.3f}{'' if d['reached'] else ' (not reached)'} | "
                   f"{d['common_r2']:.3f} | {d['mass']:.3f} | {d['argmax']:.3f} | {d['dist']:.3f} | {d['load']} |")
        out.append(f"| {r['seed']} | trustmap ({t['backbone']}) | {t['fit_seconds']:.1f} | {t['epochs']} | {t['tau']:.3g} "
                   f"(of {t['n_tau']}) | {t['r2']:.3f} [{t['r2_low']:.3f}, {t['r2_high']:.3f}] ({t['r_metric']}) | "
                   f"{t['target']:.3f}{'' if t['reached'] else ' (not reached)'} | {t['common_r2']:.3f} | "
                   f"{t['mass']:.3f} | {t['argmax']:.3f} | {t['dist']:.3f} | {t['load']} |")
    ratio = [r["dl"]["fit_seconds"] / r["tm"]["fit_seconds"] for r in results]
    per_ep_dl = [r["dl"]["fit_seconds"] / max(1, sum(r["dl"]["epochs_per_tau"])) for r in results]
    per_ep_tm = [r["tm"]["fit_seconds"] / max(1, r["tm"]["epochs"]) for r in results]
    accs = ", ".join(f"{r['test_acc']:.3f}" for r in results)
    out += ["", f"- dnn-locate's fit / trustmap's fit: {', '.join(f'{x:.1f}×' for x in ratio)} (seeds "
            f"{', '.join(str(r['seed']) for r in results)}); seconds per epoch (fit time / epochs, R² and target "
            f"evaluation included): dnn-locate {', '.join(f'{x:.2f}' for x in per_ep_dl)}, trustmap "
            f"{', '.join(f'{x:.2f}' for x in per_ep_tm)}.",
            f"- The `.h5` written by tf.keras {v['tf_keras']} loads in trustmap with `safe_mode` on; its probabilities "
            f"on the test signals agree with TensorFlow's to {max(r['load_diff'] for r in results):.1e}; classifier "
            f"test accuracy {accs}."]
    if quick:
        out.append("- **--quick**: smoke sizes and epochs; the figures say nothing about either tool's quality.")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="600/800/600 signals, dnn-locate ≤ 3 epochs (a smoke run)")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    ap.add_argument("--tf-python", default=str(ROOT / ".venv-tf" / "bin" / "python"),
                    help="python of the TensorFlow venv (make dnnlocate-env)")
    ap.add_argument("--dl-epochs", type=int, default=None, help="dnn-locate's epoch cap (default 200, the script's)")
    ap.add_argument("--n-train", type=int, default=None, help="signals to fit the localizers on (default 3000)")
    ap.add_argument("--work", default=None, help="folder for the data, the .h5 and the logs (default: a temp folder)")
    ap.add_argument("--out", default=str(HERE / "results_dnnlocate.md"))
    ap.add_argument("--tf-worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.tf_worker:
        return tf_worker(Path(a.tf_worker))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if not Path(a.tf_python).exists():
        print(f"error: no TensorFlow venv at {a.tf_python}; create it with `make dnnlocate-env`", file=sys.stderr)
        return 2
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    sizes = ({"clf": 1000, "train": 800, "val": 600} if a.quick else {"clf": 3000, "train": 3000, "val": 2000})
    if a.n_train:
        sizes["train"] = a.n_train
    dl = json.loads(json.dumps(DL_SETTINGS))
    dl["epochs"] = a.dl_epochs or (3 if a.quick else dl["epochs"])
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-dnnlocate-"))
    t0 = time.perf_counter()
    results = []
    for s in [int(v) for v in a.seeds.split(",")]:
        results.append(run_seed(s, sizes, dl, a.tf_python, work / f"seed{s}"))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results, sizes, dl, a.quick)
    cmd = ("OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_dnnlocate.py "
           "--tf-python .venv-tf/bin/python" + (" --quick" if a.quick else "") + f" --seeds {a.seeds}"
           + (f" --dl-epochs {a.dl_epochs}" if a.dl_epochs else "") + (f" --n-train {a.n_train}" if a.n_train else ""))
    sys.path.insert(0, str(HERE))
    from run import machine

    Path(a.out).write_text(f"### dnn-locate itself beside trustmap (issue 14)\n\n{text}\n\n_Produced by `{cmd}` in "
                           f"{time.perf_counter() - t0:.0f} s on {machine()}; work files in {work}._\n")
    print(text)
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
