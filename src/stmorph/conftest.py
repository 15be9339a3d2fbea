"""Setup of the docstring examples, which ``make test`` runs with ``--doctest-modules`` on ``src/stmorph``.

It lies in the package (a top-level ``src/conftest.py`` would share the module name ``conftest``
with ``tests/conftest.py``, which ``--doctest-modules`` then refuses to collect) and is left out
of the wheel (``pyproject.toml``, ``[tool.hatch.build.targets.wheel]``).
"""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")  # examples of plots draw into memory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the examples that read the shipped HER2ST sections ``slow``, as ``tests/conftest.py`` marks such tests."""
    for item in items:
        examples = getattr(getattr(item, "dtest", None), "examples", ())
        if any("st.datasets.her2st" in example.source for example in examples):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _example_setup(tmp_path, monkeypatch):
    """Each example runs in a fresh temporary folder (a file it writes never lands in the repository),
    its figures are closed afterwards, and torch uses one thread (the examples' models are tiny: one
    thread trains them as fast, and many times faster when other processes share the cores)."""
    import matplotlib.pyplot as plt
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    plt.close("all")
