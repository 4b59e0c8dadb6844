"""Model files: one `.npz` (no pickle) holding the weights and the architecture as JSON bytes.

Layout: "symdl_model" is a uint8 array of UTF-8 JSON {"format", "version", "model": config,
"compile": config or null, "weights": count, "optimizer": {"iterations", "slots"} or null,
"rng": the model generator's state}; "weight_000", "weight_001", ... are the arrays in
`get_weights()` order, "optimizer_000", ... the optimizer's state arrays in the order of the JSON's
"slots" ("<variable position>/<name>", e.g. "0/m"). With the optimizer state and the generators,
a reloaded model continues `fit(..., initial_epoch=k)` exactly as the uninterrupted run would
have. Files are written to a temporary file in the target's folder and moved into place with
os.replace, so a crash never leaves a half-written model.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT, VERSION, KEY = "symdl.nn", 1, "symdl_model"


def write_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """np.savez into a temporary file next to `path`, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model, path, include_compile: bool = True, weights_only: bool = False) -> None:
    weights = model.get_weights()
    full = include_compile and not weights_only
    meta = {"format": FORMAT, "version": VERSION, "weights": len(weights),
            "model": None if weights_only else model.get_config(),
            "compile": model.compile_config() if full else None}
    arrays = {f"weight_{n:03d}": w for n, w in enumerate(weights)}
    optimizer = getattr(model, "optimizer", None)
    if full and optimizer is not None:
        iterations, slots = optimizer.get_state()
        meta["optimizer"] = {"iterations": iterations, "slots": list(slots)}
        arrays.update({f"optimizer_{n:03d}": a for n, a in enumerate(slots.values())})
    if not weights_only:
        meta["rng"] = _rng_states(model)
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    write_atomic(path, {KEY: blob, **arrays})


def _rng_states(model) -> dict:
    """The bit generator states of the model (shuffling) and of layers with their own generator
    (Dropout(seed=...)), by layer position."""
    states = {"model": model.rng.bit_generator.state}
    for n, layer in enumerate(model.layers):
        rng = getattr(layer, "rng", None)
        if rng is not None and rng is not model.rng:
            states[str(n)] = rng.bit_generator.state
    return states


def _restore_rngs(model, states: dict) -> None:
    for key, state in states.items():
        owner = model if key == "model" else model.layers[int(key)]
        if getattr(owner, "rng", None) is not None:
            owner.rng.bit_generator.state = state


def read_model_file(path) -> tuple[dict, list[np.ndarray]]:
    """(metadata, weights); ValueError for anything that is not a symdl model file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if KEY not in npz.files:
                raise ValueError(f"{path}: not a symdl model file (no {KEY!r} entry; it holds "
                                 f"{npz.files[:5]})")
            meta = json.loads(npz[KEY].tobytes().decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"{path}: not a symdl model file (format {meta.get('format')!r})")
            if meta.get("version") != VERSION:
                raise ValueError(f"{path}: model file version {meta.get('version')!r}; this symdl reads "
                                 f"version {VERSION}")
            weights = [npz[f"weight_{n:03d}"] for n in range(int(meta["weights"]))]
            opt = meta.get("optimizer")
            if opt:
                meta["optimizer_slots"] = {k: npz[f"optimizer_{n:03d}"] for n, k in enumerate(opt["slots"])}
    except FileNotFoundError:
        raise
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable symdl model file ({e})") from e
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable symdl model file ({type(e).__name__}: {e})") from e
    return meta, weights


def load_model(path, custom_objects: dict | None = None, compile: bool = True):
    """Rebuild a Sequential saved with `model.save(path)`: architecture, weights and (when it was
    compiled with named or built-in objects) its compile settings with the optimizer's state, and
    the shuffling/dropout generators. A FormulaLayer's formula is not stored: pass it as
    custom_objects={formula name: formula}."""
    from .model import Sequential

    meta, weights = read_model_file(path)
    if meta.get("model") is None:
        raise ValueError(f"{path}: holds weights only (save_weights); build the model and call "
                         f"model.load_weights(path)")
    model = Sequential.from_config(meta["model"], custom_objects=custom_objects)
    model.set_weights(weights)
    if meta.get("rng"):
        _restore_rngs(model, meta["rng"])
    if compile and meta.get("compile"):
        model.compile(**meta["compile"])
        if meta.get("optimizer"):
            model.optimizer.set_state(meta["optimizer"]["iterations"], meta["optimizer_slots"])
    return model
