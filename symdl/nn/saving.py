"""Model files: one `.npz` (no pickle) holding the weights and the architecture as JSON bytes.

Layout: "symdl_model" is a uint8 array of UTF-8 JSON {"format", "version", "model": config,
"compile": config or null, "weights": count, "optimizer": {"iterations", "slots"} or null,
"rng": the model generator's state}; "weight_000", "weight_001", ... are the arrays in
`get_weights()` order, "optimizer_000", ... the optimizer's state arrays in the order of the JSON's
"slots" ("<weight position>/<name>", e.g. "0/m"; the position among all the model's weights,
frozen ones included). With the optimizer state and the generators, a reloaded model continues
`fit(..., initial_epoch=k)` exactly as the uninterrupted run would have.

Writing: a temporary file in the target's folder, fsynced, moved into place with os.replace (and
the folder fsynced), so a crash never leaves a half-written model; temporaries that a killed
writer left for the same target are removed by the next save.

Reading trusts nothing in the file: the metadata is checked against its schema, and every array's
dtype, shape and stored size are checked from its header (against the model, for weights)
before its data is read and before anything is assigned. Any malformed file gives
`ValueError("<path>: ...")`; the model is unchanged.
"""
from __future__ import annotations

import json
import math
import os
import re
import threading
import zipfile
from pathlib import Path

import numpy as np

from symdl.files import atomic_write

FORMAT, VERSION, KEY = "symdl.nn", 1, "symdl_model"
MAX_METADATA_BYTES = 16 * 2**20  # the JSON of any real model is a few kB
_SLOT = re.compile(r"^(\d+)/(\w+)$")
_IN_FLIGHT: set[str] = set()  # this process's temporaries being written (threads may save at once)
_IN_FLIGHT_LOCK = threading.Lock()  # a temporary is registered before another thread's sweep sees it


# -- writing ----------------------------------------------------------------------------------------

def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def write_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """np.savez into a temporary file next to `path`, then os.replace. The temporary is named
    `.<name>.<pid>.<random>.tmp`: the next save of the same target removes those whose process
    is gone (a writer killed mid-write cannot clean up after itself)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{_temp_prefix(path)}{os.getpid()}."
    atomic_write(path, lambda fh: np.savez(fh, **arrays), prefix, _IN_FLIGHT, _IN_FLIGHT_LOCK)
    _fsync_dir(path.parent)
    remove_stale_temporaries(path)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); folders cannot be opened this way on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove `.<name>.<pid>.<random>.tmp` files of target `path` that no writer is writing:
    their process is gone (or it is this process, which is not writing them: the pid was
    reused). Returns what was removed."""
    path = Path(path)
    pattern = re.compile(rf"^{re.escape(_temp_prefix(path))}(\d+)\.\w+\.tmp$")
    removed = []
    with _IN_FLIGHT_LOCK:
        for entry in path.parent.iterdir():
            m = pattern.match(entry.name)
            if m and os.path.abspath(entry) not in _IN_FLIGHT and not _process_alive(int(m.group(1))):
                try:
                    entry.unlink()
                    removed.append(entry)
                except OSError:
                    pass  # another saver removed it first, or it is not ours to remove
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process `pid` may still be writing. Another host's or container's writer looks
    gone: removing its temporary makes its save fail (os.replace finds nothing), never corrupts."""
    if pid == os.getpid():
        return False
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process there: never ask
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists under another user, or cannot be asked: leave its file alone
    return True


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


# -- reading ----------------------------------------------------------------------------------------

class ModelFile:
    """A model file opened for reading, its metadata checked against the schema (`meta`).

    `array(name, ...)` reads one entry after checking its header (dtype kind, shape, and that
    the stored size is what the header says); `weights_for(model)` checks every weight against
    the model before reading any. Errors are `ValueError("<path>: ...")`; a missing or
    unreadable file keeps its OSError. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self._fh = open(path, "rb")  # FileNotFoundError, PermissionError: the OS says it best
        try:
            self._zip = zipfile.ZipFile(self._fh)
            self._members = {n[:-4]: n for n in self._zip.namelist() if n.endswith(".npy")}
            if KEY not in self._members:
                raise ValueError(f"not a symdl model file (no {KEY!r} entry; it holds "
                                 f"{sorted(self._members)[:5]})")
            blob = self.array(KEY, kind="bytes", max_bytes=MAX_METADATA_BYTES)
            if blob.ndim != 1:
                raise ValueError(f"not a symdl model file ({KEY!r} has shape {blob.shape}, not one row)")
            meta = json.loads(blob.tobytes().decode("utf-8"))
            check_metadata(meta)
            self._check_members(meta)
            self.meta = meta
        except Exception as e:
            self.close()
            if _names_file(path, e):
                raise
            raise _file_error(path, e) from e
        except BaseException:  # KeyboardInterrupt and the like are not about the file
            self.close()
            raise

    def __enter__(self) -> "ModelFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
        self._fh.close()

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: {message}")

    def _check_members(self, meta: dict) -> None:
        count = meta["weights"]
        stored = sorted(k for k in self._members if k.startswith("weight_"))
        if count != len(stored) or any(_weight_key(n) not in self._members for n in range(count)):
            raise ValueError(f"the metadata lists {count} weight arrays, the file holds {len(stored)} "
                             f"({_first(stored)})")
        slots = (meta.get("optimizer") or {}).get("slots", [])
        missing = [_slot_key(n) for n in range(len(slots)) if _slot_key(n) not in self._members]
        if missing:
            raise ValueError(f"the metadata lists {len(slots)} optimizer arrays; {missing[0]} is missing")

    def array(self, name: str, kind: str = "f", shape: tuple | None = None, what: str | None = None,
              max_bytes: int | None = None) -> np.ndarray:
        """Entry `name`, after its header says: a dtype of `kind` ("f": any float, "bytes":
        uint8), the expected `shape` (when given), and a stored size equal to the header's (at most
        `max_bytes`)."""
        what = what or repr(name)
        with self._zip.open(self._members[name]) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                got, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                got, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f"{what}: .npy format version {version} is not one numpy.savez writes")
            if not (dtype == np.uint8 if kind == "bytes" else dtype.kind == "f"):  # never "O": no pickle
                expected = "uint8 bytes" if kind == "bytes" else "a float array (float32)"
                raise ValueError(f"{what} holds {dtype}, expected {expected}")
            if shape is not None and tuple(got) != tuple(shape):
                raise ValueError(f"{what} has shape {tuple(got)} in the file, the model's is {tuple(shape)}")
            if any(d < 0 for d in got):
                raise ValueError(f"{what} has shape {tuple(got)}")
            nbytes = math.prod(got) * dtype.itemsize
            if max_bytes is not None and nbytes > max_bytes:
                raise ValueError(f"{what} is {nbytes} bytes, more than the {max_bytes} allowed")
            stored = self._zip.getinfo(self._members[name]).file_size - fp.tell()
            if stored != nbytes:
                raise ValueError(f"{what}: its header says {nbytes} bytes of data, the file stores {stored}")
            data = fp.read(nbytes)
        if len(data) != nbytes:
            raise ValueError(f"{what} is truncated ({len(data)} of {nbytes} bytes)")
        return np.frombuffer(data, dtype=dtype).reshape(got, order="F" if fortran else "C")

    def checked(self, read, *args, **kwargs):
        """Call `read` (a method of this file); anything it raises becomes ValueError naming the file."""
        try:
            return read(*args, **kwargs)
        except Exception as e:
            if _names_file(self.path, e):
                raise
            raise _file_error(self.path, e) from e

    def weights_for(self, model) -> list[np.ndarray]:
        """The weights, after the count and every array's dtype and shape match `model`."""
        if not model.built:
            model.build()
        variables = model.weights
        if self.meta["weights"] != len(variables):
            raise self.error(f"holds {self.meta['weights']} weight arrays, the model has {len(variables)} "
                             f"({_first([v.name for v in variables])})")
        return [self.checked(self.array, _weight_key(n), shape=v.shape, what=f"weight {n} ({v.name})")
                for n, v in enumerate(variables)]

    def optimizer_slots(self, model) -> tuple[int, dict[str, np.ndarray]]:
        """(iterations, slots) for `model.optimizer`, each slot checked against the weight it
        belongs to (its position among the model's weights; flat, that weight's size) and the
        optimizer's state names."""
        opt = self.meta["optimizer"]
        weights = model.weights
        names = getattr(model.optimizer, "state_names", ())
        slots = {}
        for n, key in enumerate(opt["slots"]):
            pos, slot = _SLOT.match(key).groups()
            pos = int(pos)
            if pos >= len(weights) or slot not in names:
                raise self.error(f"optimizer state {key!r}: the model has {len(weights)} "
                                 f"weights and {model.optimizer.name} keeps {list(names)}")
            v = weights[pos]
            slots[key] = self.checked(self.array, _slot_key(n), shape=(v.value.size,),
                                      what=f"optimizer state {key!r} ({v.name})")
        return opt["iterations"], slots


def _first(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _weight_key(n: int) -> str:
    return f"weight_{n:03d}"


def _slot_key(n: int) -> str:
    return f"optimizer_{n:03d}"


def _describe(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return f"{type(e).__name__}: {e}"


def _names_file(path, e: Exception) -> bool:
    return type(e) is ValueError and str(e).startswith(f"{path}: ")


def _file_error(path, e: Exception) -> ValueError:
    """`e` as ValueError("<path>: ..."): our own ValueErrors keep their message, anything else
    (a broken zip, bad UTF-8 or JSON, what a layer's constructor says of a crafted config) says
    what it was."""
    if type(e) is ValueError:
        return ValueError(f"{path}: {e}")
    return ValueError(f"{path}: not a readable symdl model file ({_describe(e)})")


# -- the metadata schema ----------------------------------------------------------------------------

def _expect(value, types, key: str | None):
    """`value` if it is of `types` (a bool is not an integer here); `key` names it in the error
    (None: the metadata itself)."""
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        what = f"{key!r}" if key else "the metadata"
        got = repr(value) if isinstance(value, bool) else type(value).__name__
        raise ValueError(f"{what} must be {' or '.join(_TYPE_NAMES[t] for t in types)}, got {got}")
    return value


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", type(None): "null"}


def check_metadata(meta) -> None:
    """ValueError unless `meta` has the keys and types that save_model writes (and that loading
    reads); the layer configs themselves are checked by rebuilding the layers."""
    _expect(meta, dict, None)
    if meta.get("format") != FORMAT:
        raise ValueError(f"not a symdl model file (format {meta.get('format')!r})")
    if meta.get("version") != VERSION or isinstance(meta.get("version"), bool):
        raise ValueError(f"model file version {meta.get('version')!r}; this symdl reads version {VERSION}")
    for key in ("weights", "model", "compile"):
        if key not in meta:
            raise ValueError(f"the metadata lacks {key!r}")
    if _expect(meta["weights"], int, "weights") < 0:
        raise ValueError(f"'weights' must be a count, got {meta['weights']}")
    if meta["model"] is not None:
        _check_model_config(meta["model"])
    if meta["compile"] is not None:
        cfg = _expect(meta["compile"], dict, "compile")
        if set(cfg) != {"optimizer", "loss", "metrics"}:
            raise ValueError(f"'compile' must have the keys optimizer, loss, metrics; got {sorted(cfg)}")
        _expect(cfg["optimizer"], (str, dict), "compile.optimizer")
        _expect(cfg["loss"], (str, dict), "compile.loss")
        for n, m in enumerate(_expect(cfg["metrics"], list, "compile.metrics")):
            _expect(m, str, f"compile.metrics[{n}]")
    if meta.get("optimizer") is not None:
        opt = _expect(meta["optimizer"], dict, "optimizer")
        if _expect(opt.get("iterations"), int, "optimizer.iterations") < 0:
            raise ValueError(f"'optimizer.iterations' must be a count, got {opt['iterations']}")
        for key in _expect(opt.get("slots"), list, "optimizer.slots"):
            if not isinstance(key, str) or not _SLOT.match(key):
                raise ValueError(f"each of 'optimizer.slots' must be '<position>/<name>', got {key!r}")
    if meta.get("rng") is not None:
        for key, state in _expect(meta["rng"], dict, "rng").items():
            if key != "model" and not key.isdigit():
                raise ValueError(f"'rng' keys are 'model' or layer positions, got {key!r}")
            _expect(state, dict, f"rng.{key}")


def _check_model_config(cfg) -> None:
    _expect(cfg, dict, "model")
    for key in ("name", "input_shape", "layers"):
        if key not in cfg:
            raise ValueError(f"'model' lacks {key!r}")
    _expect(cfg["name"], str, "model.name")
    _expect(cfg.get("seed"), (int, type(None)), "model.seed")
    for d in _expect(cfg["input_shape"], list, "model.input_shape"):
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"'model.input_shape' must list positive sizes, got {cfg['input_shape']}")
    for n, spec in enumerate(_expect(cfg["layers"], list, "model.layers")):
        _expect(spec, dict, f"model.layers[{n}]")
        _expect(spec.get("class_name"), str, f"model.layers[{n}].class_name")
        _expect(spec.get("config"), dict, f"model.layers[{n}].config")


# -- loading ----------------------------------------------------------------------------------------

def load_weights(model, path) -> None:
    """Set `model`'s weights from a file of `save_weights` or `save`; every array is checked
    against the model before any is assigned."""
    with ModelFile(path) as f:
        weights = f.weights_for(model)
    model.set_weights(weights)


def load_model(path, custom_objects: dict | None = None, compile: bool = True):
    """Rebuild a Sequential saved with `model.save(path)`: architecture, weights and (when it was
    compiled with named or built-in objects) its compile settings with the optimizer's state, and
    the shuffling/dropout generators. A FormulaLayer's formula is not stored: pass it as
    custom_objects={formula name: formula}. Everything is checked before anything is set."""
    from .model import Sequential

    with ModelFile(path) as f:
        meta = f.meta
        if meta["model"] is None:
            raise f.error("holds weights only (save_weights); build the model and call "
                          "model.load_weights(path)")
        model = f.checked(Sequential.from_config, meta["model"], custom_objects=custom_objects)
        weights = f.weights_for(model)
        rngs = f.checked(_checked_rng_states, model, meta.get("rng") or {})
        state = None
        if compile and meta["compile"]:
            try:
                model.compile(**meta["compile"])
            except Exception as e:
                raise f.error(f"the saved compile settings do not load ({type(e).__name__}: {e})") from e
            if meta.get("optimizer"):
                state = f.optimizer_slots(model)
    model.set_weights(weights)
    for owner, state_dict in rngs:
        owner.rng.bit_generator.state = state_dict
    if state is not None:
        model.optimizer.set_state(*state)
    return model


def _checked_rng_states(model, states: dict) -> list[tuple[object, dict]]:
    """(owner, state) pairs, each state tried on a spare generator of the owner's kind first."""
    pairs = []
    for key, state in states.items():
        if key != "model" and int(key) >= len(model.layers):
            raise ValueError(f"'rng' names layer {key}; the model has {len(model.layers)} layers")
        owner = model if key == "model" else model.layers[int(key)]
        rng = getattr(owner, "rng", None)
        if rng is None:
            continue
        try:
            type(rng.bit_generator)().state = state
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            raise ValueError(f"'rng.{key}' is not a {type(rng.bit_generator).__name__} state "
                             f"({_describe(e)})") from e
        pairs.append((owner, state))
    return pairs


def read_model_file(path) -> tuple[dict, list[np.ndarray]]:
    """(metadata, weights) of a model file, checked for consistency but not against a model;
    ValueError for anything that is not a symdl model file."""
    with ModelFile(path) as f:
        weights = [f.checked(f.array, _weight_key(n), what=f"weight {n}") for n in range(f.meta["weights"])]
        return f.meta, weights
