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
