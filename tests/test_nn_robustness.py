"""Checkpoints under bad inputs: crafted or damaged model files, saves killed mid-write, crashes
while checkpointing (tests/test_nn_divergence.py: NaN losses and arguments out of range)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from symdl import nn
from symdl.nn import saving

from nn_helpers import X, Y, small



@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained, compiled model (Adam state, dropout-free) and its file."""
    model = small()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("saved") / "m.symdl"
    model.save(path)
    return model, path


def entries(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def metadata(path) -> dict:
    return json.loads(entries(path)["symdl_model"].tobytes().decode("utf-8"))


def rewrite(src, dst, meta=None, blob: bytes | None = None, **arrays):
    """A copy of model file `src` with its metadata replaced (`meta`: a function editing the
    dict, or `blob`: raw bytes) and entries replaced (`name=array`) or dropped (`name=None`)."""
    e = entries(src)
    if meta is not None:
        m = json.loads(e["symdl_model"].tobytes())
        meta(m)
        blob = json.dumps(m).encode()
    if blob is not None:
        e["symdl_model"] = np.frombuffer(blob, dtype=np.uint8)
    for k, a in arrays.items():
        if a is None:
            del e[k]
        else:
            e[k] = a
    with open(dst, "wb") as fh:
        np.savez(fh, **e)
    return dst


def assert_same(a, b):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


# -- load_weights checks the whole file before assigning anything -----------------------------------
def test_load_weights_refuses_a_mismatched_file_and_keeps_the_weights(saved, tmp_path):
    model, path = saved
    model.save_weights(tmp_path / "w.symdl")
    other = small(seed=1, last=5)  # the last kernel and bias differ: the first two arrays fit
    before = other.get_weights()
    for src in (path, tmp_path / "w.symdl"):
        with pytest.raises(ValueError, match=re.escape(f"{src}: weight 2 (")) as info:
            other.load_weights(src)
        assert "(4, 3) in the file, the model's is (4, 5)" in str(info.value)
        assert_same(other.get_weights(), before)  # not a mix of two checkpoints
    deeper = small(seed=1, extra=True)
    before = deeper.get_weights()
    with pytest.raises(ValueError, match="holds 4 weight arrays, the model has 6"):
        deeper.load_weights(path)
    assert_same(deeper.get_weights(), before)
    ints = rewrite(path, tmp_path / "ints.symdl", weight_003=np.zeros(3, dtype=np.int32))
    same = small(seed=1)
    before = same.get_weights()
    with pytest.raises(ValueError, match=r"weight 3 \(.*/bias\) holds int32"):
        same.load_weights(ints)
    assert_same(same.get_weights(), before)
    same.load_weights(path)  # the matching file loads: the saved model's weights exactly
    assert_same(same.get_weights(), model.get_weights())


def test_set_weights_checks_every_array_before_assigning():
    model, other = small(), small(seed=1, last=5)
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"weight 2\) has shape \(4, 5\), got \(4, 3\)"):
        other.set_weights(model.get_weights())
    assert_same(other.get_weights(), before)


# -- crafted and damaged files: ValueError naming the file --------------------------------------------
def _walk(m, dotted: str):
    """(container, key) of a dotted metadata path; digits index lists."""
    *keys, last = dotted.split(".")
    for k in keys:
        m = m[int(k)] if isinstance(m, list) else m[k]
    return m, int(last) if isinstance(m, list) else last


def put(dotted: str, value) -> dict:
    """Rewrite arguments setting metadata entry `dotted` ("model.layers.0.config") to `value`."""
    def edit(m):
        m, last = _walk(m, dotted)
        m[last] = value
    return dict(meta=edit)


def drop(dotted: str) -> dict:
    def edit(m):
        m, last = _walk(m, dotted)
        del m[last]
    return dict(meta=edit)


DEEP = ("[" * 100_000 + "]" * 100_000).encode()
LAYER0 = "model.layers.0"

CRAFTED = {  # name: (rewrite arguments, a fragment of the message)
    "no_weights_key": (drop("weights"), "lacks 'weights'"),
    "no_model_key": (drop("model"), "lacks 'model'"),
    "weights_a_string": (put("weights", "4"), "'weights' must be an integer"),
    "weights_true": (put("weights", True), "'weights' must be an integer"),
    "weights_negative": (put("weights", -1), "must be a count"),
    "weights_huge": (put("weights", 10**12), "lists 1000000000000 weight arrays"),
    "weight_missing": (dict(weight_003=None), "lists 4 weight arrays, the file holds 3"),
    "layers_not_a_list": (put("model.layers", {"0": 1}), "'model.layers' must be a list"),
    "layer_not_a_dict": (put("model.layers", [7]), r"'model.layers\[0\]' must be an object"),
    "layer_no_class": (drop(f"{LAYER0}.class_name"), "class_name' must be a string"),
    "layer_config_list": (put(f"{LAYER0}.config", [1]), r"layers\[0\].config' must be an object"),
    "layer_unknown": (put(f"{LAYER0}.class_name", "Evil"), "unknown layer class 'Evil'"),
    "units_a_string": (put(f"{LAYER0}.config.units", "ten"), r"layer 0 \(Dense\)"),
    "unknown_argument": (put(f"{LAYER0}.config.evil", 1), r"layer 0 \(Dense\).*evil"),
    "input_shape_negative": (put("model.input_shape", [-6]), "positive sizes"),
    "input_shape_changed": (put("model.input_shape", [7]), r"weight 0 .* \(6, 4\) in the file"),
    "name_a_number": (put("model.name", 3), "'model.name' must be a string"),
    "version_2": (put("version", 2), "version 2"),
    "format_other": (put("format", "keras"), "not a symdl model file"),
    "metadata_a_list": (dict(blob=b"[1, 2]"), "the metadata must be an object"),
    "metadata_null": (dict(blob=b"null"), "the metadata must be an object"),
    "metadata_deep": (dict(blob=DEEP), "nested too deeply"),
    "metadata_not_utf8": (dict(blob=b'{"format": "\xff\xfe"}'), "UnicodeDecodeError"),
    "metadata_not_json": (dict(blob=b"{not json"), "JSONDecodeError"),
    "metadata_floats": (dict(symdl_model=np.zeros(4, np.float32)), "holds float32, expected uint8"),
    "compile_key": (put("compile.evil", 1), "'compile' must have the keys"),
    "compile_optimizer_int": (put("compile.optimizer", 5), "'compile.optimizer' must be"),
    "compile_bad_argument": (put("compile.optimizer.evil", 1), "compile settings do not load"),
    "compile_unknown_loss": (put("compile.loss", "evil"), "unknown loss 'evil'"),
    "slots_not_a_list": (put("optimizer.slots", "0/m"), "'optimizer.slots' must be a list"),
    "slot_malformed": (put("optimizer.slots.0", "../m"), "'<position>/<name>'"),
    "slot_out_of_range": (put("optimizer.slots.0", "99/m"), "optimizer state '99/m'"),
    "slot_wrong_shape": (dict(optimizer_000=np.zeros(3, np.float32)), r"'0/m' .* \(3,\) in the file"),
    "iterations_negative": (put("optimizer.iterations", -1), "must be a count"),
    "rng_junk": (put("rng.model", {"state": "x"}), "'rng.model' is not a PCG64 state"),
    "rng_layer_missing": (put("rng.9", {}), "names layer 9"),
    "weight_pickled": (dict(weight_000=np.array([[None] * 4] * 6, dtype=object)), "holds object"),
    "weight_2d_bias": (dict(weight_001=np.zeros((1, 4), np.float32)), r"weight 1 .* \(1, 4\) in the file"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_metadata_gives_a_value_error_naming_the_file(saved, tmp_path, case):
    _, path = saved
    kwargs, fragment = CRAFTED[case]
    bad = rewrite(path, tmp_path / f"{case}.symdl", **kwargs)  # np.savez pickles object arrays
    with pytest.raises(ValueError, match=re.escape(f"{bad}: ")) as info:
        nn.load_model(bad)
    assert re.search(fragment, str(info.value)), str(info.value)
    model = small(seed=2)
    before = model.get_weights()
    try:
        model.load_weights(bad)  # reads the metadata and the weights only; never a partial load
    except ValueError as e:
        assert str(e).startswith(f"{bad}: ")
    else:  # the damage was in what load_weights does not read: the file's weights are intact
        stored = entries(bad)
        assert_same(model.get_weights(), [stored[f"weight_{n:03d}"] for n in range(4)])
        return
    assert_same(model.get_weights(), before)


def test_files_that_are_not_checkpoints(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    files = {"empty.symdl": b"", "text.symdl": b"just some text\n", "half.symdl": data[:len(data) // 2],
             "tail_cut.symdl": data[:-30]}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "plain.npy", np.zeros(3))  # an .npy, not an .npz archive
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("symdl_model.txt", "{}")
    for name in [*files, "plain.npy", "foreign.npz", "other.zip"]:
        for load in (nn.load_model, small().load_weights):
            with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name}: ")):
                load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        nn.load_model(tmp_path / "absent.symdl")
    only = small()
    only.save_weights(tmp_path / "w.symdl")
    with pytest.raises(ValueError, match="holds weights only"):
        nn.load_model(tmp_path / "w.symdl")


def test_a_stored_size_that_disagrees_with_the_header_is_refused(saved, tmp_path):
    """A member whose header promises more data than it stores (or less) is refused before its
    data is read: the header cannot make the reader allocate what the file does not hold."""
    _, path = saved
    bad = tmp_path / "lying.symdl"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == "weight_001.npy":
                raw = raw[:-8]  # 2 of the 4 bias floats are gone; the header still says (4,)
            dst.writestr(info.filename, raw)
    with pytest.raises(ValueError, match=r"weight 1 .*header says 16 bytes of data, the file stores 8"):
        small().load_weights(bad)


# -- saves killed mid-write ----------------------------------------------------------------------------
def temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_failed_save_leaves_the_previous_file_and_no_temporary(saved, tmp_path, monkeypatch):
    model, _ = saved
    path = tmp_path / "m.symdl"
    model.save(path)
    good = entries(path)
    other = small(seed=9)
    other.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")

    def dies(fh, **arrays):
        fh.write(b"PK\x03\x04 half of a zip")
        raise OSError("disk full")
    monkeypatch.setattr(saving.np, "savez", dies)
    with pytest.raises(OSError, match="disk full"):
        other.save(path)
    assert temporaries(tmp_path) == []
    monkeypatch.undo()
    assert entries(path).keys() == good.keys()
    for k, a in entries(path).items():
        np.testing.assert_array_equal(a, good[k])
    assert_same(nn.load_model(path).get_weights(), model.get_weights())


KILLED_WRITER = """
import os, sys
import numpy as np
from symdl.nn import saving

def killed(fh, **arrays):
    fh.write(b"PK\\x03\\x04 half of a zip")
    fh.flush()
    os._exit(3)  # as SIGKILL or a power cut: no exception handler runs
saving.np.savez = killed
saving.write_atomic(sys.argv[1], {"a": np.zeros(3)})
"""


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "m.symdl"
    model.save(path)
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, text=True)
    assert run.returncode == 3, run.stderr
    left = temporaries(tmp_path)
    assert len(left) == 1 and left[0].startswith(".m.symdl."), left  # the kill left its temporary
    assert_same(nn.load_model(path).get_weights(), model.get_weights())  # and the old file intact
    alive = tmp_path / f".m.symdl.{os.getppid()}.abc123.tmp"  # a live process's write in progress
    unrelated = tmp_path / ".n.symdl.999999999.abc123.tmp"
    alive.write_bytes(b"")
    unrelated.write_bytes(b"")
    model.save(path)
    assert temporaries(tmp_path) == sorted([alive.name, unrelated.name])
    assert_same(nn.load_model(path).get_weights(), model.get_weights())


def test_concurrent_saves_of_one_target_never_remove_each_others_temporaries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative target, as users write them
    errors = []

    def save(i):
        try:
            for _ in range(10):
                saving.write_atomic("m.npz", {"a": np.full(50_000, i)})
        except Exception as e:  # a sweep removing a live temporary would fail os.replace here
            errors.append(e)
    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and os.listdir(tmp_path) == ["m.npz"]
    a = entries(tmp_path / "m.npz")["a"]
    assert a.shape == (50_000,) and (a == a[0]).all() and a[0] in range(4)  # one writer's file, whole


class SaveFailsAt(nn.Callback):
    """Makes the checkpoint write of `epoch` (0-based) fail inside np.savez with `error`."""

    def __init__(self, epoch, error, monkeypatch):
        super().__init__()
        self.epoch, self.error, self.monkeypatch, self.weights = epoch, error, monkeypatch, []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        if epoch == self.epoch:
            def dies(fh, **arrays):
                fh.write(b"PK\x03\x04")
                raise self.error
            self.monkeypatch.setattr(saving.np, "savez", dies)


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_crash_while_checkpointing_keeps_the_last_checkpoint(tmp_path, monkeypatch, error):
    model = small(seed=3)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = tmp_path / "ckpt.symdl"
    fail = SaveFailsAt(1, error, monkeypatch)  # runs before the checkpoint in epoch 2
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C: fit returns the completed epochs
        hist = model.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[fail, nn.ModelCheckpoint(path)])
        assert hist.interrupted and hist.epoch == [0, 1]  # History had recorded epoch 2
    else:
        with pytest.raises(OSError, match="disk full"):
            model.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[fail, nn.ModelCheckpoint(path)])
    monkeypatch.undo()
    assert temporaries(tmp_path) == []
    assert_same(nn.load_model(path).get_weights(), fail.weights[0])  # epoch 1's file, complete


