"""Files that are never half-written, and digests that change with their inputs (all chapters).

Everything tlutils writes to disk (cached features, checkpoints, exports, reports, the
timings it remembers) goes through :func:`atomic_write`: written to a temporary file in the
same folder, optionally read back, then renamed over the target in one step, so an
interrupted run leaves the old file or the new one, never a broken one. Cache keys come
from :func:`digest`, one hash of tensors, arrays, weights and settings.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "digest"]


def atomic_write(
    path: str | Path,
    write: Callable[[str], None],
    check: Callable[[str], None] | None = None,
) -> Path:
    """Write a file in one step (all chapters): ``write(tmp)`` writes the content to a
    temporary file beside ``path``; ``check(tmp)``, if given, reads it back (raising if it
    is wrong); then it replaces ``path``. On any error the temporary file is removed and
    ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file in one step (:func:`atomic_write`) (all chapters)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, newline=""))


def digest(*parts: Any, length: int = 32) -> str:
    """A SHA-256 hex digest of ``parts`` (all chapters): tensors and arrays by dtype,
    shape and bytes, modules by their weights, containers item by item, anything else by
    its ``repr``. Equal inputs give equal digests on any machine."""
    import numpy as np
    import torch
    from torch import nn

    h = hashlib.sha256()

    def add(part: Any) -> None:
        if isinstance(part, nn.Module):
            for name, value in part.state_dict().items():
                h.update(name.encode())
                add(value)
        elif isinstance(part, (torch.Tensor, np.ndarray)):
            array = torch.as_tensor(part).detach().cpu().contiguous()
            h.update(f"{array.dtype}{tuple(array.shape)}".encode())
            h.update(array.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(part, (tuple, list)):
            h.update(b"[")
            for item in part:
                add(item)
            h.update(b"]")
        elif isinstance(part, dict):
            add(sorted(part.items(), key=lambda kv: repr(kv[0])))
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(repr(part).encode())

    for part in parts:
        add(part)
    return h.hexdigest()[:length]
