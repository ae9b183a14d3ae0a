"""The HTML report: ``build_report(RUN_DIR)`` writes ``RUN_DIR/report.html``, one self-contained
file (figures as inline base64 PNG, CSS inline, no external request; a Content-Security-Policy
forbids any), with a table of contents and alt text on every image. ``trustmap report RUN_DIR``
on the command line.

Any run folder works: every command (``demo``, ``explain``, ``locate``, ``evaluate``, in memory,
streamed or on Ray) writes a ``trustmap.run/2`` record (:mod:`trustmap.jobs.record`), and
``build_report([DIR, DIR, ...])`` / ``trustmap report DIR DIR ...`` joins the folders of one model
and data (:mod:`trustmap.report.runs`): the sections that exist appear.

Run directory (written by :func:`trustmap.workflows.demo`)
----------------------------------------------------------

==================================  ====================================================================
``run.json``                        the manifest (format ``trustmap.run/2``; ``/1`` is read too): settings, model and data
                                    description, ``files`` (key -> relative path; every named file must
                                    exist), ``attributions`` (method -> ``attributions/<method>.npz``),
                                    ``samples_layout``, timings, notes, versions. Required.
``model.safetensors`` + ``.json``   the reference CNN (zoo) when the demo trained it; a user's model
                                    is named in ``run.json`` (path and fingerprint) instead
``data.json``                       data summary: name, layout, shape, classes, samples per class/split
``report.json`` ``report.txt``      model report (accuracy, ROC, confusion, P/R/F1) on the test split
``history.json``                    training curves (when the model was trained here)
``model_report.png``                the model-report figure
``samples.npz``                     the explained test samples: ``X`` (layout ``samples_layout``), ``y``
                                    (when labeled), ``pred``, ``probs``, ``index`` (rows of the test split)
``attributions/<method>.npz``       one :class:`~trustmap.Attribution` per explainer (+ ``.json`` record);
                                    ``trust.npz``: the localizer's masks of the same samples
``localizer/``                      ``localizer.safetensors`` (+ ``.json``), ``r2_path.json`` (τ, R² with
                                    interval, held-out and calibration paths), ``r2_path.png``,
                                    ``da_plot.png``, ``path_plot.png``, ``masks.npz`` (training masks)
``scores/``                         ``scores.json`` / ``scores.md`` (every metric, bootstrap intervals,
                                    paired tests) and ``curves.png`` (deletion / insertion)
``report.html``                     the report
==================================  ====================================================================

Sections appear when their files exist. A file that ``run.json`` names but is missing or
corrupt raises :class:`~trustmap.errors.RunDirError` naming it; the HTML is written atomically
(an interrupted build leaves the previous report, or none, never half a file).
"""

from .html import RUN_FORMAT, SYNTHESIS_METHODS, Run, build_report, load_run, render

__all__ = ["build_report", "load_run", "render", "Run", "RUN_FORMAT", "SYNTHESIS_METHODS"]
