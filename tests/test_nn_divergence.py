"""Training under bad inputs: diverged training shows as NaN (and TerminateOnNaN stops it), and
fit/evaluate/predict arguments out of range are refused before any kernel runs."""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from symdl import nn
from symdl.nn import graph

from nn_helpers import X, Y, small


# -- diverged training shows as NaN ------------------------------------------------------------------
def numpy_loss(probs, y):
    """Keras' clipped sparse cross-entropy in NumPy (np.clip keeps NaN)."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def diverging(seed=0):
    model = small(seed=seed)
    model.compile(optimizer=nn.optimizers.SGD(1e30), loss="sparse_categorical_crossentropy")
    return model


def test_probability_losses_keep_nan():
    p = np.array([[0.2, 0.5, 0.3], [np.nan, 0.5, 0.5]], dtype=np.float32)
    onehot = np.eye(3, dtype=np.float32)[[1, 0]]
    assert math.isnan(nn.losses.get("sparse_categorical_crossentropy")(np.array([1, 0]), p))
    assert math.isnan(nn.losses.get("categorical_crossentropy")(onehot, p))
    assert math.isnan(nn.losses.get("binary_crossentropy")(onehot, p))
    assert math.isnan(numpy_loss(p, np.array([1, 0])))
    # finite probabilities are clipped as before: 0 -> 1e-7, 1 -> 1 - 1e-7
    q = np.array([[0.0, 1.0, 0.0], [0.25, 0.25, 0.5]], dtype=np.float32)
    for y in ([0, 2], [1, 0]):
        got = nn.losses.get("sparse_categorical_crossentropy")(np.array(y), q)
        assert got == pytest.approx(numpy_loss(q, np.array(y)), rel=1e-5)


def test_diverged_fit_reports_nan_and_warns_once():
    model = diverging()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = model.fit(X, Y, epochs=3, batch_size=8, verbose=0)
    ours = [w for w in caught if "training diverged" in str(w.message)]
    assert len(ours) == 1 and ours[0].category is RuntimeWarning
    assert ours[0].filename == __file__  # points at the fit call
    assert not np.isfinite(hist.history["loss"]).all()
    assert any(not np.isfinite(w).all() for w in model.get_weights())
    probs = model.predict(X)
    reference = numpy_loss(probs, Y)
    assert math.isnan(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow notes in the kernels
        assert math.isnan(model.evaluate(X, Y, verbose=0))


class Batches(nn.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_batch_end(self, batch, logs=None):
        self.seen.append((len(self.seen), batch, logs["loss"]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_terminate_on_nan_stops_at_the_first_bad_batch(capsys):
    free = Batches()  # the reference: the same seeded run without the callback
    diverging().fit(X, Y, epochs=2, batch_size=8, verbose=0, shuffle=False, callbacks=[free])
    first = next(n for n, _, loss in free.seen if not math.isfinite(loss))
    assert 0 < first < 6  # within the first epoch of 6 batches, after a finite one
    stopped = Batches()
    model = diverging()
    hist = model.fit(X, Y, epochs=2, batch_size=8, verbose=0, shuffle=False,
                     callbacks=[stopped, nn.TerminateOnNaN()])
    assert len(stopped.seen) == first + 1 and stopped.seen[:first] == free.seen[:first]
    assert hist.epoch == [0] and not math.isfinite(hist.history["loss"][0])
    assert f"Batch {first}: Invalid loss, terminating training" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match=f"NaN or Inf loss encountered at batch {first}"):
        diverging().fit(X, Y, epochs=2, batch_size=8, verbose=0, shuffle=False,
                        callbacks=[nn.TerminateOnNaN(raise_error=True)])


# -- arguments: ValueError naming the argument, before any kernel runs -------------------------------
@pytest.fixture
def no_kernels(monkeypatch):
    def refuse(self, **inputs):
        raise AssertionError("a kernel ran")
    monkeypatch.setattr(graph.FormulaOp, "forward", refuse)


NOT_INT, SPLIT = "must be an integer", "validation_split must be a number in [0, 1)"
FIT_ARGS = [  # (argument, value, a fragment of the message)
    ("batch_size", 0, "batch_size must be >= 1"), ("batch_size", -4, "batch_size must be >= 1"),
    ("batch_size", 3.5, NOT_INT), ("batch_size", True, NOT_INT), ("batch_size", "32", NOT_INT),
    ("batch_size", 16.0, NOT_INT), ("epochs", -1, "epochs must be >= 0"), ("epochs", 2.5, NOT_INT),
    ("epochs", None, NOT_INT), ("initial_epoch", -1, "initial_epoch must be >= 0"),
    ("validation_split", -0.1, SPLIT), ("validation_split", 1.0, SPLIT),
    ("validation_split", float("nan"), SPLIT), ("validation_split", True, SPLIT),
    ("validation_split", 0.999, "validation_split=0.999 of 48 samples leaves 0 to train on"),
    ("verbose", 3, "verbose must be"), ("shuffle", "batch", "shuffle must be"),
    ("callbacks", [print], "callbacks must be nn.Callback"),
]


@pytest.mark.parametrize("name, value, message", FIT_ARGS, ids=[f"{n}={v!r}" for n, v, _ in FIT_ARGS])
def test_fit_arguments_are_checked_first(no_kernels, name, value, message):
    model = small()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=re.escape(f"fit: {name}")) as e:  # names the argument
        model.fit(X, Y, **{"verbose": 0, name: value})
    assert message in str(e.value)
    assert not model.built  # not even built: nothing ran


def test_evaluate_predict_arguments_and_lengths_are_checked_first(no_kernels):
    model = small()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.build()
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="evaluate: batch_size"):
            model.evaluate(X, Y, batch_size=bad, verbose=0)
        with pytest.raises(ValueError, match="predict: batch_size"):
            model.predict(X, batch_size=bad)
    with pytest.raises(ValueError, match="evaluate: verbose"):
        model.evaluate(X, Y, verbose="loud")
    with pytest.raises(ValueError, match="x has 48 samples, y has 47"):
        model.fit(X, Y[:-1], verbose=0)
    with pytest.raises(ValueError, match="evaluate: x has 48 samples, y has 47"):
        model.evaluate(X, Y[:-1], verbose=0)
    with pytest.raises(ValueError, match=re.escape("validation_data): x has 48 samples, y has 2")):
        model.fit(X, Y, verbose=0, validation_data=(X, Y[:2]))
    with pytest.raises(ValueError, match=re.escape("predict: the model takes inputs of shape (batch, 6)")):
        model.predict(X[:, :5])


def test_valid_arguments_still_train():
    model = small(seed=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(X, Y, batch_size=np.int64(16), epochs=np.int32(2), validation_split=0.25,
                     verbose=False, shuffle=np.bool_(True))
    assert hist.epoch == [0, 1] and set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert model.fit(X, Y, epochs=0, verbose=0).epoch == []
    probs = model.predict(X, batch_size=None)
    assert hist.history["val_loss"][-1] == pytest.approx(numpy_loss(probs[36:], Y[36:]), rel=1e-5)
