"""No raw glue key in the book's prose: measured numbers are pasted, never named.

A notebook stores a measured value under a key (``tl.glue("ch1_insect_top1", ...)``)
and a chapter page pastes the value with ``{glue:text}`...::ch1_insect_top1:.1%```.
Written anywhere else, the key itself reaches the reader ("the share printed above
(ch1_insect_top1)"), in the book and in Colab alike. This test collects every glued key
(the literal keys of the notebooks' ``glue`` calls, and every key a page pastes, which
covers keys built with f-strings) and fails when one appears in a notebook's markdown
cell (inline code included: it is shown as it is) or in a page's text outside roles,
directive lines and code blocks.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))

GLUE_CALL = re.compile(r"\bglue\(\s*[\"']([^\"'{}]+)[\"']")  # a literal key, not f"..."
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]*)`")  # {glue:text}`path::key:fmt`
GLUE_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{glue(?::\w+)?\}\s+(\S+)", re.M)
ROLE = re.compile(r"\{[\w:-]+\}`[^`]*`")  # every role: it renders text of its own
FENCE = re.compile(r"^\s*(`{3,}|:{3,})\s*(\{[\w:-]+\}|[\w-]*)(.*)$")
CODE = {"", "python", "bash", "text", "console", "{code-cell}", "{code-block}"}


def cells(notebook: Path, kind: str) -> list[str]:
    return [
        "".join(c["source"])
        for c in json.loads(notebook.read_text())["cells"]
        if c["cell_type"] == kind
    ]


def role_key(content: str) -> str:
    """The key of a glue role's content: ``path::key:fmt``, ``key:fmt`` or ``key``."""
    return content.split("::", 1)[-1].split(":", 1)[0]


def glued_keys() -> set[str]:
    """Every key the notebooks glue and the pages paste."""
    keys = {
        key
        for notebook in NOTEBOOKS
        for source in cells(notebook, "code")
        for key in GLUE_CALL.findall(source)
    }
    for page in PAGES:
        text = page.read_text()
        keys |= {role_key(c) for c in GLUE_ROLE.findall(text)}
        keys |= {arg.split("::")[-1] for arg in GLUE_DIRECTIVE.findall(text)}
    return {key for key in keys if key}


def page_prose(text: str) -> str:
    """A page's text as the reader sees it, less roles (glue and others), directive
    lines (a glue figure's key, options such as ``:name:``) and code blocks."""
    lines, closing = [], None
    for line in text.splitlines():
        if closing is not None:
            if line.strip() == closing:
                closing = None
            continue
        fence = FENCE.match(line)
        if fence:
            if fence.group(1).startswith("`") and fence.group(2) in CODE:
                closing = fence.group(1).strip()
            elif not fence.group(2).startswith("{glue") and fence.group(3).strip():
                lines.append(fence.group(3))  # a directive's title is shown
            continue
        if not re.match(r"^\s*:[\w-]+:", line):
            lines.append(line)
    return ROLE.sub(" ", "\n".join(lines))


def raw_keys(text: str, keys: set[str]) -> list[str]:
    """The keys that ``text`` names."""
    return sorted(
        key for key in keys if re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", text)
    )


KEYS = glued_keys()


def test_keys_are_found():
    assert {"ch1_insect_top1", "ch1_photos_figure"} <= KEYS
    assert any(key.startswith("ch3") for key in KEYS)  # f-string keys, from the pages


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_markdown_names_no_glue_key(notebook):
    found = {
        key for text in cells(notebook, "markdown") for key in raw_keys(text, KEYS)
    }
    assert not found, (
        f"{notebook.name}: markdown cells name glue keys, which readers see raw: "
        f"{sorted(found)}. Say in words which printed number you mean."
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_prose_names_no_glue_key(page):
    found = raw_keys(page_prose(page.read_text()), KEYS)
    assert not found, (
        f"{page.name}: the prose names glue keys instead of pasting them: {found}. "
        "Paste the value with {glue:text}`../notebooks/<notebook>.ipynb::<key>:<fmt>`."
    )


@pytest.mark.parametrize(
    "text",
    [
        "the share printed above (`ch1_insect_top1`)",
        "prints the ratios: ch1_vgg_params_ratio, ch1_vgg_flops_ratio",
        ":::{admonition} About ch1_insect_top1\nx\n:::",
    ],
)
def test_the_check_finds_raw_keys(text):
    keys = {"ch1_insect_top1", "ch1_vgg_params_ratio"}
    assert raw_keys(page_prose(text), keys)


@pytest.mark.parametrize(
    "text",
    [
        "{glue:text}`../notebooks/ch1.ipynb::ch1_insect_top1:.1%` of the images",
        "```{glue:figure} ../nb.ipynb::ch1_insect_top1\n:name: x\nA caption\n```",
        "```python\ntl.glue('ch1_insect_top1', acc)\n```",
        "a longer key ch1_insect_top1_low or ch1_insect_top1-high is another key",
    ],
)
def test_the_check_leaves_pasted_keys_alone(text):
    assert raw_keys(page_prose(text), {"ch1_insect_top1"}) == []
