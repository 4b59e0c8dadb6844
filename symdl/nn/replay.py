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

Once a step has been replayed, the next one takes a short path (`_Hot`): generated functions read
the state from the model's variables and optimizer slots and write it back, so that a small
model's step spends its time in its kernels rather than in this bookkeeping.
"""
from __future__ import annotations

import operator
import re

import numpy as np

from symdl.backends import get as get_backend
from symdl.backends.cpu import twins
from symdl.runtime import trace
from symdl.runtime.threads import adapt as adapt_threads

RECORD_AT = (1, 2)  # the steps (counted per signature, from 0) recorded; the next is checked both ways
_CPU = get_backend("cpu")


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _view(a: np.ndarray, root: np.ndarray) -> tuple:
    """Where `a` lies in `root`: (byte offset, shape, strides, dtype)."""
    return (a.__array_interface__["data"][0] - root.__array_interface__["data"][0], a.shape, a.strides,
            a.dtype.str)


class Refused(Exception):
    """The step does something the replay cannot repeat; the message says what."""


class Recording:
    """One recorded step with every argument resolved (`ops`), and the arrays it used."""

    def __init__(self, launches: list, inputs: dict, before: list, after: list, parts: dict, out, hyper: set):
        roots = {id(_root(a)): ("in", n) for n, a in inputs.items()}
        state = {id(_root(a)): ("state", j) for j, a in enumerate(before)}
        if len(state) != len(before) or set(roots) & set(state):
            raise Refused("two state arrays (or a state array and an input) share memory")
        self.buffers: list = []  # the roots written by launches, by first write
        made: dict = {}
        zeros: dict = {}  # arrays of zeros made outside the kernels, held so that no address repeats

        def read(a, what):
            r = _root(a)
            if id(r) in made:
                return ("buf", made[id(r)], _view(a, r))
            if id(r) in roots:
                return (*roots[id(r)], _view(a, inputs[roots[id(r)][1]]))
            if id(r) in state:
                return (*state[id(r)], _view(a, before[state[id(r)][1]]))
            if not r.any():  # zeros made in Python (an initial state): a constant of the step
                zeros[id(r)] = r
                return ("zeros", r.shape, r.dtype.str, _view(a, r))
            raise Refused(f"{what!r} reads an array of shape {a.shape} that no kernel of the step wrote")

        def write(a, what):
            r = _root(a)
            if id(r) in roots or id(r) in state or id(r) in zeros:
                raise Refused(f"{what!r} writes into an input, a weight or a constant in place")
            if id(r) not in made:
                made[id(r)] = len(self.buffers)
                self.buffers.append(r)
            return ("buf", made[id(r)], _view(a, r))

        self.ops = []
        for n, launch in enumerate(launches):
            args = []
            for a, name in zip(launch.inputs, launch.names, strict=True):
                if isinstance(a, np.ndarray):
                    args.append(read(a, launch.what))
                    if launch.gathers and a.dtype.kind in "iu" and args[-1][:2] != ("in", "t"):
                        raise Refused(f"{launch.what!r} reads through integer tensors the step does not check")
                elif n >= parts.get("update_from", len(launches)) and name in hyper:
                    args.append(("hyper", name))
                else:
                    args.append(("num", a))
            outs = [write(o, launch.what) for o in launch.outputs]
            self.ops.append((launch, tuple(outs), tuple(args)))
        self.after = []  # each state slot after the step: a buffer's view, or unchanged
        for j, a in enumerate(after):
            r = _root(a)
            if id(r) in made:
                self.after.append(("buf", made[id(r)], _view(a, r)))
            elif a is before[j]:
                self.after.append(("same",))
            else:
                raise Refused("the step replaces a weight or optimizer slot with an array no kernel wrote")
        self.loss = read(parts["loss"], "the loss") if "loss" in parts else None  # None: a forward pass
        self.out = read(out, "the model's output")
        self.out_shape, self.out_dtype = out.shape, out.dtype

    def signature(self) -> tuple:
        """Everything but the arrays' identities: two steps of one plan agree on it."""
        ops = tuple((id(l.run), l.parallel, outs, args) for l, outs, args in self.ops)
        shapes = tuple((b.shape, b.dtype.str) for b in self.buffers)
        return ops, shapes, tuple(self.after), self.loss, self.out


def state_arrays(model, weights: list | None = None) -> list:
    """The arrays a step reads and replaces: every weight's value, then the optimizer's slots."""
    slots = model.optimizer._state
    state = [v.value for v in (weights or model.weights)]
    for n in sorted(slots):
        state.extend(slots[n].values())
    return state


def state_names(model) -> list:
    """Identifiers for state_arrays' entries: the weights' names, then name_slot for the slots."""
    weights, slots = model.weights, model.optimizer._state
    names = [v.name for v in weights] + [f"{weights[n].name}_{s}" if n < len(weights) else f"slot{n}_{s}"
                                         for n in sorted(slots) for s in slots[n]]
    out: list = []
    for n in names:
        n = re.sub(r"\W", "_", n)
        n = n if n.isidentifier() and n not in _RESERVED else f"w_{n}"
        while n in out:
            n += "_"
        out.append(n)
    return out


_RESERVED = {"x", "t", "S", "N", "H", "P", "step", "_view"}


def set_state_arrays(model, arrays: list, weights: list | None = None) -> None:
    weights = weights or model.weights
    for v, a in zip(weights, arrays, strict=False):
        v.value = a
    slots, k = model.optimizer._state, len(weights)
    for n in sorted(slots):
        for s in slots[n]:
            slots[n][s] = arrays[k]
            k += 1


def _expr(name: str, base_shape: tuple, view: tuple) -> str:
    """Source for `view` (offset, shape, strides, dtype) of the C-contiguous array `name`."""
    offset, shape, strides, _ = view
    if offset == 0 and shape == base_shape:
        return name
    c_strides = tuple(int(np.prod(shape[k + 1:], dtype=np.int64)) for k in range(len(shape)))
    itemsize = int(np.dtype(view[3]).itemsize)
    if offset == 0 and strides == tuple(c * itemsize for c in c_strides):
        return f"{name}.reshape({shape})"
    return f"_view({name}, {offset}, {shape}, {strides})"


def _view_of(a: np.ndarray, offset: int, shape: tuple, strides: tuple) -> np.ndarray:
    """The view (byte offset, shape, strides) of the C-contiguous array `a`."""
    return np.ndarray(shape, a.dtype, a, offset, strides)


class Plan:
    """The recorded step as one generated Python function over buffers allocated once."""

    def __init__(self, rec: Recording, inputs: dict, before: list, name: str, names: list):
        self.input_shapes = {n: (a.shape, a.dtype.str) for n, a in inputs.items()}
        twins = sorted({a[1] for a in rec.after if a[0] == "buf"})
        self.pairs = {i: (rec.buffers[i], np.empty_like(rec.buffers[i])) for i in twins}
        self.phase = 0
        glob = {"_view": _view_of}
        fixed: dict = {}

        def arg(ref) -> str:
            kind = ref[0]
            if kind == "num":
                return repr(ref[1]) if not isinstance(ref[1], (bool, np.bool_)) else str(bool(ref[1]))
            if kind == "hyper":
                return f"H[{ref[1]!r}]"
            if kind == "in":
                return _expr(ref[1], self.input_shapes[ref[1]][0], ref[2])
            if kind == "state":
                return _expr(names[ref[1]], before[ref[1]].shape, ref[2])
            if ref[1] in self.pairs:
                return _expr(twin[ref[1]], rec.buffers[ref[1]].shape, ref[2])
            key = ref
            if key not in fixed:  # a view of a buffer of the step (or of zeros): made once
                fixed[key] = f"v{len(fixed)}"
                buf = rec.buffers[ref[1]] if kind == "buf" else np.zeros(ref[1], ref[2])
                glob[fixed[key]] = eval(_expr("buf", buf.shape, ref[-1]), {"buf": buf, "_view": _view_of})
            return fixed[key]

        twin = {}
        for j, a in enumerate(rec.after):  # a buffer written as the new value of a weight or slot
            if a[0] == "buf" and a[1] not in twin:
                twin[a[1]] = f"new_{names[j]}"
        lines = ["def step(x, t, S, N, H, P):",
                 f'    """{name}: {len(rec.ops)} launches recorded from the step run layer by layer.',
                 "    x, t: the batch and its targets; S: weights and optimizer slots now; N: the buffers",
                 "    their new values go to; H: the optimizer's hyperparameters; P: run parallel kernels",
                 '    on threads."""']
        if before:
            lines.append(f"    {', '.join(names[j] for j in range(len(before)))}, = S")
        if self.pairs:
            lines.append(f"    {', '.join(twin[i] for i in self.pairs)}, = N")
        for n, (launch, outs, args) in enumerate(rec.ops):
            glob[f"k{n}"] = launch.run
            call = ", ".join([*(arg(o) for o in outs), *(arg(a) for a in args), "P" if launch.parallel else "False"])
            lines.append(f"    k{n}({call})  # {launch.what}")
        new_state = [names[j] if a[0] == "same" else arg(a) for j, a in enumerate(rec.after)]
        lines.append(f"    return [{', '.join(new_state)}], {arg(rec.loss) if rec.loss else None}, {arg(rec.out)}")
        self.source = "\n".join(lines) + "\n"
        exec(compile(self.source, f"<symdl training step {name}>", "exec"), glob)
        self.function = glob["step"]
        self.state_layout = [(a.shape, a.dtype.str) for a in before]
        self.parallel = any(launch.parallel for launch, _, _ in rec.ops)  # else no thread count is asked
        self.out_template = np.empty(rec.out_shape, rec.out_dtype)  # what the loss's feed checks against

    def run(self, x, t, state: list, hyper: dict, parallel: bool):
        """(new state arrays, the loss (0-d), the output) from the batch and the state now."""
        writes = [pair[self.phase] for pair in self.pairs.values()]
        self.phase ^= 1
        return self.function(x, t, state, writes, hyper, parallel)


def _state_io(weights: list, optimizer) -> dict:
    """Generated functions over state_arrays' entries as they are laid out now: read() the arrays,
    write(arrays) them back, flags() the weights' trainable flags. They name each variable and slot
    directly, with no loop and no list built but the one returned."""
    slots = optimizer._state
    values = [f"V{j}.value" for j in range(len(weights))]
    values += [f"s[{n!r}][{k!r}]" for n in sorted(slots) for k in slots[n]]
    flags = "".join(f"V{j}.trainable, " for j in range(len(weights)))
    lines = ["def read():", "    s = O._state", f"    return [{', '.join(values)}]",
             "def write(a):", "    s = O._state", *(f"    {v} = a[{i}]" for i, v in enumerate(values)),
             "    return a", "def flags():", f"    return ({flags})"]
    glob = {"O": optimizer, **{f"V{j}": v for j, v in enumerate(weights)}}
    exec(compile("\n".join(lines) + "\n", "<symdl training step state>", "exec"), glob)
    return glob


class _Hot:
    """The signature replayed last, for the short path: its plan, the state it left (`expect`), the
    generated accessors, and what the next step must match to take it."""

    def __init__(self, key, plan, weights: list, optimizer, expect: list):
        io = _state_io(weights, optimizer)
        self.key, self.plan, self.expect, self.optimizer = key, plan, expect, optimizer
        self.x_shape, self.x_dtype, self.trainable = key[0], key[1], key[4]
        self.read, self.write, self.flags = io["read"], io["write"], io["flags"]


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
        self.hot: _Hot | None = None

    def forget(self) -> None:
        """Drop every recording and plan: the model's layers changed (Sequential.add)."""
        for d in (self.plans, self.seen, self.recorded, self.expect, self.refused):
            d.clear()
        self.hot = None

    def _current(self) -> None:
        """Where parallel functions a recorded launch waited for have compiled since (the
        compile-ahead helper's work, backends/cpu/twins.py), the steps are recorded again: their
        kernels' plans now run those launches on threads."""
        twins.poll()
        if self.generation != twins.generation:
            self.generation = twins.generation
            for d in (self.plans, self.seen, self.recorded, self.expect):
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
        # the targets' checks, as a plain step; a view of the caller's array will do (the step only reads it)
        t = m.loss.prepare(y if isinstance(y, np.ndarray) else np.asarray(y), plan.out_template)[0]
        if (t.shape, t.dtype.str) != plan.input_shapes["t"]:
            return m._plain_step(x, y)
        if any(key[4]):  # the weights' trainable flags: the optimizer steps (as Trainer._apply)
            m.optimizer.iterations += 1
        parallel = False
        if plan.parallel:  # as the layer-by-layer step: threads follow the load (runtime/threads.py)
            adapt_threads()
            parallel = _CPU.flavour(True)
        new_state, loss, out = plan.run(x, t, state, m.optimizer.hyper(), parallel)
        set_state_arrays(m, new_state, weights)
        self.expect[key] = new_state
        if self.hot is None or self.hot.key != key:
            self.hot = _Hot(key, plan, weights, m.optimizer, new_state)
        self.hot.expect = new_state
        return float(loss), out

    def _hot_step(self, hot: _Hot, x, y):
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
        plan = hot.plan
        t = m.loss.prepare(y if isinstance(y, np.ndarray) else np.asarray(y), plan.out_template)[0]
        if (t.shape, t.dtype.str) != plan.input_shapes["t"]:
            return None
        if any(hot.trainable):  # the optimizer steps (as Trainer._apply)
            m.optimizer.iterations += 1
        parallel = False
        if plan.parallel:  # as the layer-by-layer step: threads follow the load (runtime/threads.py)
            adapt_threads()
            parallel = _CPU.flavour(True)
        new_state, loss, out = plan.run(x, t, state, m.optimizer.hyper(), parallel)
        hot.expect = self.expect[hot.key] = hot.write(new_state)
        return float(loss), out

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
