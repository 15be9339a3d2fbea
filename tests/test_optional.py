"""Optional dependencies: a method that needs one names the extra that installs it, and fails before any work."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import table

import stmorph as st
from stmorph._optional import import_optional
from stmorph.errors import MissingDependencyError
from stmorph.models._baselines import LightGBM


@pytest.fixture
def no_lightgbm(monkeypatch):
    """As if lightgbm were not installed: ``None`` in ``sys.modules`` makes ``import lightgbm`` fail."""
    monkeypatch.setitem(sys.modules, "lightgbm", None)


def test_lightgbm_method_without_the_package_names_the_extra_and_leaves_adata_unchanged(no_lightgbm):
    adata = table()
    before = adata.copy()
    named = r'method="lightgbm" needs the package `lightgbm`.*stmorph\[lightgbm\]'
    with pytest.raises(MissingDependencyError, match=named):
        st.tl.predict(adata, method="lightgbm", use_rep="X_lat", split=0.2)
    assert_adata_equal(adata, before)
    with pytest.raises(ModuleNotFoundError, match=r"stmorph\[lightgbm\]"):  # what `except ImportError` code catches
        LightGBM(n_estimators=2)


def test_lightgbm_method_works_again_once_the_package_is_there():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    model = LightGBM(n_estimators=5, progress=False).fit(X, X[:, :1] * 2)
    assert model.predict(X).shape == (40, 1)


def test_stain_normalisation_without_torchstain_names_the_stain_extra(monkeypatch):
    from stmorph.pp._stain import stain_normalizer

    for name in [name for name in sys.modules if name.startswith("torchstain.")]:  # imported by earlier tests
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchstain", None)
    with pytest.raises(MissingDependencyError, match=r"stain_norm needs the package `torchstain`.*stmorph\[stain\]"):
        stain_normalizer("macenko")


def test_a_missing_dependency_of_the_optional_package_is_not_reported_as_the_package(monkeypatch, tmp_path):
    # the optional package is installed but imports a module that is not: its own error must surface
    (tmp_path / "fake_optional.py").write_text("import not_installed_dependency_of_fake\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        import_optional("fake_optional", package="fake-optional", extra="fake", needed_for="this test")
    assert not isinstance(info.value, MissingDependencyError)
    assert info.value.name == "not_installed_dependency_of_fake"
