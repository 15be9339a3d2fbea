"""Every bad input of ``tests/bad_inputs.py`` raises its specific error and leaves the AnnData unchanged."""

from __future__ import annotations

import warnings

import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import CASES, BadInput

from stmorph import _validation


@pytest.mark.parametrize("case", CASES, ids=[f"{c.function}: {c.problem}" for c in CASES])
def test_bad_input_raises_specific_error_and_leaves_adata_unchanged(case: BadInput):
    target, call = case.build()
    before = None if target is None else target.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(case.expected) as info:
            call()
    assert str(info.value).strip(), "the error must say what is wrong"
    if target is not None:
        assert_adata_equal(target, before)


def test_stmorph_errors_subclass_valueerror_or_keyerror():
    errors = [
        obj
        for obj in vars(_validation).values()
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == _validation.__name__
    ]
    assert len(errors) >= 9
    assert all(issubclass(e, ValueError | KeyError) for e in errors)


def test_every_specific_stmorph_error_is_exercised_by_a_bad_input():
    used = {case.expected for case in CASES}
    specific = {
        _validation.StmorphKeyError,
        _validation.ShapeMismatchError,
        _validation.NonFiniteError,
        _validation.TooFewObservationsError,
        _validation.InvalidParameterError,
        _validation.InputTypeError,
        _validation.OutOfImageError,
        _validation.UnsafeCheckpointError,
        _validation.ModelFileError,
        _validation.InconsistentUnitsError,
    }
    assert specific <= used


def test_out_of_image_error_gives_the_count_of_spots_outside():
    case = next(c for c in CASES if c.expected is _validation.OutOfImageError)
    _, call = case.build()
    with pytest.raises(_validation.OutOfImageError, match=r"^3 of 4 spot centres lie outside"):
        call()
