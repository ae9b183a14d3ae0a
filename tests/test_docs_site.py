"""The built documentation site, opened in headless Chromium: every page reachable from the index
(same-origin links) loads with no console error and no uncaught exception, requests nothing from
any host but localhost, and decodes every image; every same-origin link resolves.

The site is ``docs/_build/html`` (``make docs``). Without it, or without Chromium, the test skips,
except when ``TRUSTMAP_REQUIRE_DOCS_SITE=1`` (set by ``.ci/run``): then a missing site or browser
fails. Chromium is driven over the DevTools protocol with ``websocket-client``; nothing is
downloaded (the browser is the system's ``/usr/bin/chromium``, or ``$CHROMIUM``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
REQUIRED = os.environ.get("TRUSTMAP_REQUIRE_DOCS_SITE") == "1"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--remote-debugging-port=0"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
DOWNLOADS = (".py", ".ipynb", ".zip", ".npz", ".txt", ".json", ".png", ".svg")


def _missing(what: str):
    if REQUIRED:
        pytest.fail(f"{what} (TRUSTMAP_REQUIRE_DOCS_SITE=1: the site must be built and tested)")
    pytest.skip(what)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


def _serve(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture(scope="module")
def server():
    if not (SITE / "index.html").is_file():
        _missing(f"no built site at {SITE} (run `make docs`)")
    httpd, url = _serve(SITE)
    try:
        yield url
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def browser(tmp_path):
    if not Path(CHROMIUM).is_file():
        _missing(f"no Chromium at {CHROMIUM}")
    b = Chromium(tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()


class Chromium:
    """A headless Chromium and one page, driven over the DevTools protocol (flattened session)."""

    def __init__(self, user_data_dir: Path):
        websocket = pytest.importorskip("websocket") if not REQUIRED else __import__("websocket")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium did not start (exit code {self.proc.poll()})")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", suppress_origin=True, timeout=60)
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 60):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _recv(self, deadline: float) -> dict:
        self.ws.settimeout(max(0.05, deadline - time.monotonic()))
        msg = json.loads(self.ws.recv())
        if "method" in msg:
            self.events.append(msg)
        return msg

    def wait_event(self, method: str, timeout: float = 60) -> None:
        start = len(self.events)
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events[start:]):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self._recv(deadline)

    def drain(self, seconds: float) -> None:
        """Collect events for ``seconds`` (late requests and console messages after the load event)."""
        import websocket

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._recv(deadline)
            except websocket.WebSocketTimeoutException:
                break

    def open(self, url: str) -> list[dict]:
        """Load ``url``; the events it caused."""
        self.events = []
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_event("Page.loadEventFired")
        self.drain(0.3)
        return self.events

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, session=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# every image, lazy ones included, must decode; links as absolute URLs
_PAGE_JS = """(async () => {
  const imgs = Array.from(document.images);
  const decoded = await Promise.all(imgs.map(async (img) => {
    img.loading = 'eager';
    try { await img.decode(); } catch (e) {}
    return {src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0};
  }));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
  return {images: decoded, links: links, title: document.title};
})()"""


def _problems(events: list[dict]) -> tuple[list[str], list[str]]:
    errors, outside = [], []
    for e in events:
        p, m = e.get("params", {}), e["method"]
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description", "")))
                                                                   for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append("uncaught: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
        elif m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            parsed = urlparse(url)
            if parsed.scheme not in ("data", "blob", "about") and parsed.hostname not in LOCAL_HOSTS:
                outside.append(url)
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            errors.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
    return errors, outside


def crawl(browser: "Chromium", server: str):
    """Open every page reachable from ``server/index.html`` by same-origin links.

    Returns ``(pages, problems, n_images, file_links)``: the page URLs, ``{url: [problem, ...]}``
    (console errors, uncaught exceptions, failed loads, requests to other hosts, images that did not
    decode), the number of images seen, and same-origin links to files other than pages."""
    start = server + "/index.html"
    queue, seen, pages, n_images = deque([start]), {start}, [], 0
    report: dict[str, list[str]] = {}
    file_links: set[str] = set()
    while queue:
        url = queue.popleft()
        events = browser.open(url)
        info = browser.evaluate(_PAGE_JS)
        errors, outside = _problems(events)
        bad_images = [i["src"] for i in info["images"] if not i["ok"]]
        n_images += len(info["images"])
        problems = errors + [f"outside request: {u}" for u in outside] + [f"image not decoded: {s}"
                                                                           for s in bad_images]
        if problems:
            report[url] = problems
        pages.append(url)
        for link in info["links"]:
            link = urldefrag(link)[0]
            if not link.startswith(server + "/"):
                continue  # other origins are never requested: only links, checked by no request above
            path = urlparse(link).path
            if path.endswith(".html") or path.endswith("/"):
                if link not in seen:
                    seen.add(link)
                    queue.append(link)
            else:
                file_links.add(link)
    return pages, report, n_images, file_links


def test_every_page_loads_clean_offline_with_decoded_images(server, browser):
    pages, report, n_images, other_links = crawl(browser, server)
    assert not report, json.dumps(report, indent=1)[:5000]
    # the site's shape: every guide, the API reference and the tutorials were reached
    names = {urlparse(u).path for u in pages}
    for page in ("/index.html", "/methods.html", "/cli.html", "/errors.html", "/formats.html",
                 "/installation.html", "/api/index.html", "/api/trustmap.html", "/tutorials/index.html"):
        assert page in names, f"{page} not reachable from the index"
    assert sum(p.startswith("/api/") for p in names) >= 15
    assert n_images > 0
    # same-origin links to files (downloads, images) resolve too
    for link in sorted(other_links):
        if link.endswith(DOWNLOADS) or "/_" in link:
            try:
                with urllib.request.urlopen(link, timeout=30) as r:
                    assert r.status == 200, link
            except urllib.error.HTTPError as exc:
                pytest.fail(f"broken link {link}: {exc.code}")


def test_the_crawl_catches_errors_outside_requests_and_broken_images(browser, tmp_path):
    """The checks can fail: a small site with each defect, on a page reached only by a link."""
    site = tmp_path / "site"
    site.mkdir()
    icon = '<link rel="icon" href="data:,">'  # no /favicon.ico request
    (site / "index.html").write_text(f'<html><head>{icon}</head><body><a href="sub/page.html#x">next</a></body></html>')
    (site / "sub").mkdir()
    (site / "sub" / "page.html").write_text(
        f'<html><head>{icon}<script>console.error("boom")</script></head><body>'
        '<img src="http://example.invalid/pixel.png" alt="outside">'
        '<img src="missing.png" alt="missing"><img src="bad.png" alt="not an image">'
        '<a href="../index.html">back</a></body></html>')
    (site / "sub" / "bad.png").write_bytes(b"not a png")
    httpd, url = _serve(site)
    try:
        pages, report, n_images, _ = crawl(browser, url)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [urlparse(p).path for p in pages] == ["/index.html", "/sub/page.html"]
    assert f"{url}/index.html" not in report
    problems = "\n".join(report[f"{url}/sub/page.html"])
    assert "console.error: boom" in problems
    assert "outside request: http://example.invalid/pixel.png" in problems
    assert f"image not decoded: {url}/sub/missing.png" in problems
    assert f"image not decoded: {url}/sub/bad.png" in problems
    assert n_images == 3
