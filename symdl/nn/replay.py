"""The training step compiled into one generated function: recorded, checked, then replayed.

A step run layer by layer spends most of a small model's time in Python (argument checks, plans,
tapes, dicts; ~30 kernel calls for a 3-layer MLP). Every number of a step comes from a symdl
kernel, so the step *is* its sequence of launches. For each batch signature StepReplay

1. runs the second and third steps as usual while `runtime.trace` records their launches, and
   resolves every argument to where it comes from: the batch (x, the loss's targets), the model's
   state at the step's start (weights, optimizer slots), an earlier launch's output, or a number;
   the two recordings must agree in everything but the arrays' addresses;
2. prints that sequence as one Python function (`source()`): the generated `run`s called in
   order on buffers allocated once, no checks, no SymPy; the state the step writes goes to twin
   buffers that alternate step by step, so the weights a step reads are never overwritten by it;
3. checks it once: the fourth step runs both ways from the same state and must agree (loss,
   output, every weight and slot) before any later step is replayed.

Anything it cannot account for refuses the replay for that signature (`refused`, with the
reason) and the step keeps running layer by layer: an array made by Python between launches (a
dropout mask), a number that changes between steps other than the optimizer's (its
learning rate and step count are read at every replay), a kernel reading through integer inputs
the loss did not check (an embedding's ids), a step that changes the state's arrays otherwise.
Weights replaced from outside (set_weights, load) or a changed `trainable` flag make the next
step record again; a layer added to the model forgets every recording (`forget`).

Once a step has been replayed, the next one takes a short path (`Hot`): generated functions read
the state from the model's variables and optimizer slots and write it back, so that a small
model's step spends its time in its kernels rather than in this bookkeeping.
"""
from __future__ import annotations

import operator

import numpy as np

from symdl.backends import get as get_backend
from symdl.backends.cpu import twins
from symdl.runtime import trace
from symdl.runtime.threads import adapt as adapt_threads

from .step_plan import Hot, Plan, Recording, Refused, set_state_arrays, state_arrays, state_names

RECORD_AT = (1, 2)  # the steps (counted per signature, from 0) recorded; the next is checked both ways
_CPU = get_backend("cpu")


class StepReplay:
    """A model's recorded steps, one Plan per batch signature (see the module's docstring)."""

    def __init__(self, model):
        self.model = model
        self.plans: dict = {}     # signature -> Plan
        self.seen: dict = {}      # signature -> steps run layer by layer so far
        self.recorded: dict = {}  # signature -> the previous Recording
        self.refused: dict = {}   # signature -> why the step is not replayed
        self.expect: dict = {}    # signature -> the state arrays the last replay left
        self.generation = twins.generation  # parallel functions compiled since: record again
        self.hot: Hot | None = None  # the signature replayed last, for the short path
        self.hots: dict = {}      # signature -> its Hot (generated accessors made once per plan)

    def forget(self) -> None:
        """Drop every recording and plan: the model's layers changed (Sequential.add)."""
        for d in (self.plans, self.seen, self.recorded, self.expect, self.refused, self.hots):
            d.clear()
        self.hot = None

    def _current(self) -> None:
        """Where parallel functions a recorded launch waited for have compiled since (the
        compile-ahead helper's work, backends/cpu/twins.py), the steps are recorded again: their
        kernels' plans now run those launches on threads."""
        twins.poll()
        if self.generation != twins.generation:
            self.generation = twins.generation
            for d in (self.plans, self.seen, self.recorded, self.expect, self.hots):
                d.clear()
            self.hot = None

    def source(self) -> str:
        """The generated training step(s), and a line for each batch shape not replayed."""
        lines = [p.source for p in self.plans.values()]
        lines += [f"# batch {k[0]}: not replayed: {why}" for k, why in self.refused.items()]
        lines += [f"# batch {k[0]}: recording ({n} of {len(RECORD_AT) + 2} steps run)" for k, n in self.seen.items()
                  if k not in self.plans and k not in self.refused]
        return "\n".join(lines) or "# no training step run yet"

    def step(self, x: np.ndarray, y: np.ndarray):
        self._current()
        if self.hot is not None:
            done = self._hot_step(self.hot, x, y)
            if done is not None:
                return done
            self.hot = None  # anything unusual: the full checks below decide
        m = self.model
        x = x if x.flags.c_contiguous else x.copy()
        weights = m.weights
        y_dtype = y.dtype if isinstance(y, np.ndarray) else np.asarray(y).dtype
        key = (x.shape, x.dtype, np.shape(y), y_dtype, tuple([v.trainable for v in weights]), id(m.optimizer))
        plan = self.plans.get(key)
        if plan is not None:
            state = state_arrays(m, weights)
            if self.expect[key] is None:
                return self._check(key, plan, x, y, state)
            if len(state) == len(self.expect[key]) and all(a is b for a, b in zip(state, self.expect[key])):
                return self._replay(key, plan, x, y, state, weights)
            del self.plans[key]  # weights replaced from outside: record again
            self.seen[key] = 0
            self.hot = None
        if key in self.refused or not _recordable(state_arrays(m, weights)):
            return m._plain_step(x, y)
        n = self.seen[key] = self.seen.get(key, 0) + 1
        if n - 1 in RECORD_AT:
            return self._record(key, _owned(x), y, n - 1 == RECORD_AT[-1])
        return m._plain_step(x, y)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The model's output for a batch (training=False; predict), replayed as a step is: two
        calls per batch shape recorded, the third run both ways. It reads the weights as they are
        at each call (no identity to keep: a forward pass replaces none)."""
        self._current()
        m = self.model
        x = x if x.flags.c_contiguous else x.copy()
        weights = m.weights
        key = ("forward", x.shape, x.dtype.str, len(weights))
        plan = self.plans.get(key)
        if plan is not None:
            state = [v.value for v in weights]
            if all(a.shape == s and a.dtype.str == d and a.flags.c_contiguous and type(a) is np.ndarray
                   for a, (s, d) in zip(state, plan.state_layout, strict=True)):
                if self.expect[key] is not None:
                    return self._run_forward(plan, x, state)
                out = m.forward(x).copy()
                if _agree(out, self._run_forward(plan, x, state)):
                    self.expect[key] = True
                    return self._run_forward(plan, x, state)
                del self.plans[key]
                self.refused[key] = "the replayed forward pass disagreed with the one run layer by layer"
            return m.forward(x)
        if key in self.refused:
            return m.forward(x)
        before = [v.value for v in weights]
        if not _recordable(before):
            return m.forward(x)
        n = self.seen[key] = self.seen.get(key, 0) + 1
        if n - 1 not in RECORD_AT:
            return m.forward(x)
        x = _owned(x)
        with trace.recording() as launches:
            out = m.forward(x)
        try:
            rec = Recording(launches, {"x": x}, before, before, {}, out, set())
            if n - 1 == RECORD_AT[-1]:
                if rec.signature() != self.recorded.pop(key).signature():
                    raise Refused("two forward passes launched different kernels or read different arrays")
                self.plans[key] = Plan(rec, {"x": x}, before, f"forward pass of model {m.name!r}, batch {x.shape}",
                                       state_names(m)[:len(before)])
                self.expect[key] = None
            else:
                self.recorded[key] = rec
        except Refused as e:
            self.refused[key] = str(e)
        return out

    def _run_forward(self, plan, x, state):
        parallel = False
        if plan.parallel:
            adapt_threads()
            parallel = _CPU.flavour(True)
        return plan.function(x, None, state, [], None, parallel)[2]

    def _record(self, key, x, y, last: bool):
        m = self.model
        before, parts = state_arrays(m), {}
        with trace.recording() as launches:
            loss, out = m._plain_step(x, y, parts=parts)
        try:
            hyper = set(m.optimizer.hyper())
            rec = Recording(launches, {"x": x, "t": parts["feed"][m.loss.true_name]}, before, state_arrays(m),
                            parts, out, hyper)
            if last:
                first = self.recorded.pop(key)
                if rec.signature() != first.signature():
                    raise Refused("two steps launched different kernels or read different arrays")
                self.plans[key] = Plan(rec, {"x": x, "t": parts["feed"][m.loss.true_name]}, state_arrays(m),
                                       f"model {m.name!r}, batch {x.shape}", state_names(m))
                self.expect[key] = None  # the check replays it first (_check)
            else:
                self.recorded[key] = rec
        except Refused as e:
            self.refused[key] = str(e)
        return loss, out

    def _replay(self, key, plan: Plan, x, y, state: list, weights: list):
        m = self.model
        t = self._targets(plan, y)
        if t is None:
            return m._plain_step(x, y)
        if any(key[4]):  # the weights' trainable flags: the optimizer steps (as Trainer._apply)
            m.optimizer.iterations += 1
        new_state, loss, out = self._run(plan, x, t, state)
        set_state_arrays(m, new_state, weights)
        self.expect[key] = new_state
        hot = self.hots.get(key)
        if hot is None or hot.plan is not plan:  # a signature's first replay, or recorded again
            hot = self.hots[key] = Hot(key, plan, weights, m.optimizer, new_state)
        hot.expect, self.hot = new_state, hot
        return float(loss), out

    def _hot_step(self, hot: Hot, x, y):
        """The step replayed as the last one was, when nothing that step relied on has changed: the
        batch's shape and type, the optimizer, the state's arrays (none replaced from outside) and
        the trainable flags; None where anything differs."""
        m = self.model
        if (type(x) is not np.ndarray or x.shape != hot.x_shape or x.dtype != hot.x_dtype
                or not x.flags.c_contiguous or m.optimizer is not hot.optimizer):
            return None
        try:
            state = hot.read()
        except (KeyError, AttributeError):  # the optimizer's slots were replaced (set_state)
            return None
        if not all(map(operator.is_, state, hot.expect)) or hot.flags() != hot.trainable:
            return None
        t = self._targets(hot.plan, y)
        if t is None:
            return None
        if any(hot.trainable):  # the optimizer steps (as Trainer._apply)
            m.optimizer.iterations += 1
        new_state, loss, out = self._run(hot.plan, x, t, state)
        hot.expect = self.expect[hot.key] = hot.write(new_state)
        return float(loss), out

    def _targets(self, plan: Plan, y):
        """The targets checked as a plain step checks them (a view of the caller's array will do:
        the step only reads it), or None where they are not the recorded shape and type."""
        t = self.model.loss.prepare(y if isinstance(y, np.ndarray) else np.asarray(y), plan.out_template)[0]
        return t if (t.shape, t.dtype.str) == plan.input_shapes["t"] else None

    def _run(self, plan: Plan, x, t, state: list):
        """(new state, loss, output): the plan on threads where a layer-by-layer step would use them
        (they follow the load: runtime/threads.py)."""
        parallel = False
        if plan.parallel:
            adapt_threads()
            parallel = _CPU.flavour(True)
        return plan.run(x, t, state, self.model.optimizer.hyper(), parallel)

    def _check(self, key, plan: Plan, x, y, state: list):
        """The step both ways from one state; the replay is kept only where they agree."""
        m, opt = self.model, self.model.optimizer
        copies, iterations = [a.copy() for a in state], opt.iterations
        loss, out = m._plain_step(x, y)
        out, after = out.copy(), state_arrays(m)
        set_state_arrays(m, copies)
        opt.iterations = iterations
        r_loss, r_out = self._replay(key, plan, x, y, copies, m.weights)
        r_after = state_arrays(m)
        if _agree(loss, r_loss) and _agree(out, r_out) and len(after) == len(r_after) and all(
                _agree(a, b) for a, b in zip(after, r_after)):
            return r_loss, r_out
        set_state_arrays(m, after)  # the layer-by-layer result stands
        opt.iterations = iterations + (1 if m.trainable_weights else 0)
        self.hot = None
        del self.plans[key]
        self.refused[key] = "the replayed step disagreed with the step run layer by layer"
        return loss, out


def _owned(x: np.ndarray) -> np.ndarray:
    """x as the root of the views a recording finds (it walks each array's `.base` to its owner): a
    view of a user's array (a batch sliced from the data set) is copied. A replay takes any
    C-contiguous batch, since the recorded views are rebuilt from the batch itself."""
    return x if x.base is None else x.copy()


def _recordable(state: list) -> bool:
    """Views of the state are recorded relative to C-contiguous arrays (what the optimizer writes);
    a weight of another layout (set by hand) is run layer by layer until a step replaces it."""
    return all(type(a) is np.ndarray and a.flags.c_contiguous for a in state)


def _agree(a, b) -> bool:
    return bool(np.array_equal(a, b) or np.allclose(a, b, rtol=1e-5, atol=1e-6))
