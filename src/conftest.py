"""Setup of the docstring examples, which ``make test`` runs with ``--doctest-modules`` on ``src/stmorph``.

This file lies beside the package, not in it: it is not installed.
"""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")  # examples of plots draw into memory


@pytest.fixture(autouse=True)
def _example_in_a_temporary_folder(tmp_path, monkeypatch):
    """Each example runs in a fresh temporary folder, so a file it writes never lands in the repository,
    and its figures are closed afterwards."""
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    yield
    plt.close("all")
