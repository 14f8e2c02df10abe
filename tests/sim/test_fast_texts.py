"""The fast engines' text columns (``sim.fast._texts``) are what pandas makes from Python
strings, dtype included, on pyarrow's path and on pandas' own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim import fast


@pytest.mark.parametrize("arrow", [True, False])
@pytest.mark.parametrize(
    ("values", "at"),
    [
        (("sim",), np.zeros(2_000, dtype=np.intp)),
        (("completed", "failed", "paused"), np.array([2, 0, 0, 1, 2], dtype=np.intp)),
        (("pr696",), np.zeros(0, dtype=np.intp)),
    ],
)
def test_texts_are_pandas_own(monkeypatch: pytest.MonkeyPatch, arrow: bool, values, at) -> None:
    if not arrow:
        monkeypatch.setattr(fast, "_arrow_text", lambda: None)
    elif fast._arrow_text() is None:
        pytest.skip("this pandas keeps text outside pyarrow")
    want = pd.Series(list(values)).array.take(at)
    got = fast._texts(values, at)
    assert got.dtype == want.dtype and type(got) is type(want)
    pd.testing.assert_extension_array_equal(got, want)
