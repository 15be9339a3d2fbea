"""Every bad input of ``tests/bad_inputs.py`` raises its specific error and leaves the AnnData unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import CASES, BadInput

from stmorph import errors
from stmorph._validation import check_device, check_int, check_path, check_range


def _param(case: BadInput):
    """A catalogue case; the ones that rewrite a shipped HER2ST section are ``slow``."""
    marks = [pytest.mark.slow] if case.function == "st.datasets.her2st" and "count" in case.problem else []
    return pytest.param(case, id=f"{case.function}: {case.problem}", marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
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
    # a missing optional package is an import problem, not a bad value
    assert issubclass(errors.MissingDependencyError, ModuleNotFoundError)
    assert all(issubclass(e, ValueError | KeyError) for e in types if e is not errors.MissingDependencyError)
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
        errors.DamagedFileError,
        errors.MissingPathError,
        errors.PathKindError,
        errors.MissingDependencyError,
    }
    assert specific <= used


def test_out_of_image_error_gives_the_count_of_spots_outside():
    case = next(c for c in CASES if c.expected is errors.OutOfImageError)
    _, call = case.build()
    with pytest.raises(errors.OutOfImageError, match=r"^3 of 4 spot centres lie outside"):
        call()


@pytest.mark.parametrize(
    ("value", "expected"), [(5, 5), (5.0, 5), (np.int64(7), 7), (np.float32(3.0), 3), (2**40, 2**40)]
)
def test_check_int_accepts_integer_like_values(value, expected):
    result = check_int(value, "n", low=0)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", [2.5, True, np.bool_(False), np.nan, np.inf, "5", None, [5], -1])
def test_check_int_refuses_non_integers_naming_the_parameter(value):
    with pytest.raises(errors.InvalidParameterError, match=r"^n_neighbors must be an integer in \[0, inf\); found"):
        check_int(value, "n_neighbors", low=0)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_check_device_accepts_the_documented_devices(device):
    assert check_device(device) == device


@pytest.mark.parametrize("device", ["banana", "cuda:", "cuda:x", "CPU", " cpu", 0, None])
def test_check_device_lists_the_accepted_devices(device):
    with pytest.raises(errors.InvalidParameterError, match=r"device=.* is not a device; choose one of \['auto', 'cpu'"):
        check_device(device)


def test_check_range_refuses_non_finite_values_even_without_bounds():
    assert check_range(-3.5, "effect") == -3.5
    for value in (np.nan, np.inf, -np.inf, True, "1"):
        with pytest.raises(errors.InvalidParameterError, match=r"^effect must be a finite number"):
            check_range(value, "effect")


def test_check_path_kinds(tmp_path):
    file = tmp_path / "f.txt"
    file.write_text("x")
    assert check_path(file, "weights", "file") == file
    assert check_path(tmp_path / "new", "checkpoint", "folder_to_write") == tmp_path / "new"
    with pytest.raises(errors.MissingPathError, match=r"weights: .* does not exist") as info:
        check_path(tmp_path / "missing.pt", "weights", "file")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(errors.PathKindError, match=r"checkpoint: .* is a file"):
        check_path(file, "checkpoint", "folder_to_write")
    with pytest.raises(errors.PathKindError, match=r"--out: .* is a folder"):
        check_path(tmp_path, "--out", "file_to_write")
    with pytest.raises(errors.InputTypeError, match="weights must be a path"):
        check_path(3, "weights", "file")
