"""Where example data is looked up, and downloading it for users outside this workplace."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from .._logging import logger
from ..errors import DamagedFileError

DATA_ENV = "STMORPH_DATA_DIR"
CACHE_ENV = "STMORPH_CACHE_DIR"


def _repo_shared_data() -> Path:
    # src/stmorph/datasets/_paths.py -> repository root -> ../shared/data
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def cache_dir() -> Path:
    """User cache for downloaded data: ``$STMORPH_CACHE_DIR``, else ``$XDG_CACHE_HOME/stmorph``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stmorph"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> tuple[Path, bool]:
    """Return the data folder and whether it is the download cache.

    Order: the ``data_dir`` argument, ``$STMORPH_DATA_DIR``, ``../shared/data`` beside the
    repository when it exists, else the user cache (filled by downloading on demand).
    """
    if data_dir is not None:
        return Path(data_dir), False
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]), False
    shared = _repo_shared_data()
    if shared.is_dir():
        return shared, False
    return cache_dir(), True


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, expected_sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its checksum.

    With ``expected_sha256`` the file must match it. Without it, the checksum of the first
    download is stored beside the file (``<dest>.sha256``) and every later use is verified
    against it, so a truncated or altered file is detected.

    Raises
    ------
    ConnectionError
        The machine is offline or the server refused; the message says where to put the file.
    OSError
        The checksum does not match.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    logger.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
            while block := resp.read(1 << 20):
                fh.write(block)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {url} ({err}). If this machine is offline, place the file at {dest} "
            f"or point ${DATA_ENV} to a folder that holds it."
        ) from err
    digest = sha256(tmp)
    if expected_sha256 is not None and digest != expected_sha256:
        tmp.unlink(missing_ok=True)
        raise OSError(f"checksum mismatch for {url}: expected {expected_sha256}, got {digest}")
    tmp.replace(dest)
    dest.with_name(dest.name + ".sha256").write_text(digest + "\n")
    return dest


def verify_cached(path: Path) -> None:
    """Check a cached download against the checksum stored when it was downloaded."""
    record = path.with_name(path.name + ".sha256")
    if record.exists() and sha256(path) != record.read_text().strip():
        raise DamagedFileError(
            f"{path} does not match the checksum recorded at download ({record}); delete it and retry."
        )
