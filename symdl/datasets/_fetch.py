"""Downloading dataset files once: standard mirrors, SHA-256 check, a cache folder, atomic writes.

The cache is `$SYMDL_DATA_DIR` when set, else `~/.cache/symdl/datasets`; each dataset has a
subfolder. A file already in the cache is used when its SHA-256 matches (so a user may also copy
the files there by hand); otherwise the mirrors are tried in order. Without network access the
error names the files, the mirrors and the folder to place the files in.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(OSError):
    """A dataset file could not be fetched from any mirror (offline, moved, or corrupt)."""


def data_dir() -> Path:
    """Where downloaded datasets live: $SYMDL_DATA_DIR or ~/.cache/symdl/datasets."""
    env = os.environ.get("SYMDL_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "symdl" / "datasets"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def urlopen(url: str):
    """The one network call (tests replace it)."""
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 - fixed https/http mirrors


def _download(url: str, dest: Path, sha256: str) -> None:
    """Stream url into a temporary file beside dest, check the digest, then os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urlopen(url) as response:
            while chunk := response.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            raise DownloadError(f"{url}: SHA-256 {h.hexdigest()} differs from the expected {sha256}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch(dataset: str, filename: str, mirrors: tuple[str, ...], sha256: str) -> Path:
    """The cached path of `filename`, downloading it from the first mirror that works."""
    folder = data_dir() / dataset
    dest = folder / filename
    if dest.exists():
        if sha256_of(dest) == sha256:
            return dest
        dest.unlink()  # a stale or damaged copy: fetch it again
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in mirrors:
        url = base + filename
        try:
            _download(url, dest, sha256)
            return dest
        except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
            errors.append(f"  {url}: {e}")
    raise DownloadError(
        f"could not download {dataset} file {filename!r} (no network access?). Tried:\n" + "\n".join(errors)
        + f"\nPlace the file (SHA-256 {sha256}) in {folder} by hand, or set SYMDL_DATA_DIR to a folder "
          f"holding {dataset}/{filename}.")
