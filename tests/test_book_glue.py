from pathlib import Path

import numpy as np
import torch

import tlutils as tl


def test_glue_turns_scalars_into_plain_numbers(monkeypatch):
    stored = {}
    import myst_nb

    monkeypatch.setattr(
        myst_nb, "glue", lambda name, value, display=True: stored.update({name: value})
    )
    tl.glue("a", np.float64(0.5))
    tl.glue("b", torch.tensor(3))
    tl.glue("c", "text")
    assert stored == {"a": 0.5, "b": 3, "c": "text"}
    assert type(stored["a"]) is float and type(stored["b"]) is int


def test_glue_prints_name_and_value_in_the_page_format(capsys):
    tl.glue("acc", np.float64(0.91234), ".3f")
    tl.glue("name", "stage 5")
    assert capsys.readouterr().out.splitlines() == ["acc = 0.912", "name = stage 5"]


def test_book_url_is_the_configured_base_address():
    import yaml

    from tlutils.book import BOOK_URL, book_link

    config = yaml.safe_load((Path(__file__).parents[1] / "_config.yml").read_text())
    assert config["html"]["baseurl"] == BOOK_URL
    assert book_link("book/glossary.md", "term-probe") == (
        BOOK_URL + "book/glossary.html#term-probe"
    )


def test_glue_stores_a_table_without_its_row_numbers(monkeypatch):
    import myst_nb
    import pandas as pd

    stored = {}
    monkeypatch.setattr(
        myst_nb, "glue", lambda name, value, display=True: stored.update({name: value})
    )
    tl.glue(
        "table", pd.DataFrame({"arm": ["probe", "cut"], "accuracy": ["90%", "93%"]})
    )
    html = stored["table"].to_html()
    assert "probe" in html and "93%" in html
    assert "row_heading" not in html  # no index column


def test_every_cross_page_glue_text_role_ends_with_a_format():
    # MyST-NB reads {glue:text}`path::key:fmt` by splitting at the last colon: without
    # ":fmt" (":s" for a sentence) the key is lost and the page shows a warning instead.
    import re

    book = Path(__file__).resolve().parents[1] / "book"
    roles = re.compile(r"\{glue:text\}`([^`]*)`")
    missing = [
        f"{page.name}: {role}"
        for page in sorted(book.glob("*.md"))
        for role in roles.findall(page.read_text())
        if "::" in role and ":" not in role.split("::", 1)[1]
    ]
    assert not missing, missing
