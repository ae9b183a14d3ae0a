"""The HTML report: one self-contained file, checked in a real headless Chromium (no console
errors, no network requests, every image decoded, every section present; a screenshot is kept
under test-artifacts/), clear errors for a missing or corrupt run file, atomic writing."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

sys.path.insert(0, str(Path(__file__).parent))
from chromium_cdp import Browser, find_or_install_chromium  # noqa: E402

from trustmap import workflows  # noqa: E402
from trustmap.cli import main  # noqa: E402
from trustmap.errors import RunDirError  # noqa: E402
from trustmap.report import build_report, load_run  # noqa: E402
from trustmap.report import html as report_html  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SECTIONS = ["summary", "model-report", "explanations", "class-averages", "scores", "localizer", "data", "model",
            "provenance", "versions"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small real run: the MNIST-1D CNN (2 epochs), the localizer, two explainers, scores."""
    out = tmp_path_factory.mktemp("run")
    workflows.demo(out_dir=out, quick=True, n_explain=16, methods="saliency,gradcam", progress=False)
    return out


@pytest.fixture(scope="module")
def chromium():
    path, why = find_or_install_chromium()
    if path is None:
        pytest.skip(f"headless Chromium is not available: {why}")
    return path


def copy_run(run_dir, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def test_report_is_self_contained(run_dir):
    path = run_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    # no external resource of any kind; the CSP forbids loading one anyway
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", text)
    assert "<link" not in text and "<script" not in text and "@import" not in text and "url(" not in text
    assert "default-src 'none'" in text
    imgs = re.findall(r"<img [^>]*>", text)
    assert len(imgs) >= 8
    for tag in imgs:
        assert 'src="data:image/png;base64,' in tag
        alt = re.search(r'alt="([^"]*)"', tag)
        assert alt and len(alt.group(1)) > 10
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in text and f'href="#{sid}"' in text
    # provenance: the run's manifest, verbatim
    prov = re.search(r'<pre id="provenance-json">(.*?)</pre>', text, re.S).group(1)
    import html

    record = json.loads(html.unescape(prov))
    manifest = json.loads((run_dir / "run.json").read_text())
    assert record["run"]["settings"] == manifest["settings"]
    assert set(record["attributions"]) == set(manifest["attributions"])
    # versions table names the libraries of the run
    for lib in ("python", "numpy", "torch", "trustmap"):
        assert f"<td>{lib}</td>" in text
    # the scores table holds the numbers of scores.json
    scores = json.loads((run_dir / "scores" / "scores.json").read_text())
    v = scores["cells"]["saliency"]["deletion"]["value"]
    assert f"{v:.3g}" in text


def test_report_in_headless_chromium(run_dir, chromium):
    ARTIFACTS.mkdir(exist_ok=True)
    with Browser(chromium) as b:
        res = b.open(run_dir / "report.html")
        b.screenshot(ARTIFACTS / "report.png")
        b.screenshot(ARTIFACTS / "report_mnist1d.png")
        b.screenshot(ARTIFACTS / "report_full.png", full_page=True)
    assert res["errors"] == []
    external = [u for u in res["requests"] if not u.startswith(("file:", "data:", "about:"))]
    assert external == []
    assert len(res["images"]) >= 8
    bad = [i for i in res["images"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert bad == []
    assert all(len(i["alt"]) > 10 for i in res["images"])
    assert res["sections"] == SECTIONS
    assert res["missingTargets"] == [] and len(res["toc"]) > len(SECTIONS)
    assert res["scripts"] == 0 and res["links"] == 0
    assert res["title"].startswith("trustmap report")
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    check_layout(res["layout"])
    # with the six default metrics the scores table fits without scrolling
    assert all(t["scroll"] <= t["box"] + 1 for t in res["layout"]["tables"] if t["cls"] == "scores")


def check_layout(lay):
    """What a reader at 1400 px sees: no image shown below 0.6 of its drawn size (text stays
    legible), the summary on the first screen, no table wider than the page."""
    shrunk = [i for i in lay["images"] if i["shown"] < 0.6 * i["w"]]
    assert shrunk == [], shrunk
    assert lay["images"] and all(i["shown"] > 0 for i in lay["images"])
    s = lay["summary"]
    assert s is not None and s["top"] >= 0 and s["bottom"] <= lay["viewport"]["h"], (s, lay["viewport"])
    assert lay["firstSection"] == "summary"
    over = [t for t in lay["tables"] if t["boxRight"] > lay["viewport"]["w"] + 0.5]
    assert over == [] and lay["pageWidth"] <= lay["viewport"]["w"], (over, lay["pageWidth"])


def test_browser_check_catches_requests_and_errors(chromium, tmp_path):
    """The harness can fail: a page with an external image and a console error is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png" alt="x">'
                    '<img src="data:image/png;base64,AAAA" alt="broken">'
                    '<script>console.error("boom")</script></body></html>')
    with Browser(chromium) as b:
        res = b.open(page)
    assert any(u.startswith("http://127.0.0.1:9/") for u in res["requests"])
    assert any("boom" in e for e in res["errors"])
    assert [i["w"] for i in res["images"]] == [0, 0]


@pytest.mark.parametrize("victim", ["samples.npz", "data.json", "scores/scores.json", "attributions/gradcam.npz",
                                    "localizer/r2_path.json", "run.json"])
def test_missing_file_is_named(run_dir, tmp_path, victim, capsys):
    d = copy_run(run_dir, tmp_path)
    (d / victim).unlink()
    with pytest.raises(RunDirError, match=re.escape(Path(victim).name)):
        load_run(d)
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and Path(victim).name in err


@pytest.mark.parametrize("victim", ["samples.npz", "report.json", "attributions/gradcam.npz", "run.json",
                                    "localizer/da_plot.png", "history.json"])
def test_corrupt_file_is_named(run_dir, tmp_path, victim):
    d = copy_run(run_dir, tmp_path)
    p = d / victim
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 3)])
    with pytest.raises(RunDirError, match=re.escape(p.name)) as info:
        build_report(d)
    assert "corrupt" in str(info.value) or "match" in str(info.value)


def test_interrupted_build_leaves_no_half_written_html(run_dir, tmp_path, monkeypatch):
    d = copy_run(run_dir, tmp_path)
    before = (d / "report.html").read_bytes()
    real = report_html._fig_png
    calls = {"n": 0}

    def flaky(fig):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(fig)

    monkeypatch.setattr(report_html, "_fig_png", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_report(d)
    assert (d / "report.html").read_bytes() == before           # the old report is intact
    assert not list(d.glob(".report.html*"))                     # no temporary left behind
    (d / "report.html").unlink()
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        build_report(d)
    assert not (d / "report.html").exists() and not list(d.glob(".report.html*"))
    # and an interruption while the file itself is written (after the HTML text exists)
    monkeypatch.setattr(report_html, "_fig_png", real)
    from trustmap import _io

    def broken_write(path, text):
        with _io.atomic_path(path) as tmp:
            tmp.write_text(text[: len(text) // 2], encoding="utf-8")
            raise KeyboardInterrupt

    monkeypatch.setattr(report_html._io, "write_text", broken_write)
    with pytest.raises(KeyboardInterrupt):
        build_report(d)
    assert not (d / "report.html").exists() and not list(d.glob(".report.html*"))


def test_sections_follow_the_files(run_dir, tmp_path):
    """A run without scores and localizer: those sections (and their TOC entries) are left out."""
    d = copy_run(run_dir, tmp_path)
    manifest = json.loads((d / "run.json").read_text())
    for key in ("scores", "curves", "localizer", "localizer_weights", "da_plot", "path_plot"):
        manifest["files"].pop(key, None)
    (d / "run.json").write_text(json.dumps(manifest))
    text = build_report(d, out=tmp_path / "r.html").read_text()
    assert '<section id="scores">' not in text and '<section id="localizer">' not in text
    assert 'href="#scores"' not in text
    assert '<section id="explanations">' in text


def test_report_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "x.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_gallery_in_report_shows_the_explained_samples(run_dir):
    run = load_run(run_dir)
    s = run.samples
    # the saved predictions are the model's, and the maps explain the predicted class
    from trustmap import zoo
    from trustmap.models import load_model

    m = load_model(zoo.load(run_dir / "model.safetensors"))
    np.testing.assert_array_equal(m.predict(s["X"], layout=run.manifest["samples_layout"]), s["pred"])
    for name, a in run.attributions.items():
        if name != "trust":
            np.testing.assert_array_equal(a.targets, s["pred"])


def _cells(table_html: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", table_html, re.S)
    return [[re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
            for r in rows]


def test_localizer_r2_agrees_everywhere(run_dir):
    """One source of truth: the headline R², the scores table's localizer row and the localizer
    section print the same digits, and "target reached" is decided on that same number."""
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    summary = re.search(r'<section id="summary">(.*?)</section>', text, re.S).group(1)
    head = re.search(r'<div class="k">localizer R²</div><div class="v[^"]*">([^<]+)</div>', summary).group(1)
    point = re.search(r"<b>Localizer R² = ([^ ]+) ", summary).group(1)
    loc = re.search(r'<section id="localizer">(.*?)</section>', text, re.S).group(1)
    in_loc = re.search(r'<div class="k">localizer R²</div><div class="v[^"]*">([^<]+)</div>', loc).group(1)
    table_vals = []
    for tab in re.findall(r'<table class="scores">(.*?)</table>', text, re.S):
        cells = _cells(tab)
        header = [" ".join(c) for c in cells[0]]
        col = next((i for i, h in enumerate(header) if h.startswith("r2")), None)
        if col is None:
            continue
        row = next(r for r in cells[1:] if r[0] == ["trust"])
        table_vals.append(row[col][0])
    assert len(table_vals) == 1
    assert head == point == in_loc == table_vals[0]
    # the number is the scores table's cell, and "reached" is judged against it
    scores = json.loads((run_dir / "scores" / "scores.json").read_text())
    v = scores["cells"]["trust"]["r2"]["value"]
    assert head == f"{v:.3g}"
    summary_json = json.loads((run_dir / "localizer" / "r2_path.json").read_text())
    target = summary_json["target_r2"]
    reached = round(v, 3) >= round(target, 3)
    assert (f"is {'reached' if reached else 'not reached'} on these samples") in summary
    assert f"{'reached' if reached else 'not reached'} by the R² beside it ({head})" in loc


def test_metric_lines_and_pvalue_floor(run_dir):
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    scores = json.loads((run_dir / "scores" / "scores.json").read_text())
    for met in scores["metrics"]:
        better = "higher" if scores["higher_is_better"][met] else "lower"
        assert re.search(rf"<dt>{re.escape(met.replace('_', ' '))} [↑↓]</dt><dd>[^<]{{20,}}\({better} is better\)</dd>",
                         text), met
    n_perm = scores["settings"]["n_perm"]
    k = len(scores["methods"])
    floor = min(1.0, k * (k - 1) / 2 / (n_perm + 1))
    assert f"smallest possible adjusted p-value is {floor:.2g}" in text


@pytest.mark.parametrize("dataset", ["digits", "synthetic-1d-12ch"])
def test_report_screens_2d_and_12_channels(dataset, chromium, tmp_path):
    """The report of an image task and of a 12-channel signal task, read at 1400 px."""
    out = tmp_path / dataset
    workflows.demo(out_dir=out, dataset=dataset, quick=True, n_explain=8, methods="saliency,gradcam",
                   progress=False)
    ARTIFACTS.mkdir(exist_ok=True)
    with Browser(chromium) as b:
        res = b.open(out / "report.html")
        b.screenshot(ARTIFACTS / f"report_{dataset}.png")
        b.screenshot(ARTIFACTS / f"report_{dataset}_full.png", full_page=True)
    assert res["errors"] == [] and res["sections"][0] == "summary"
    check_layout(res["layout"])
