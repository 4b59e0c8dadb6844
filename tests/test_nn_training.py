"""Sequential models end to end: fit on the bundled digits, weights, files, callbacks."""
from __future__ import annotations

import numpy as np
import pytest

from symdl import nn
from symdl.datasets import digits


@pytest.fixture(scope="module")
def data():
    (xtr, ytr), (xte, yte) = digits.load_data()
    return (xtr.astype(np.float32) / 16, ytr), (xte.astype(np.float32) / 16, yte)


def mlp(seed=0, dropout=0.0):
    return nn.Sequential([nn.Input((8, 8)), nn.Flatten(), nn.Dense(32, activation="relu"),
                          *([nn.Dropout(dropout)] if dropout else []),
                          nn.Dense(10, activation="softmax")], seed=seed)


def test_mlp_reaches_90_percent_on_digits(data):
    (xtr, ytr), (xte, yte) = data
    model = mlp()
    model.compile(optimizer=nn.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    hist = model.fit(xtr, ytr, epochs=8, batch_size=32, validation_data=(xte, yte), verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(hist.history["loss"]) == 8 and hist.history["loss"][-1] < hist.history["loss"][0]
    loss, acc = model.evaluate(xte, yte, verbose=0)
    assert acc >= 0.9
    probs = model.predict(xte)
    assert probs.shape == (len(xte), 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert np.mean(probs.argmax(1) == yte) == pytest.approx(acc)
    assert hist.history["val_accuracy"][-1] == pytest.approx(acc)


def test_cnn_learns_digits_as_images(data):
    (xtr, ytr), (xte, yte) = data
    model = nn.Sequential([nn.Input((8, 8, 1)), nn.Conv2D(8, (3, 3), activation="relu"),
                           nn.MaxPooling2D((2, 2)), nn.Flatten(),
                           nn.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer=nn.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(xtr[..., None], ytr, epochs=3, batch_size=32, verbose=0)
    assert model.evaluate(xte[..., None], yte, verbose=0)[1] >= 0.85


def test_seeded_training_is_reproducible_and_dropout_trains(data):
    (xtr, ytr), _ = data
    runs = []
    for _ in range(2):
        model = mlp(seed=5, dropout=0.2)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        runs.append(model.fit(xtr[:256], ytr[:256], epochs=2, verbose=0).history["loss"])
    assert runs[0] == runs[1]


def test_get_set_weights_keras_shapes(data):
    (_, _), (xte, _) = data
    a, b = mlp(seed=1), mlp(seed=2)
    shapes = [w.shape for w in a.get_weights()]
    assert shapes == [(64, 32), (32,), (32, 10), (10,)]
    assert not np.allclose(a.predict(xte[:20]), b.predict(xte[:20]))
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(a.predict(xte[:20]), b.predict(xte[:20]))
    with pytest.raises(ValueError, match="shape"):
        b.set_weights([w.T for w in a.get_weights()])
    with pytest.raises(ValueError, match="weight arrays"):
        b.set_weights(a.get_weights()[:2])


def test_save_load_roundtrip_and_corrupt_files(tmp_path, data):
    (xtr, ytr), (xte, yte) = data
    model = mlp(seed=3)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr[:200], ytr[:200], epochs=1, verbose=0)
    path = tmp_path / "m.symdl"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.symdl"]  # no temporary file left behind
    loaded = nn.load_model(path)
    np.testing.assert_array_equal(loaded.predict(xte), model.predict(xte))
    assert isinstance(loaded.optimizer, nn.optimizers.Adam)
    assert loaded.evaluate(xte, yte, verbose=0) == pytest.approx(model.evaluate(xte, yte, verbose=0))
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only
        assert npz["symdl_model"].dtype == np.uint8
    (tmp_path / "junk.symdl").write_bytes(b"not a zip file at all")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    (tmp_path / "cut.symdl").write_bytes(path.read_bytes()[:200])
    for bad in ("junk.symdl", "foreign.npz", "cut.symdl"):
        with pytest.raises(ValueError, match="symdl model file"):
            nn.load_model(tmp_path / bad)


class Recorder(nn.Callback):
    def __init__(self):
        super().__init__()
        self.calls, self.weights = [], []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end{epoch}")
        self.weights.append(self.model.get_weights())

    def on_batch_end(self, batch, logs=None):
        assert "loss" in logs

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_early_stopping_restores_best_and_checkpoint_saves_best(tmp_path, data):
    (xtr, ytr), _ = data
    model = mlp(seed=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rec = Recorder()
    # loss falls every epoch, so in mode "max" the first epoch stays the best one
    stop = nn.EarlyStopping(monitor="loss", mode="max", patience=2, restore_best_weights=True)
    ckpt = nn.ModelCheckpoint(str(tmp_path / "best.symdl"), monitor="loss", mode="max", save_best_only=True)
    every = nn.ModelCheckpoint(str(tmp_path / "e{epoch:02d}.symdl"), monitor="loss")
    hist = model.fit(xtr[:300], ytr[:300], epochs=10, verbose=0, callbacks=[rec, stop, ckpt, every])
    assert len(hist.history["loss"]) == 3 and stop.stopped_epoch == 2  # epochs 1, 2 without gain
    assert rec.calls == ["train_begin", "epoch_end0", "epoch_end1", "epoch_end2", "train_end"]
    for got, best in zip(model.get_weights(), rec.weights[0], strict=True):
        np.testing.assert_array_equal(got, best)
    for got, best in zip(nn.load_model(tmp_path / "best.symdl").get_weights(), rec.weights[0], strict=True):
        np.testing.assert_array_equal(got, best)
    assert sorted(p.name for p in tmp_path.glob("e*.symdl")) == ["e01.symdl", "e02.symdl", "e03.symdl"]
    last = nn.load_model(tmp_path / "e03.symdl").get_weights()
    np.testing.assert_array_equal(last[0], rec.weights[2][0])


def test_early_stopping_patience_on_plateau():
    class Fake:
        stop_training = False

        def get_weights(self):
            return []

    stop = nn.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01)
    stop.set_model(Fake())
    stop.on_train_begin()
    for epoch, v in enumerate([1.0, 0.5, 0.495, 0.499, 0.2]):
        stop.on_epoch_end(epoch, {"val_loss": v})
        if stop.model.stop_training:
            break
    assert stop.stopped_epoch == 3 and stop.best == 0.5


def test_validation_split_holds_out_the_last_samples(data):
    (xtr, ytr), _ = data
    x, y = xtr[:400], ytr[:400]
    model = mlp(seed=6)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=2, batch_size=64, validation_split=0.25, verbose=0)
    val = model.evaluate(x[300:], y[300:], verbose=0, return_dict=True)
    assert hist.history["val_loss"][-1] == pytest.approx(val["loss"])
    assert hist.history["val_accuracy"][-1] == pytest.approx(val["accuracy"])


def test_history_plot_needs_matplotlib(tmp_path):
    hist = nn.History()
    hist.on_epoch_end(0, {"loss": 1.0})
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"symdl\[plot\]"):
            hist.plot(tmp_path / "h.png")
    else:
        hist.plot(tmp_path / "h.png")
        assert (tmp_path / "h.png").stat().st_size > 0


def test_fit_requires_compile_and_input_shape():
    with pytest.raises(RuntimeError, match="compile"):
        mlp().fit(np.zeros((2, 8, 8)), np.zeros(2))
    with pytest.raises(ValueError, match="input shape"):
        nn.Sequential([nn.Dense(3)]).get_weights()
