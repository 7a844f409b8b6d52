"""Tests of scripts/check_book_html.py: link/anchor logic on a tiny HTML tree, and the real browser check."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from helpers import load_script

chk = load_script("scripts/check_book_html.py")


def _write(root: Path, rel: str, body: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!DOCTYPE html><html><head><title>{rel}</title></head><body>{body}</body></html>"
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """index.html redirects to book/a.html, which links to b.html (good and bad anchors and files)."""
    (tmp_path / "index.html").write_text(
        '<meta http-equiv="Refresh" content="0; url=book/a.html" />'
    )
    _write(
        tmp_path,
        "book/a.html",
        '<h1 id="top">A</h1><a href="#top">self</a> <a href="#nowhere">bad self</a>'
        '<a href="b.html">b</a> <a href="b.html#sec-1">b sec</a> <a href="b.html#sec-2">b bad sec</a>'
        '<a href="missing.html">missing</a> <a href="../_static/x.css">css</a>'
        '<a href="https://example.org/page.html#x">external</a> <a href="mailto:a@b.c">mail</a>'
        '<a href="sub/">dir</a> <a href="b.html?x=1#old-name">named anchor</a>'
        '<img src="../_images/ok.png"><img src="../_images/gone.png"><img src="https://example.org/i.png">',
    )
    _write(
        tmp_path,
        "book/b.html",
        '<section id="sec-1"><a name="old-name"></a><a href="a.html">back</a></section>',
    )
    _write(tmp_path, "book/sub/index.html", '<a href="../a.html#top">up</a>')
    _write(tmp_path, "book/orphan.html", "no links here")
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "x.css").write_text("body {}")
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "ok.png").write_bytes(b"not checked statically")
    return tmp_path


def test_parse_page_collects_ids_links_images_and_refresh():
    info = chk.parse_page(
        '<meta http-equiv="refresh" content="0; URL=\'x.html\'"><div id="d"><a name="n" href="y.html#d">y</a>'
        '<img src="p.png"><a id="e">no href</a></div>'
    )
    assert info.ids == {"d", "n", "e"}
    assert info.links == ["x.html", "y.html#d"]
    assert info.images == ["p.png"]


def test_resolve_internal_and_external():
    assert chk.resolve("book/a.html", "b.html#s") == ("book/b.html", "s")
    assert chk.resolve("book/a.html", "../_static/x.css") == ("_static/x.css", "")
    assert chk.resolve("book/a.html", "#top") == ("book/a.html", "top")
    assert chk.resolve("book/a.html", "b%20c.html#caf%C3%A9") == (
        "book/b c.html",
        "café",
    )
    assert chk.resolve("book/a.html", "https://example.org/") is None
    assert chk.resolve("book/a.html", "mailto:x@y.z") is None
    assert chk.resolve("book/a.html", "javascript:void(0)") is None


def test_check_link_finds_missing_pages_and_anchors(site: Path):
    s = chk.Site(site)
    page = "book/a.html"
    assert chk.check_link(s, page, "#top") is None
    assert chk.check_link(s, page, "b.html") is None
    assert chk.check_link(s, page, "b.html#sec-1") is None
    assert (
        chk.check_link(s, page, "b.html?x=1#old-name") is None
    )  # <a name=...> counts as an anchor
    assert chk.check_link(s, page, "sub/") is None  # a directory serves its index.html
    assert chk.check_link(s, page, "../_static/x.css") is None
    assert (
        chk.check_link(s, page, "https://example.org/page.html#x") is None
    )  # external: not checked
    assert "missing anchor #nowhere in book/a.html" in chk.check_link(
        s, page, "#nowhere"
    )
    assert "missing anchor #sec-2 in book/b.html" in chk.check_link(
        s, page, "b.html#sec-2"
    )
    assert "missing page/file 'book/missing.html'" in chk.check_link(
        s, page, "missing.html"
    )
    assert "missing page/file" in chk.check_link(
        s, page, "../../../etc/passwd"
    )  # outside the site


def test_crawl_follows_redirect_and_links_not_orphans(site: Path):
    pages = chk.crawl(
        chk.Site(site), ("index.html", "search.html")
    )  # search.html does not exist here
    assert pages == ["index.html", "book/a.html", "book/b.html", "book/sub/index.html"]


def test_static_check_reports_each_problem_once(site: Path):
    s = chk.Site(site)
    results = {r.page: r for r in chk.static_check(s, chk.crawl(s))}
    a = results["book/a.html"]
    assert len(a.errors) == 4, (
        a.errors
    )  # #nowhere, b.html#sec-2, missing.html, gone.png
    assert any("gone.png" in e for e in a.errors)
    assert a.warnings == ["external image https://example.org/i.png (not checked)"]
    assert not results["book/b.html"].errors and not results["index.html"].errors
    text, n_err = chk.report(list(results.values()), ["book/orphan.html"])
    assert n_err == 4
    assert "| book/a.html | 3 | 11 | 4 | 1 |" in text
    assert "book/orphan.html" in text


def test_main_no_browser_exit_codes(site: Path, tmp_path_factory, capsys):
    assert chk.main([str(site), "--no-browser"]) == 1
    assert "FAILED" in capsys.readouterr().out
    clean = tmp_path_factory.mktemp("clean")
    (clean / "index.html").write_text('<h1 id="x">ok</h1><a href="#x">x</a>')
    assert chk.main([str(clean), "--no-browser"]) == 0
    assert chk.main([str(clean / "nothing-here"), "--no-browser"]) == 2


def test_classify_log_entry():
    origin = "http://127.0.0.1:8000"
    ext = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js - Failed to load resource: net::ERR_NAME_NOT_RESOLVED"
    assert chk.classify_log_entry(ext, origin) == "warning"
    local = f"{origin}/_static/x.js - Failed to load resource: the server responded with a status of 404 (File not found)"
    assert chk.classify_log_entry(local, origin) == "error"
    assert (
        chk.classify_log_entry(
            f"{origin}/book/a.html 12:5 Uncaught ReferenceError: f is not defined",
            origin,
        )
        == "error"
    )


# --------------------------------------------------------------------------- real browser

_HAVE_BROWSER = (
    shutil.which("chromium") or shutil.which("chromium-browser")
) and shutil.which("chromedriver")
_HAVE_SELENIUM = importlib.util.find_spec("selenium") is not None


@pytest.mark.skipif(
    not (_HAVE_BROWSER and _HAVE_SELENIUM),
    reason="needs chromium, chromedriver and selenium",
)
def test_browser_check_on_tiny_site(tmp_path: Path):
    """Two pages: the second has one broken image and a JS error; a CDN script fails (warning only)."""
    from PIL import Image

    Image.new("RGB", (8, 6), "red").save(tmp_path / "ok.png")
    _write(
        tmp_path,
        "index.html",
        '<script src="https://cdn.example.invalid/lib.js"></script><img src="ok.png"><a href="two.html#s">two</a>',
    )
    _write(
        tmp_path,
        "two.html",
        '<h2 id="s">S</h2><img src="ok.png"><img src="broken.png"><a href="index.html#gone">bad anchor</a>'
        "<script>notDefinedAnywhere();</script>"
        '<div style="width: 300px"><pre>short line</pre>'
        f"<pre>{'x = 1  # ' + 'too long ' * 40}</pre></div>",
    )
    results = chk.browser_check(chk.Site(tmp_path), chk.crawl(chk.Site(tmp_path)))
    one, two = results
    assert (one.page, one.images, one.errors) == ("index.html", 1, [])
    assert len(one.warnings) == 1 and "cdn.example.invalid" in one.warnings[0]
    assert two.images == 2
    assert len(two.errors) == 4, two.errors
    assert any("broken.png" in e and "naturalWidth == 0" in e for e in two.errors)
    assert any("missing anchor #gone in index.html" in e for e in two.errors)
    assert any("notDefinedAnywhere" in e and "SEVERE" in e for e in two.errors)
    assert any(
        "code block scrolls sideways" in e and "too long" in e for e in two.errors
    ), two.errors
    text, n_err = chk.report(results, [])
    assert n_err == 4 and "| two.html | 2 | 1 | 4 | 0 |" in text

    (
        tmp_path / "two.html"
    ).unlink()  # now the site is clean apart from the offline CDN: it passes
    _write(tmp_path, "two.html", '<h2 id="s">S</h2><img src="ok.png"><pre>fits</pre>')
    shots = tmp_path.parent / "shots"
    assert chk.main([str(tmp_path), "--screenshots", str(shots)]) == 0
    assert sorted(p.name for p in shots.iterdir()) == ["index.html.png", "two.html.png"]


# --------------------------------------------------------------------------- formulas

_MATH = '<p>Entropy <span class="math notranslate nohighlight">\\(\\ln 5\\)</span>.</p>'
_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"


def _local_mathjax(root: Path) -> str:
    """MathJax copied into ``root/_static`` as the book's extension does; its src."""
    ext = load_script("_ext/mathjax_offline.py")
    ext.copy_mathjax(ext.mathjax_build(), "tex-mml-chtml.js", root / "_static")
    return "_static/mathjax/tex-mml-chtml.js"


def test_parse_page_counts_formulas_and_scripts():
    info = chk.parse_page(
        f'<script src="{_CDN}"></script><script>var x;</script>{_MATH}'
        '<div class="math notranslate">\\[x\\]</div><span class="mathjax-x">no</span>'
    )
    assert info.math == 2
    assert info.scripts == [_CDN]


def test_static_check_needs_a_local_mathjax_where_there_are_formulas(tmp_path: Path):
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "tex-mml-chtml.js").write_text("// MathJax")
    pages = {
        "index.html": '<a href="cdn.html">c</a> <a href="none.html">n</a> '
        '<a href="gone.html">g</a> <a href="plain.html">p</a>'
        f'<script defer src="_static/tex-mml-chtml.js"></script>{_MATH}',
        "cdn.html": f'<script defer src="{_CDN}"></script>{_MATH}',
        "none.html": _MATH,
        "gone.html": f'<script src="_static/mathjax/tex-chtml.js"></script>{_MATH}',
        "plain.html": f'<script src="{_CDN}"></script><p>no formula</p>',
    }
    for page, body in pages.items():
        _write(tmp_path, page, body)
    s = chk.Site(tmp_path)
    errors = {r.page: r.errors for r in chk.static_check(s, chk.crawl(s))}
    assert errors["index.html"] == [] and errors["plain.html"] == []
    assert "loads from another host" in errors["cdn.html"][0]
    assert "no MathJax script" in errors["none.html"][0]
    assert "MathJax script is missing" in errors["gone.html"][0]


@pytest.mark.parametrize(
    "text",
    [
        "the log of $\\ln 5$ nats",
        "a formula \\(x^2\\) left raw",
        "display \\[ y \\] math",
        "a ratio \\frac{a}{b} here",
        "$$x$$",
    ],
)
def test_raw_tex_finds_formulas_left_raw(text):
    assert chk.raw_tex(f"Some prose. {text} More prose.")


@pytest.mark.parametrize(
    "text",
    ["it costs $5 and $10", "C:\\textfiles\\new", "a plain (bracket) [and] more", "5$"],
)
def test_raw_tex_leaves_plain_text_alone(text):
    assert chk.raw_tex(text) == []


def test_local_mathjax_is_the_extensions_copy(tmp_path: Path):
    src = _local_mathjax(tmp_path)
    assert (tmp_path / src).is_file()
    fonts = tmp_path / "_static/mathjax/output/chtml/fonts/woff-v2"
    assert any(fonts.glob("MathJax_Main-Regular.woff"))
    ext = load_script("_ext/mathjax_offline.py")
    assert ext.is_local("mathjax/tex-mml-chtml.js")
    assert not ext.is_local(_CDN)
    with pytest.raises(Exception, match="does not have"):
        ext.files_to_copy(ext.mathjax_build(), "tex-nothing.js")


@pytest.mark.skipif(
    not (_HAVE_BROWSER and _HAVE_SELENIUM),
    reason="needs chromium, chromedriver and selenium",
)
def test_browser_check_fails_on_formulas_left_raw(tmp_path: Path):
    """Formulas typeset by the book's own MathJax pass; MathJax from a CDN (offline) and
    TeX outside any formula fail."""
    src = _local_mathjax(tmp_path)
    links = '<a href="cdn.html">c</a> <a href="dollars.html">d</a>'
    _write(tmp_path, "index.html", f'{links}<script defer src="{src}"></script>{_MATH}')
    _write(tmp_path, "cdn.html", f'<script defer src="{_CDN}"></script>{_MATH}')
    _write(
        tmp_path,
        "dollars.html",
        "<p>It costs $\\ln 5$ nats.</p><pre>code may say \\( and $\\ln</pre>",
    )
    pages = ["index.html", "cdn.html", "dollars.html"]
    results = {r.page: r for r in chk.browser_check(chk.Site(tmp_path), pages)}
    assert results["index.html"].errors == []
    cdn = results["cdn.html"].errors
    assert any("left raw" in e and "MathJax did not load" in e for e in cdn), cdn
    assert any("external resource failed" in w for w in results["cdn.html"].warnings)
    dollars = results["dollars.html"].errors  # the code block is not prose
    assert dollars == ["raw TeX in the page's text: 'It costs $\\\\ln 5$ nats.'"]
