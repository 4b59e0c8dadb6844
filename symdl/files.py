"""Files written so that nothing is lost: a temporary file in the target's folder, fsynced, then
moved into place with os.replace. Readers see the old file or the new one, never half of one; a
crash leaves at most a temporary, which is removed when the write fails in-process."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, write, prefix: str | None = None, in_flight: set | None = None,
                 lock=None) -> None:
    """`write(file)` fills a temporary (created 0o600 by mkstemp, owned by this user) that then
    replaces `path`. `prefix` names the temporary (default `.<name>.`); `in_flight`, a set the
    temporary's absolute path is in while it is written (added under `lock`), lets a cleaner of
    stray temporaries leave live ones alone."""
    path = Path(path)
    with lock if lock is not None else contextlib.nullcontext():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.", suffix=".tmp")
        tmp = os.path.abspath(tmp)
        if in_flight is not None:
            in_flight.add(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if in_flight is not None:
            in_flight.discard(tmp)
