"""stmorph's logger follows scanpy's verbosity while Python logging is not configured, and never imports scanpy."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from contextlib import contextmanager

import pytest
import scanpy as sc

from stmorph._logging import logger

SCRIPT = """
import logging, sys
import stmorph as st
print("scanpy imported by stmorph:", "scanpy" in sys.modules)
import scanpy as sc
adata = st.datasets.simulate(40, 8, n_planted=2).tables["table"]
for verbosity in ("info", "warning"):
    sc.settings.verbosity = verbosity
    print("verbosity", verbosity, file=sys.stderr)
    st.pp.prepare_expression(adata.copy())
logging.getLogger("stmorph").setLevel(logging.INFO)  # a level of its own wins over scanpy's
print("own level", file=sys.stderr)
st.pp.prepare_expression(adata.copy())
"""


def test_a_session_sees_stmorph_info_lines_at_scanpy_info_verbosity_only():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "scanpy imported by stmorph: False"
    at_info, rest = done.stderr.split("verbosity warning")
    at_warning, own_level = rest.split("own level")
    assert "prepare_expression kept 8 of 8 genes" in at_info  # written by scanpy's stream, as scanpy's own lines
    assert "prepare_expression kept" not in at_warning
    # with a level set on it, stmorph leaves scanpy's stream (no root handler here: nothing is printed)
    assert "prepare_expression kept" not in own_level


@contextmanager
def scanpy_stream():
    """scanpy's log stream as a StringIO and Python logging unconfigured (pytest's root handlers set aside).

    Entered inside the test body: pytest adds its root handlers at the start of each test phase.
    """
    root, stream = logging.getLogger(), io.StringIO()
    handlers, verbosity, logfile = root.handlers, sc.settings.verbosity, sc.settings.logfile
    root.handlers, sc.settings.logfile = [], stream
    try:
        yield stream
    finally:
        root.handlers, sc.settings.verbosity, sc.settings.logfile = handlers, verbosity, logfile


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [
        ("error", {"ERROR"}),
        ("warning", {"ERROR", "WARNING"}),
        ("info", {"ERROR", "WARNING", "INFO"}),
        (4, {"ERROR", "WARNING", "INFO", "DEBUG"}),
    ],
)
def test_the_level_follows_scanpy_verbosity(verbosity, shown):
    with scanpy_stream() as stream:
        sc.settings.verbosity = verbosity
        for level in ("DEBUG", "INFO", "WARNING", "ERROR"):
            logger.log(getattr(logging, level), "line at %s", level)
    lines = stream.getvalue().splitlines()
    assert {line.rsplit(" ", 1)[1] for line in lines} == shown
    assert ("line at INFO" in lines) == ("INFO" in shown)  # info lines plain, as scanpy writes its own
    assert ("WARNING: line at WARNING" in lines) == ("WARNING" in shown)


def test_a_change_of_verbosity_applies_at_once():
    with scanpy_stream():
        sc.settings.verbosity = "warning"
        assert not logger.isEnabledFor(logging.INFO)
        sc.settings.verbosity = "info"
        assert logger.isEnabledFor(logging.INFO)
        assert logger.getEffectiveLevel() == logging.INFO


def test_configured_python_logging_takes_over_from_scanpy(monkeypatch):
    handler, root = logging.StreamHandler(io.StringIO()), logging.getLogger()
    level = root.level
    with scanpy_stream() as stream:
        sc.settings.verbosity = "error"
        monkeypatch.setattr(root, "handlers", [handler])  # as logging.basicConfig(level=logging.INFO)
        root.setLevel(logging.INFO)
        try:
            logger.info("to the root handler")
        finally:
            root.setLevel(level)
    assert handler.stream.getvalue() == "to the root handler\n"
    assert stream.getvalue() == ""


def test_a_level_set_on_the_stmorph_logger_wins():
    with scanpy_stream() as stream:
        sc.settings.verbosity = "debug"
        logger.setLevel(logging.ERROR)
        try:
            assert not logger.isEnabledFor(logging.WARNING)
            logger.error("not through scanpy")
        finally:
            logger.setLevel(logging.NOTSET)
        assert logger.isEnabledFor(logging.DEBUG)
    assert stream.getvalue() == ""
