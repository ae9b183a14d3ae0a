"""A headless Chromium driven through its DevTools protocol, with a stdlib websocket client.

Used by the report tests: open a page, collect console errors and network requests, run
checks in the page, take screenshots. Not part of the library.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars"]


def find_or_install_chromium() -> tuple[str | None, str]:
    """``(path, why)``: Debian's chromium, installed with apt-get when missing (when we may)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path, ""
    apt = shutil.which("apt-get")
    if apt is None:
        return None, "chromium is not installed and apt-get is not available"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return None, "chromium is not installed and apt-get needs root (run: apt-get install -y chromium)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log = ""
    for cmd in ([apt, "install", "-y", "-q", "chromium"], [apt, "update", "-q"],
                [apt, "install", "-y", "-q", "chromium"]):
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"apt-get failed: {exc}"
        log = (r.stdout + r.stderr)[-400:]
        if cmd[1] == "install" and r.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium"), ""
    return None, f"chromium could not be installed with apt-get: {log.strip()}"


class WebSocket:
    """The client side of RFC 6455, enough for the DevTools protocol (text frames, no extensions)."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            resp += chunk
        head, self.buf = resp.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        hdr = bytearray([0x81])
        if n < 126:
            hdr.append(0x80 | n)
        elif n < 65536:
            hdr.append(0x80 | 126)
            hdr += struct.pack(">H", n)
        else:
            hdr.append(0x80 | 127)
            hdr += struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(bytes(hdr) + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            if op == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if op in (0x9, 0xA):  # ping / pong: not used by DevTools
                continue
            message += payload
            if fin:
                return message.decode("utf-8")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Browser:
    """``with Browser(chromium) as b: result = b.open(path)``."""

    def __init__(self, chromium: str, width: int = 1400, height: int = 1000) -> None:
        self.chromium, self.width, self.height = chromium, width, height

    def __enter__(self) -> "Browser":
        self.profile = tempfile.mkdtemp(prefix="trustmap-chromium-")
        self.proc = subprocess.Popen(
            [self.chromium, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        ws_url = None
        lines = []
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            lines.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
                break
        if ws_url is None:
            self.__exit__(None, None, None)
            raise RuntimeError("chromium did not start: " + "".join(lines[-10:]))
        port = urllib.parse.urlparse(ws_url).port
        # drain stderr so the browser never blocks on a full pipe
        import threading

        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        page = None
        for _ in range(50):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.loads(r.read())
            page = next((t for t in targets if t.get("type") == "page"), None)
            if page:
                break
            time.sleep(0.1)
        if page is None:
            self.__exit__(None, None, None)
            raise RuntimeError("chromium has no page target")
        self.ws = WebSocket(page["webSocketDebuggerUrl"])
        self._id = 0
        self.events: list[dict] = []
        return self

    def __exit__(self, *exc) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, **params) -> dict:
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        for e in self.events:
            if e["method"] == event:
                return e
        self.ws.sock.settimeout(timeout)
        while True:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == event:
                    return msg

    def evaluate(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, path: str | os.PathLike, settle: float = 0.5) -> dict:
        """Load a local file; returns console errors, network requests (URLs), and page facts."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.events.clear()
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        self.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
        time.sleep(settle)
        self.call("Runtime.evaluate", expression="1")  # collect the events that arrived meanwhile
        errors, requests = [], []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append("log: " + p["entry"].get("text", ""))
            elif m == "Network.requestWillBeSent":
                requests.append(p["request"]["url"])
            elif m == "Network.loadingFailed":
                errors.append("network: " + p.get("errorText", "") + " " + str(p.get("blockedReason", "")))
        facts = self.evaluate("""JSON.stringify({
            title: document.title,
            images: Array.from(document.images).map(i => ({w: i.naturalWidth, h: i.naturalHeight, complete: i.complete,
                                                             alt: i.getAttribute('alt') || '', src: i.src.slice(0, 30)})),
            sections: Array.from(document.querySelectorAll('main > section')).map(s => s.id),
            headings: Array.from(document.querySelectorAll('main h2')).map(h => h.textContent),
            toc: Array.from(document.querySelectorAll('nav.toc a')).map(a => a.getAttribute('href')),
            missingTargets: Array.from(document.querySelectorAll('nav.toc a')).map(a => a.getAttribute('href'))
                .filter(h => !document.getElementById(h.slice(1))),
            height: document.documentElement.scrollHeight,
            scripts: document.scripts.length,
            links: Array.from(document.querySelectorAll('link[href], script[src], iframe, object, embed')).length
        })""")
        lay = self.evaluate("""(async () => {
            const vp = {w: document.documentElement.clientWidth, h: window.innerHeight};
            const sum = document.getElementById('summary');
            const sr = sum ? sum.getBoundingClientRect() : null;
            const first = document.querySelector('main > section');
            document.querySelectorAll('details').forEach(d => { d.open = true; });
            await Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
            const images = Array.from(document.images).map(i => ({alt: (i.getAttribute('alt') || '').slice(0, 60),
                w: i.naturalWidth, shown: i.getBoundingClientRect().width}));
            const tables = Array.from(document.querySelectorAll('main table')).map(t => ({cls: t.className,
                scroll: t.scrollWidth, box: t.parentElement.clientWidth,
                boxRight: t.parentElement.getBoundingClientRect().right + window.scrollX}));
            document.querySelectorAll('details').forEach(d => { d.open = false; });
            return JSON.stringify({viewport: vp, summary: sr && {top: sr.top, bottom: sr.bottom},
                firstSection: first ? first.id : null, images, tables,
                pageWidth: document.documentElement.scrollWidth});
        })()""")
        return {"errors": errors, "requests": requests, **json.loads(facts), "layout": json.loads(lay)}

    def screenshot(self, path: str | os.PathLike, full_page: bool = False, max_height: int = 16000) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            h = min(int(self.evaluate("document.documentElement.scrollHeight")), max_height)
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": self.width, "height": h,
                                                            "scale": 0.5})
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path
