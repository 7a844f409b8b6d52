"""The chapter pages hold no hand-typed measurements: every measured number is pasted.

The book promises that every claim is measured by a notebook that CI runs, and that the
numbers in the prose come from those runs (MyST-NB glue, also across pages). A number typed
by hand goes stale the day a notebook changes. This test reads every page of the book as
prose (code blocks, inline code, roles such as ``{glue:text}`` and ``{cite}``, maths and
links removed) and fails on anything that looks like a measurement: a decimal accuracy, a
percentage, a speed-up factor, a parameter count, a duration or a number of points.

Constants that are not measurements (ImageNet's mean and standard deviation, the size of
ImageNet, settings the notebooks choose) are allowed by name in ``ALLOWED`` below, each with
the reason.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The timing table is not prose: the test run itself writes it (conftest.py) from what it
# measured, so its numbers are pasted by construction.
PAGES = sorted(
    p for p in (ROOT / "book").glob("*.md") if p.name != "appendix_timings_table.md"
)

MEASUREMENT = {
    "decimal": r"(?<![\w.])0?\.\d{2,}\b",
    "percentage": r"\d[\d.,]*\s?(?:%|percent\b|per cent\b)",
    "factor": (
        r"\b\d[\d.,]*\s?[x×](?![\w\d]|\s?\d)"  # "12x", not "64x64" or "1280 x 2"
        r"|\b(?:\d[\d.,]*|ten|twenty|fifty|a hundred|hundred|a thousand|thousand)"
        r"\s+times\s+(?:faster|cheaper|costlier|more expensive)"
    ),
    "count": r"\b\d{1,3}(?:,\d{3})+\b|\b\d+(?:\.\d+)?\s+(?:million|billion)\b",
    "duration": r"\b\d+(?:\.\d+)?\s?(?:s|ms|sec|seconds|minutes|min|hours)\b",
    "points": r"\b\d+(?:\.\d+)?\s+(?:percentage\s+)?points\b",
}

# (page, exact text) pairs that look like measurements but are not ours to measure.
ALLOWED = {
    # ImageNet's per-channel mean and standard deviation: constants of the preprocessing.
    **{
        (page, value): "ImageNet normalisation constant"
        for page in ("ch1_pretrained_models.md", "glossary.md")
        for value in ("0.485", "0.456", "0.406", "0.229", "0.224", "0.225")
    },
    ("ch1_pretrained_models.md", "1.28 million"): "the size of ImageNet-1k (cited)",
    ("glossary.md", "1.28 million"): "the size of ImageNet-1k (cited)",
    ("ch3_four_cases.md", "27,000"): "the size of EuroSAT (cited)",
    ("ch3_four_cases.md", "3,000"): "an imagined dataset in an exercise",
    ("appendix_timings.md", "4 minutes"): "the budget of one notebook (a setting)",
    ("appendix_timings.md", "10 minutes"): "the budget of all notebooks (a setting)",
    # The verdict rule's confidence level (tlutils.verdict.LEVEL), named on every page.
    **{(page.name, "95%"): "the verdict rule's confidence level" for page in PAGES},
}

FENCE = re.compile(r"^(`{3,}|:{3,})\s*(\{[\w-]+\}|[\w-]*)")
CODE_FENCES = {"", "python", "bash", "text", "console", "{code-cell}", "{code-block}"}
REMOVED = [
    re.compile(r"\{[\w:-]+\}`[^`]*`"),  # roles: {glue:text}`...`, {cite}`...`, {doc}...
    re.compile(r"`[^`]*`"),  # inline code
    re.compile(r"\$[^$]*\$"),  # maths
    re.compile(r"\]\([^)]*\)|https?://\S+|<[^>]+>"),  # link targets, addresses, HTML
]


def prose_lines(text: str) -> list[str]:
    """The page's prose: code blocks dropped, directive bodies (exercises, notes) kept."""
    lines, closing = [], None
    for line in text.splitlines():
        if closing is not None:
            if line.strip() == closing:
                closing = None
            continue
        fence = FENCE.match(line)
        if fence:
            if fence.group(1).startswith("`") and fence.group(2) in CODE_FENCES:
                closing = fence.group(1)  # a code block: skip to its end
            continue  # a directive's opening or closing line
        if not re.match(r"^:[\w-]+:", line):  # not a directive's option
            lines.append(line)
    prose = "\n".join(lines)
    for pattern in REMOVED:  # on the whole text: inline code may span lines
        prose = pattern.sub(lambda m: "\n" * m.group(0).count("\n") + " ", prose)
    return prose.splitlines()


def typed_measurements(page: Path) -> list[str]:
    """Every measurement-like number in the page's prose that is not allowed by name."""
    found = []
    for line in prose_lines(page.read_text()):
        for kind, pattern in MEASUREMENT.items():
            for match in re.finditer(pattern, line, flags=re.I):
                text = match.group(0).strip()
                if (page.name, text) not in ALLOWED:
                    found.append(f"{kind} {text!r} in: {line.strip()[:100]}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_holds_no_hand_typed_measurement(page):
    found = typed_measurements(page)
    assert not found, (
        f"{page.name} types measurements by hand; paste them from the notebook with "
        "{glue:text}`../notebooks/<notebook>.ipynb::<key>:<format>` (or allow a "
        "constant in ALLOWED with its reason):\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "line",
    [
        "All three reach 0.93 on validation.",
        "the cached path is 120x faster",
        "a hundred times cheaper than fine-tuning",
        "it has 2,562 trainable parameters",
        "VGG16 has 138 million parameters",
        "an epoch takes 4.5 s on the CPU",
        "accuracy drops by 12 points",
        "a top-1 accuracy of 75.1%",
        "::::{solution} ex\nIn our run it lost 0.03.\n::::",
    ],
)
def test_the_check_finds_typed_measurements(tmp_path, line):
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n{line}\n")
    assert typed_measurements(page)


@pytest.mark.parametrize(
    "line",
    [
        "Accuracy {glue:text}`../notebooks/ch2.ipynb::ch2_acc:.3f` on validation.",
        "stage 5 of 8 at 224 px, maps of 7x7, a 1280 x 2 weight matrix",
        "```python\nlr = 0.001  # 12.5x\n```",
        "`tl.fit(model, lr=0.003)` and $0.5 \\cdot x$ and {cite}`yosinski2014`",
    ],
)
def test_the_check_leaves_pasted_values_code_and_constants_alone(tmp_path, line):
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n{line}\n")
    assert typed_measurements(page) == []
