#!/usr/bin/env python3
"""Check the built book in a real browser (headless Chromium): images, internal links, JavaScript.

Serves the built HTML (default ``_build/html``) on a localhost port, crawls every page reachable
from ``index.html`` (following links and the ``<meta http-equiv="refresh">`` redirect that
Jupyter Book writes there), opens each page in Debian's headless Chromium through Selenium and
chromedriver, and fails (exit 1) on:

* images that did not load (``naturalWidth == 0`` after the page finished loading);
* internal links to pages or files that do not exist, or to ``#anchors`` that the target page
  does not define (links are taken from the rendered DOM, so links added by scripts count too);
* JavaScript errors: SEVERE entries of the browser log (uncaught exceptions, ``console.error``,
  local resources that failed to load);
* code that scrolls sideways: any ``<pre>`` block (code, or a notebook cell's printed output)
  whose content is wider than the block at a normal desktop window (1280 px), so that a reader
  would have to scroll to see the end of a line;
* formulas left raw: a formula of the source (Sphinx's ``class="math"`` elements) that
  MathJax did not typeset (no ``<mjx-container>`` in it, e.g. because MathJax loads from
  a CDN and the browser is offline), or TeX visible in the page's text outside code
  (``\\(``, ``\\[``, ``$\\ln 5``, ``\\frac``): the reader would see the TeX source.

The static part (also ``--no-browser``) fails on a page with formulas whose MathJax
script is missing or loads from another host, since its formulas stay raw offline.

``--screenshots DIR`` also saves a full-page screenshot of every page (for a human read).

Resources from other hosts (CDNs: thebe, badges) cannot load offline: their failures are
listed as warnings and do not fail the check. By default the browser resolves no host name at all
(``--host-resolver-rules``), so the result is the same with or without a network; pass
``--allow-network`` to let external resources load.

Usage::

    python scripts/check_book_html.py [_build/html] [--no-browser]

``--no-browser`` runs only the static link and anchor check (no Chromium needed).
Requires: ``pip install selenium``; ``apt-get install chromium chromium-driver``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

#: Pseudo-origin used to resolve links between files of the site without a server.
SITE = "http://site.invalid/"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]
#: Resolve no host name: external requests fail at once, the same way with or without network.
OFFLINE_ARG = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


# --------------------------------------------------------------------------- static HTML parsing


class _PageParser(HTMLParser):
    """Collects ids/names (anchor targets), link hrefs, image srcs, script srcs,
    formulas and a meta-refresh target."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.scripts: list[str] = []
        self.math = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        if "math" in a.get("class", "").split():
            self.math += 1
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            m = re.search(
                r"url\s*=\s*['\"]?([^'\";]+)", a.get("content", ""), re.IGNORECASE
            )
            if m:
                self.links.append(m.group(1).strip())


@dataclass
class PageInfo:
    """What the static parser found in one HTML file."""

    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    math: int = 0  # elements with class "math": the formulas MathJax is to typeset


def parse_page(html: str) -> PageInfo:
    """Parse one HTML document into its anchor ids, link hrefs, image and script srcs
    and its number of formulas."""
    p = _PageParser()
    p.feed(html)
    p.close()
    return PageInfo(
        ids=p.ids, links=p.links, images=p.images, scripts=p.scripts, math=p.math
    )


class Site:
    """The files of a built HTML site, with the anchor ids of each HTML page (parsed on demand)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        if not (self.root / "index.html").is_file():
            raise FileNotFoundError(
                f"{self.root}/index.html not found: build the book first (jupyter-book build .)"
            )

    @functools.cache  # noqa: B019 - one Site per run, the cache lives as long as it
    def page(self, rel: str) -> PageInfo:
        """Parsed content of the HTML file at ``rel`` (a path relative to the root)."""
        return parse_page(
            (self.root / rel).read_text(encoding="utf-8", errors="replace")
        )

    def file_for(self, rel: str) -> str | None:
        """The existing file that the site path ``rel`` serves (``dir/`` -> ``dir/index.html``)."""
        path = self.root / rel
        if rel == "" or rel.endswith("/") or path.is_dir():
            path = path / "index.html"
        try:
            path.resolve().relative_to(self.root)
        except ValueError:
            return None
        return path.relative_to(self.root).as_posix() if path.is_file() else None


def resolve(page: str, href: str, base: str = SITE) -> tuple[str, str] | None:
    """Resolve ``href`` found on site page ``page`` to (site path, fragment), or None if external.

    ``page`` is a path relative to the site root (``book/intro.html``); ``base`` is the URL the site
    root is served at. Links with another scheme or host (``https://...``, ``mailto:``,
    ``javascript:``) are external.
    """
    href = href.strip()
    if not href or href.startswith(("mailto:", "javascript:", "data:", "tel:")):
        return None
    url = urljoin(base + page, href)
    if not url.startswith(base):
        return None
    parts = urlsplit(
        url[len(base) - 1 :]
    )  # keep the leading "/" so urlsplit sees a path
    return unquote(parts.path.lstrip("/")), unquote(parts.fragment)


def check_link(site: Site, page: str, href: str, base: str = SITE) -> str | None:
    """An error message if the internal link ``href`` on ``page`` is broken, else None.

    Checks that the target file exists and, for ``#fragment`` links into HTML pages, that the
    target page has an element with that id (or an ``<a name=...>``).
    """
    target = resolve(page, href, base)
    if target is None:
        return None
    path, fragment = target
    file = site.file_for(path)
    if file is None:
        return f"link to missing page/file {path or '/'!r} ({href!r})"
    if fragment and not fragment.startswith(":~:") and file.endswith(".html"):
        if fragment not in site.page(file).ids:
            return f"link to missing anchor #{fragment} in {file} ({href!r})"
    return None


def crawl(site: Site, starts: tuple[str, ...] = ("index.html",)) -> list[str]:
    """HTML pages reachable from ``starts`` through internal links (breadth-first, in visit order).

    Start pages that do not exist are skipped (Sphinx's ``search.html`` is reached through a form,
    not a link, so the caller passes it as a start page).
    """
    starts = tuple(s for s in starts if site.file_for(s) == s)
    seen = set(starts)
    order: list[str] = []
    todo = deque(starts)
    while todo:
        page = todo.popleft()
        order.append(page)
        for href in site.page(page).links:
            target = resolve(page, href)
            if target is None:
                continue
            file = site.file_for(target[0])
            if file and file.endswith(".html") and file not in seen:
                seen.add(file)
                todo.append(file)
    return order


# --------------------------------------------------------------------------- results


@dataclass
class PageResult:
    """Outcome of checking one page."""

    page: str
    images: int = 0
    links: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_MATHJAX_SCRIPT = re.compile(r"mathjax|(?:^|/)tex-[\w-]*\.js$", re.IGNORECASE)


def mathjax_problem(site: Site, page: str, info: PageInfo) -> str | None:
    """Why the formulas of ``page`` would stay raw offline, or None: a page with
    formulas needs a MathJax script served by the site itself."""
    if not info.math:
        return None
    scripts = [
        src for src in info.scripts if _MATHJAX_SCRIPT.search(urlsplit(src).path)
    ]
    if not scripts:
        return f"{info.math} formula(s) but no MathJax script: they stay raw"
    for src in scripts:
        target = resolve(page, src)
        if target is None:
            return (
                f"{info.math} formula(s), but MathJax loads from another host ({src}): "
                "they stay raw offline; serve it from _static (mathjax_path)"
            )
        if site.file_for(target[0]) is None:
            return f"{info.math} formula(s), but the MathJax script is missing: {src}"
    return None


def static_check(site: Site, pages: list[str]) -> list[PageResult]:
    """Check of ``pages`` from the HTML files alone (no browser): links, local images
    and where MathJax comes from."""
    results = []
    for page in pages:
        info = site.page(page)
        r = PageResult(page, images=len(info.images), links=len(info.links))
        for href in dict.fromkeys(info.links):
            if (msg := check_link(site, page, href)) is not None:
                r.errors.append(msg)
        for src in dict.fromkeys(info.images):
            target = resolve(page, src)
            if target is None:
                r.warnings.append(f"external image {src} (not checked)")
            elif site.file_for(target[0]) is None:
                r.errors.append(f"image file missing: {src}")
        if (msg := mathjax_problem(site, page, info)) is not None:
            r.errors.append(msg)
        results.append(r)
    return results


_URL_AT_START = re.compile(r"^(\S+://\S+)")


def classify_log_entry(message: str, origin: str) -> str:
    """``"warning"`` for a failed external resource (expected offline), ``"error"`` for the rest.

    ``origin`` is the served site's origin (``http://127.0.0.1:PORT``). Chrome starts network
    failure messages and errors thrown inside a script with the URL of the resource or script.
    """
    m = _URL_AT_START.match(message)
    if m and not m.group(1).startswith(origin):
        return "warning"
    if (
        "net::ERR_NAME_NOT_RESOLVED" in message
        or "net::ERR_INTERNET_DISCONNECTED" in message
    ):
        return "warning"
    return "error"


# --------------------------------------------------------------------------- server and browser


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        # Chrome asks for /favicon.ico on its own; it is not part of the book.
        if (
            self.path == "/favicon.ico"
            and not Path(self.translate_path(self.path)).exists()
        ):
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on a free localhost port in a daemon thread; return the server and base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def find_browser(chromium: str | None, chromedriver: str | None) -> tuple[str, str]:
    """Paths of the Chromium binary and chromedriver; a clear error if either is missing."""
    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = chromedriver or shutil.which("chromedriver")
    if not chromium or not chromedriver:
        raise RuntimeError(
            "headless Chromium and chromedriver are needed: apt-get install chromium chromium-driver "
            f"(found chromium={chromium}, chromedriver={chromedriver}); or run with --no-browser"
        )
    return chromium, chromedriver


def start_browser(
    chromium: str, chromedriver: str, user_data_dir: str, allow_network: bool = False
):
    """A Selenium Chrome driver for Debian's Chromium, headless, with the browser log enabled."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise RuntimeError(
            "the browser check needs Selenium: pip install selenium"
        ) from e
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={user_data_dir}"] + (
        [] if allow_network else [OFFLINE_ARG]
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=chromedriver)
    )
    driver.set_page_load_timeout(60)
    return driver


# Make lazy images load, then report every image and the raw href of every link in the DOM.
_IMAGES_JS = """
for (const img of document.images) { if (img.loading === 'lazy') img.loading = 'eager'; }
return Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth]);
"""
_LINKS_JS = "return Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));"
# Every <pre> whose content is wider than its box: [kind, content width, box width, longest line].
_OVERFLOW_JS = """
return Array.from(document.querySelectorAll('pre'))
  .filter(p => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 1)
  .map(p => [p.closest('.cell_output, .output') ? 'printed output' : 'code block',
             p.scrollWidth, p.clientWidth,
             p.textContent.split('\\n').reduce((a, l) => l.length > a.length ? l : a, '')]);
"""


# Wait until MathJax has typeset the page (or say why it cannot), then report every
# formula without MathJax output and the page's text outside code and formulas.
_MATHJAX_JS = """
const done = arguments[arguments.length - 1];
const mj = window.MathJax;
if (!document.querySelector('.math')) { done('no formulas'); return; }
if (!(mj && mj.startup && mj.startup.promise)) { done('MathJax did not load'); return; }
mj.startup.promise.then(() => done('typeset'), e => done('MathJax failed: ' + e));
"""
_RAW_MATH_JS = """
const raw = Array.from(document.querySelectorAll('.math'))
  .filter(m => !m.querySelector('mjx-container'))
  .map(m => m.textContent.trim().replace(/\\s+/g, ' ').slice(0, 80));
const text = document.body.cloneNode(true);
text.querySelectorAll(
  'pre, code, kbd, samp, script, style, textarea, mjx-container, .math'
).forEach(e => e.remove());
return [raw, text.textContent];
"""
#: TeX in a page's text: math delimiters, or a dollar sign or backslash before a TeX
#: command (``$\ln 5``, ``\frac``), i.e. a formula that nothing typeset.
RAW_TEX = re.compile(
    r"\\[(\[]|\$\$|\$[^$\n]{0,80}?\\[A-Za-z]+"
    r"|\\(?:frac|ln|log|exp|sqrt|sum|prod|mathrm|mathbf|text|cdot|times|leq?|geq?"
    r"|alpha|beta|gamma|lambda|sigma|mu|pm|approx)(?![A-Za-z])"
)


def raw_tex(text: str, context: int = 30) -> list[str]:
    """Snippets of ``text`` around TeX that was left raw (at most five)."""
    found = []
    for m in RAW_TEX.finditer(text):
        snippet = text[max(0, m.start() - context) : m.end() + context]
        found.append(" ".join(snippet.split()))
    return list(dict.fromkeys(found))[:5]


def formula_errors(driver, timeout: float = 30) -> list[str]:
    """Formulas left raw on the page open in ``driver``: MathJax output missing, or TeX
    visible in the text outside code."""
    driver.set_script_timeout(timeout)
    try:
        state = driver.execute_async_script(_MATHJAX_JS)
    except Exception as e:  # noqa: BLE001 - a timeout or a script error: report it
        state = f"MathJax did not finish within {timeout:g} s ({type(e).__name__})"
    raw, text = driver.execute_script(_RAW_MATH_JS)
    errors = []
    if raw:
        shown = "; ".join(repr(r) for r in list(dict.fromkeys(raw))[:3])
        errors.append(
            f"{len(raw)} formula(s) left raw, without MathJax output ({state}): {shown}"
        )
    errors += [f"raw TeX in the page's text: {s!r}" for s in raw_tex(text)]
    return errors


def _wait(driver, condition_js: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if driver.execute_script(condition_js):
            return True
        time.sleep(0.05)
    return False


def browser_check_page(
    driver,
    site: Site,
    base: str,
    page: str,
    visited: set[str] | frozenset[str] = frozenset(),
    settle: float = 0.3,
    screenshots: Path | None = None,
) -> PageResult:
    """Open ``page`` in the browser and check its images, links, code widths and browser log.

    A page that redirects to one of ``visited`` (the pages checked in this run) is not checked again.
    """
    origin = base.rstrip("/")
    r = PageResult(page)
    driver.get(base + page)
    _wait(driver, "return document.readyState === 'complete'", 30)
    driver.execute_script(_IMAGES_JS)
    _wait(driver, "return Array.from(document.images).every(i => i.complete)", 15)
    time.sleep(settle)  # let deferred scripts run and report their errors

    current = driver.current_url  # after redirects (index.html -> the root page)
    shown_page = (
        site.file_for(urlsplit(current).path.lstrip("/"))
        if current.startswith(base)
        else None
    )
    if shown_page != page:
        r.page = f"{page} -> {shown_page or current}"
        if shown_page in visited:  # a redirect to a page that is checked on its own
            driver.get_log(
                "browser"
            )  # drop this visit's log: the target's own visit reports it
            return r
    shown_page = shown_page or page

    images = driver.execute_script(_IMAGES_JS)
    r.images = len(images)
    broken: set[str] = set()
    for src, complete, width in images:
        if width:
            continue
        external = not src.startswith(origin) and not src.startswith("data:")
        if external:
            r.warnings.append(f"external image did not load (offline?): {src}")
        else:
            state = (
                "did not finish loading"
                if not complete
                else "did not load (naturalWidth == 0)"
            )
            r.errors.append(
                f"image {state}: {src[len(base) :] if src.startswith(base) else src[:80]}"
            )
            broken.add(src)

    r.errors += formula_errors(driver)  # before the widths: typesetting moves text

    for kind, content, box, line in driver.execute_script(_OVERFLOW_JS):
        r.errors.append(
            f"{kind} scrolls sideways ({content} px of text in a {box} px box): "
            f"{line.strip()[:100]!r}"
        )
    if screenshots is not None:
        save_full_screenshot(
            driver, screenshots / (shown_page.replace("/", "_") + ".png")
        )

    hrefs = list(dict.fromkeys(driver.execute_script(_LINKS_JS)))
    r.links = len(hrefs)
    for href in hrefs:
        if (msg := check_link(site, shown_page, href)) is not None:
            r.errors.append(msg)

    for entry in driver.get_log("browser"):
        if entry.get("level") != "SEVERE":
            continue
        message = entry.get("message", "")
        if any(message.startswith(src + " ") for src in broken):
            continue  # the 404 of an image already reported above
        if classify_log_entry(message, origin) == "warning":
            r.warnings.append(
                f"external resource failed (expected offline): {message[:200]}"
            )
        else:
            r.errors.append(f"browser log SEVERE: {message[:300]}")
    return r


def save_full_screenshot(driver, path: Path, width: int = 1280) -> None:
    """A screenshot of the whole page (the window is stretched to the page's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(height, 900), 20000))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(width, 900)


def browser_check(
    site: Site,
    pages: list[str],
    chromium: str | None = None,
    chromedriver: str | None = None,
    allow_network: bool = False,
    screenshots: Path | None = None,
) -> list[PageResult]:
    """Check every page in headless Chromium; the site is served on a localhost port meanwhile."""
    chromium, chromedriver = find_browser(chromium, chromedriver)
    server, base = serve(site.root)
    try:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            driver = start_browser(chromium, chromedriver, profile, allow_network)
            try:
                return [
                    browser_check_page(
                        driver, site, base, page, set(pages), screenshots=screenshots
                    )
                    for page in pages
                ]
            finally:
                driver.quit()
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- report


def report(results: list[PageResult], orphans: list[str]) -> tuple[str, int]:
    """A markdown summary table and problem list; also the number of errors."""
    lines = [
        "| page | images | links | errors | warnings |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.page} | {r.images} | {r.links} | {len(r.errors)} | {len(r.warnings)} |"
        )
    n_err = sum(len(r.errors) for r in results)
    n_warn = sum(len(r.warnings) for r in results)
    lines.append(f"| **{len(results)} pages** | {sum(r.images for r in results)} | "
                 f"{sum(r.links for r in results)} | **{n_err}** | {n_warn} |")  # fmt: skip
    for kind in ("errors", "warnings"):
        items = [(r.page, m) for r in results for m in getattr(r, kind)]
        if items:
            lines += ["", f"{kind.upper()}:"] + [f"  {page}: {m}" for page, m in items]
    if orphans:
        lines += [
            "",
            f"note: {len(orphans)} HTML file(s) not reachable from index.html: {', '.join(orphans[:10])}",
        ]
    return "\n".join(lines), n_err


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "html_dir",
        nargs="?",
        default="_build/html",
        help="built HTML (default: _build/html)",
    )
    ap.add_argument(
        "--no-browser",
        action="store_true",
        help="static link/anchor/image-file check only",
    )
    ap.add_argument(
        "--allow-network",
        action="store_true",
        help="let the browser load external resources",
    )
    ap.add_argument("--chromium", help="Chromium binary (default: chromium on PATH)")
    ap.add_argument(
        "--chromedriver", help="chromedriver binary (default: chromedriver on PATH)"
    )
    ap.add_argument(
        "--screenshots", type=Path, help="save a full-page screenshot of each page here"
    )
    args = ap.parse_args(argv)

    try:
        site = Site(args.html_dir)
        pages = crawl(site, ("index.html", "search.html", "genindex.html"))
        skip = ("_static/", "_sources/", "_images/", "_downloads/")
        all_html = sorted(
            p.relative_to(site.root).as_posix() for p in site.root.rglob("*.html")
        )
        orphans = [p for p in all_html if p not in pages and not p.startswith(skip)]
        t0 = time.monotonic()
        if args.no_browser:
            results = static_check(site, pages)
        else:
            results = browser_check(
                site,
                pages,
                args.chromium,
                args.chromedriver,
                args.allow_network,
                args.screenshots,
            )
    except (FileNotFoundError, RuntimeError) as e:
        print(f"check_book_html: {e}", file=sys.stderr)
        return 2
    text, n_err = report(results, orphans)
    mode = "static" if args.no_browser else "headless Chromium"
    print(
        f"check_book_html ({mode}, {time.monotonic() - t0:.1f} s): {site.root}\n\n{text}"
    )
    print(f"\n{'FAILED' if n_err else 'OK'}: {len(results)} pages, {n_err} error(s)")
    return 1 if n_err else 0


if __name__ == "__main__":
    sys.exit(main())
