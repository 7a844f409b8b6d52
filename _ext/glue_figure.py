"""Numbered, captioned figures pasted from another page's notebook.

MyST-NB pastes a figure with a caption (``{glue:figure}``) only from the page's own
notebook, and pastes from another document only without a caption (``{glue:}`` with
``:doc:``). The chapter pages show their notebooks' key figures with a caption and a number,
so this extension lets ``{glue:figure}`` take the same ``path::key`` form that
``{glue:text}`` takes::

    ```{glue:figure} ../notebooks/ch3_four_cases.ipynb::ch3_results_figure
    :name: fig-ch3-results
    The caption.
    ```

The figure's image is a pending reference that MyST-NB resolves after every notebook was
read, exactly as for ``{glue:}`` with ``:doc:``. MyST-NB links such an image to
``_images/<sha256>.png`` but writes that file only when the notebook's own page shows the
same image; :class:`WriteGluedImages` writes it in every case.
"""

from __future__ import annotations

import hashlib
from binascii import a2b_base64
from mimetypes import guess_extension
from pathlib import Path

import myst_nb.ext.glue.directives as glue_directives
from myst_nb.ext.glue.directives import PasteFigureDirective
from myst_nb.ext.glue.utils import PendingGlueReference, create_pending_glue_ref
from sphinx.transforms.post_transforms import SphinxPostTransform


class CrossPageFigure(PasteFigureDirective):
    """``{glue:figure}`` that also accepts ``path/to/notebook.ipynb::key``."""

    def run(self):
        if "::" not in self.arguments[0]:
            return super().run()
        doc, key = self.arguments[0].split("::", 1)
        ref = create_pending_glue_ref(self.document, self.source, self.line, doc, key)
        saved = (
            glue_directives.retrieve_glue_data,
            glue_directives.render_variable_outputs,
        )
        # The figure, its name and caption are built by MyST-NB's own directive, around
        # the pending reference instead of the pasted image.
        glue_directives.retrieve_glue_data = lambda document, key: None
        glue_directives.render_variable_outputs = lambda *args, **kwargs: [ref]
        try:
            return super().run()
        finally:
            (
                glue_directives.retrieve_glue_data,
                glue_directives.render_variable_outputs,
            ) = saved


class WriteGluedImages(SphinxPostTransform):
    """Write the image of every pending cross-page glue reference where MyST-NB links it
    (runs just before MyST-NB replaces the references, which is priority 5)."""

    default_priority = 4
    formats = ("html",)

    def apply(self, **kwargs) -> None:
        from myst_nb.ext.glue.crossref import read_glue_cache

        folder = self.env.mystnb_config.output_folder
        images = Path(self.app.builder.outdir) / self.app.builder.imagedir
        for node in list(self.document.findall(PendingGlueReference)):
            data = (
                read_glue_cache(folder, node.refdoc).get(node.key, {}).get("data", {})
            )
            for mime in ("image/png", "image/jpeg", "image/gif"):
                if mime not in data:
                    continue
                content = a2b_base64(data[mime])
                extension = guess_extension(mime) or "." + mime.rsplit("/")[-1]
                extension = ".jpeg" if extension == ".jpe" else extension
                path = images / (hashlib.sha256(content).hexdigest() + extension)
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
                break


def setup(app):
    app.add_directive_to_domain("glue", "figure", CrossPageFigure, override=True)
    app.add_post_transform(WriteGluedImages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
