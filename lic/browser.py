"""Read the built book the way a reader does: every page opened in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium), served from 127.0.0.1, and checked for
what a reader would trip over.

Per page: it loads; every image has loaded; no internal link is broken; no raw ``{glue`` text and
no ``nan``/``None`` where a number is glued; no directive left as raw text (```` ```{admonition} ````,
``:::{note}``: markdown that did not parse); no raw math (the book carries no MathJax: its few
symbols are Unicode, so it reads the same offline); no table wider than the content column; the
title comes before any visible code.

    python -m lic.book check --scale cpu     # the built cpu book (after python -m lic.book build)
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
import urllib.parse
from pathlib import Path

WIDTH, HEIGHT = 1280, 900
LOAD_SECONDS = 60  # a page not loaded within this is a problem a reader would see
INSTALL = "apt-get install chromium chromium-driver && pip install selenium"

# one script per page: everything the checks need, measured by the browser itself
_PROBE = r"""
const col = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const colWidth = col.getBoundingClientRect().width;
const visible = e => !!(e.offsetParent) && e.getBoundingClientRect().height > 0;
const title = document.querySelector('article h1, main h1, h1');
const code = Array.from(document.querySelectorAll('div.cell_input, div.highlight')).filter(visible);
const glued = Array.from(document.querySelectorAll('.pasted-text, .pasted-inline')).map(e => e.innerText);
const text = document.body.innerText;
return {
  ready: document.readyState,
  images: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  rawGlue: text.includes('{glue'),
  rawDirective: (text.match(/(```|:::)\s*\{[a-z:-]+\}/g) || []).slice(0, 3),
  badGlue: glued.filter(t => /\b(nan|NaN|None|inf)\b/.test(t)),
  rawMath: (text.match(/\\\(|\\\)|\\\[|\\\]|\$[A-Za-z\\][^$\n]{0,40}\$/g) || []).slice(0, 3),
  colWidth: colWidth,
  wideTables: Array.from(document.querySelectorAll('table')).filter(visible)
      .map(t => [Math.round(t.getBoundingClientRect().width), (t.innerText || '').slice(0, 60)])
      .filter(([w, _]) => w > colWidth + 1),
  titleTop: title ? title.getBoundingClientRect().top + window.scrollY : null,
  codeTop: code.length ? code[0].getBoundingClientRect().top + window.scrollY : null,
};
"""


class BrowserUnavailable(RuntimeError):
    """No headless Chromium + chromedriver + Selenium on this machine; the message says how to get them."""


def find_browser() -> tuple:
    """(chromium, chromedriver) paths, or :class:`BrowserUnavailable` naming the install command."""
    try:
        import selenium  # noqa: F401
    except ImportError as err:
        raise BrowserUnavailable(f"Selenium is not installed; {INSTALL}") from err
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise BrowserUnavailable(f"no headless Chromium/chromedriver found; {INSTALL}")
    return chromium, driver


@contextlib.contextmanager
def serve(root):
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield browser
    finally:
        browser.quit()


def pages(html_root) -> list:
    """The book's pages (relative paths), from the built HTML tree."""
    root = Path(html_root)
    skip = {"genindex.html", "search.html"}
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.html")
                  if p.name not in skip and "_static" not in p.parts and "_sources" not in p.parts)


def _internal_target(href: str, base: str, root: Path):
    """The file an internal link points at (None for external links and in-page anchors)."""
    if not href.startswith(base):
        return None
    path = urllib.parse.unquote(urllib.parse.urlsplit(href).path).lstrip("/")
    target = root / path
    return target / "index.html" if target.is_dir() else target


def problems_of(probe: dict, page: str, base: str, root: Path) -> list:
    """What a reader would trip over on one page, from the browser's probe."""
    out = []
    if probe["ready"] != "complete":
        out.append(f"did not finish loading ({probe['ready']})")
    out += [f"image did not load: {src}" for src in probe["images"]]
    broken = sorted({str(t.relative_to(root)) for h in probe["links"]
                     if (t := _internal_target(h, base, root)) is not None and not t.is_file()})
    out += [f"broken internal link: {t}" for t in broken]
    if probe["rawGlue"]:
        out.append("raw {glue text on the page")
    out += [f"glued value reads {t!r}" for t in probe["badGlue"]]
    out += [f"raw directive on the page (the markdown did not parse): {d!r}" for d in probe.get("rawDirective", [])]
    out += [f"raw math: {m!r}" for m in probe["rawMath"]]
    out += [f"table {w} px wide in a {probe['colWidth']:.0f} px column: {head!r}" for w, head in probe["wideTables"]]
    if probe["codeTop"] is not None and (probe["titleTop"] is None or probe["codeTop"] < probe["titleTop"]):
        out.append("code comes before the title")
    return out


def _wait_until_loaded(browser, seconds: float = LOAD_SECONDS) -> None:
    """Wait for ``document.readyState == 'complete'``: on a busy machine ``get`` can return while the
    page is still loading (seen once in CI on 04_yu). A page still loading after ``seconds`` is
    reported by :func:`problems_of`, not raised here."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, seconds, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
    except TimeoutException:
        pass


def check_book(html_root, only=None) -> dict:
    """{page: [problems]} for every page of the built book at ``html_root`` (or those in ``only``)."""
    root = Path(html_root)
    todo = [p for p in pages(root) if only is None or p in only]
    results = {}
    with serve(root) as base, chromium() as browser:
        browser.set_page_load_timeout(LOAD_SECONDS)
        for page in todo:
            browser.get(base + page)
            _wait_until_loaded(browser)
            probe = browser.execute_script(_PROBE)
            results[page] = problems_of(probe, page, base, root)
    return results
