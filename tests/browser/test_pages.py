"""The built book as a reader sees it: every page of ``_build/html`` in headless Chromium.

For each page: no code block, text output or table is wider than the text column (nothing scrolls
sideways), the math is typeset by the MathJax copy the site serves itself (no raw ``$...$``,
``\\(`` or ``\\[`` left in the text, no TeX error), every image has loaded, every link to another
page or anchor of the book resolves, the server was asked for nothing it does not have, and the
browser console shows no error. A screenshot of each page goes to ``_build/screenshots``.

Chromium runs offline (every host name but localhost fails to resolve), so a page that still
needs the network fails here. Chromium and ChromeDriver are Debian's ``chromium`` and
``chromium-driver`` (``make browser`` installs them); the browser is driven through ChromeDriver's
W3C WebDriver HTTP interface with the standard library.

    make test                      # builds the book, then runs this
    .venv/bin/pytest tests/browser # once _build/html exists

Where no site has been built these tests are skipped, so a bare ``pytest`` in a fresh checkout
passes; ``make test`` sets ``DMCORE_REQUIRE_SITE=1``, under which a missing site is a failure.
"""

from __future__ import annotations

import base64
import functools
import html.parser
import http.server
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HTML = pathlib.Path(os.environ.get("DMCORE_BOOK_HTML", ROOT / "_build" / "html"))
SCREENSHOTS = ROOT / "_build" / "screenshots"
if not (HTML / "index.html").exists() and os.environ.get("DMCORE_REQUIRE_SITE") != "1":
    pytest.skip(f"no built site at {HTML}: `make test` (or `make book`) builds it", allow_module_level=True)
PAGES = sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
               if not any(part.startswith("_") for part in p.relative_to(HTML).parts[:-1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    """The few WebDriver commands these tests need, over HTTP to a local ChromeDriver."""

    def __init__(self, url: str, capabilities: dict):
        self.url = url
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"WebDriver {method} {path}: {error.read().decode(errors='replace')}") from None

    def command(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str, redirects_to: str | None = None, timeout: float = 60) -> None:
        """Open ``url``; where the page redirects (a meta refresh), wait until the browser is at
        ``redirects_to``, so that no later script runs while the page is being replaced."""
        self.command("POST", "/url", {"url": url})
        deadline = time.monotonic() + timeout
        while redirects_to and not self.command("GET", "/url").startswith(redirects_to):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not redirect to {redirects_to} within {timeout} s")
            time.sleep(0.1)

    def script(self, source: str, *args, asynchronous: bool = False):
        return self.command("POST", "/execute/async" if asynchronous else "/execute/sync",
                            {"script": source, "args": list(args)})

    def console(self) -> list[dict]:
        """The browser console's entries since the last call (ChromeDriver's log endpoint)."""
        return self.command("POST", "/se/log", {"type": "browser"})

    def cdp(self, command: str, **params):
        """A Chrome DevTools Protocol command, through ChromeDriver."""
        return self.command("POST", "/goog/cdp/execute", {"cmd": command, "params": params})

    def screenshot(self, width: int = 1280) -> bytes:
        """The whole page as a reader at ``width`` pixels would scroll through it: the window is made
        as tall as the page for the picture, then set back."""
        height = self.script("return Math.ceil(document.documentElement.scrollHeight);")
        self.cdp("Emulation.setDeviceMetricsOverride", width=width, height=min(height, 16000),
                 deviceScaleFactor=1, mobile=False)
        try:
            shot = self.cdp("Page.captureScreenshot", format="png")
        finally:
            self.cdp("Emulation.clearDeviceMetricsOverride")
        return base64.b64decode(shot["data"])

    def quit(self) -> None:
        self._call("DELETE", f"/session/{self.session}")


class _Handler(http.server.SimpleHTTPRequestHandler):
    missing: list[str] = []

    def log_message(self, format, *args):   # quiet, but remember what was not found
        if len(args) > 1 and str(args[1]) == "404":
            _Handler.missing.append(str(args[0]))


@pytest.fixture(scope="module")
def site():
    """``_build/html`` served on localhost; yields its base URL."""
    if not (HTML / "index.html").exists():
        pytest.fail(f"{HTML / 'index.html'} does not exist: build the book first (make test builds it)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()),
                                             functools.partial(_Handler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.fail("Debian's chromium and chromium-driver are needed: make browser installs them")
    port = _free_port()
    driver_process = subprocess.Popen([chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp(prefix="dmcore-chromium-")
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            with urllib.request.urlopen(url + "/status", timeout=1) as response:
                if json.loads(response.read())["value"]["ready"]:
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--window-size=1280,900", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]   # offline: only the local server
    driver = WebDriver(url, {"browserName": "chrome",
                             "goog:chromeOptions": {"binary": chromium, "args": args},
                             "goog:loggingPrefs": {"browser": "ALL"}})
    driver.command("POST", "/timeouts", {"script": 60_000})    # a page that never finishes fails after a minute
    yield driver
    driver.quit()
    driver_process.terminate()
    driver_process.wait(timeout=30)
    shutil.rmtree(profile, ignore_errors=True)


# Runs in the page once it has loaded: waits for MathJax to finish, scrolls through the page so
# that every image is asked for, waits for the images, then reports what the checks need.
_INSPECT = r"""
const done = arguments[arguments.length - 1];
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  for (let y = 0; y < document.body.scrollHeight; y += 600) { window.scrollTo(0, y);
    await new Promise(r => setTimeout(r, 20)); }
  window.scrollTo(0, 0);
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.complete ? null :
    new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
  const raw = [];
  const skip = new Set(['SCRIPT', 'STYLE', 'PRE', 'CODE', 'TEXTAREA', 'MJX-CONTAINER', 'NOSCRIPT']);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode(node) {
    for (let e = node.parentElement; e; e = e.parentElement) { if (skip.has(e.tagName)) return NodeFilter.FILTER_REJECT; }
    return NodeFilter.FILTER_ACCEPT; }});
  const tex = /\$[^$\s][^$]*\$|\\\(|\\\)|\\\[|\\\]|\\begin\{/;
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (tex.test(n.textContent)) raw.push(n.textContent.trim().slice(0, 80)); }
  done({
    mathjax: !!(window.MathJax && MathJax.version),
    mathjaxSrc: Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s)),
    math: document.querySelectorAll('.math').length,
    typeset: document.querySelectorAll('mjx-container').length,
    untypeset: Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container')).length,
    errors: document.querySelectorAll('mjx-merror').length,
    raw: raw,
    images: images.map(img => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    title: document.title,
  });
})();
"""


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def _anchors(page: pathlib.Path) -> frozenset:
    parser = _Ids()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def _target(site: str, href: str) -> tuple[pathlib.Path, str] | None:
    """The file and fragment an internal link points to; None for a link that leaves the site."""
    if not href.startswith(site):
        return None
    parsed = urllib.parse.urlparse(href)
    path = urllib.parse.unquote(parsed.path[len(urllib.parse.urlparse(site).path):])
    target = HTML / path
    if target.is_dir() or path == "":
        target = target / "index.html"
    return target, urllib.parse.unquote(parsed.fragment)


_OVERFLOW = """
const wide = [];
for (const el of document.querySelectorAll('article pre, article table')) {
  if (el.offsetParent === null) continue;                 // folded or hidden: nothing to see
  const column = el.closest('article');
  // content that scrolls inside the element, or an element wider than the text column
  if (el.scrollWidth > el.clientWidth + 1 || el.getBoundingClientRect().width > column.clientWidth + 1) {
    wide.push(`${el.tagName.toLowerCase()} ${el.scrollWidth}px in ${el.clientWidth}px: `
              + el.textContent.trim().replace(/\\s+/g, ' ').slice(0, 70));
  }
}
return wide;
"""


def test_the_overflow_check_sees_a_wide_code_block(browser):
    """The check below is not vacuous: a code line longer than its column is found."""
    page = ("<html><body><article style='width: 300px'><pre>" + "x = 1  # " + "long " * 80 + "</pre>"
            "<table><tr>" + "<td>cell</td>" * 200 + "</tr></table></article></body></html>")
    browser.get("data:text/html;charset=utf-8," + urllib.parse.quote(page))
    wide = browser.script(_OVERFLOW)
    assert len(wide) == 2 and wide[0].startswith("pre ") and wide[1].startswith("table ")


def test_the_site_has_pages():
    assert "index.html" in PAGES and len(PAGES) >= 10, PAGES


@pytest.mark.parametrize("page", PAGES)
def test_page(page, site, browser):
    _Handler.missing.clear()
    browser.console()                                   # drop what earlier pages left
    refresh = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', (HTML / page).read_text(errors="replace"))
    browser.get(site + page, redirects_to=urllib.parse.urljoin(site + page, refresh[1]) if refresh else None)
    report = browser.script(_INSPECT, asynchronous=True)
    wide = browser.script(_OVERFLOW)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / page.replace("/", "__").replace(".html", ".png")).write_bytes(browser.screenshot())

    assert not wide, f"{page}: code blocks or tables wider than the text column: {wide[:5]}"
    assert all(src.startswith(site) for src in report["mathjaxSrc"]), \
        f"{page}: MathJax is not served by the site itself: {report['mathjaxSrc']}"
    if report["math"]:
        assert report["mathjax"], f"{page}: {report['math']} math elements but MathJax did not load"
    assert report["untypeset"] == 0, f"{page}: {report['untypeset']} of {report['math']} math elements not typeset"
    assert report["errors"] == 0, f"{page}: {report['errors']} TeX errors"
    assert not report["raw"], f"{page}: raw TeX in the text: {report['raw'][:5]}"
    broken = [img["src"] for img in report["images"] if not img["ok"]]
    assert not broken, f"{page}: images that did not load: {broken}"
    dead = []
    for href in report["links"]:
        target = _target(site, href)
        if target is None:
            continue
        path, fragment = target
        if not path.exists():
            dead.append(href)
        elif fragment and path.suffix == ".html" and fragment not in _anchors(path):
            dead.append(href)
    assert not dead, f"{page}: internal links that do not resolve: {dead}"
    assert not _Handler.missing, f"{page}: the server was asked for files it does not have: {_Handler.missing}"
    errors = [entry["message"] for entry in browser.console() if entry["level"] == "SEVERE"]
    assert not errors, f"{page}: console errors: {errors}"
