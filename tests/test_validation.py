"""Every bad input of ``tests/bad_inputs.py`` raises its specific error and leaves the AnnData unchanged."""

from __future__ import annotations

import warnings

import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import CASES, BadInput

from stmorph import errors


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
    types = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    ]
    assert len(types) >= 9
    assert all(issubclass(e, ValueError | KeyError) for e in types)
    assert sorted(errors.__all__) == sorted(e.__name__ for e in types)


def test_every_specific_stmorph_error_is_exercised_by_a_bad_input():
    used = {case.expected for case in CASES}
    specific = {
        errors.StmorphKeyError,
        errors.ShapeMismatchError,
        errors.NonFiniteError,
        errors.TooFewObservationsError,
        errors.InvalidParameterError,
        errors.InputTypeError,
        errors.OutOfImageError,
        errors.UnsafeCheckpointError,
        errors.ModelFileError,
        errors.InconsistentUnitsError,
    }
    assert specific <= used


def test_out_of_image_error_gives_the_count_of_spots_outside():
    case = next(c for c in CASES if c.expected is errors.OutOfImageError)
    _, call = case.build()
    with pytest.raises(errors.OutOfImageError, match=r"^3 of 4 spot centres lie outside"):
        call()
