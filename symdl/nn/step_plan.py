"""A recorded training step (nn/replay.py): its launches with every argument resolved
(`Recording`), printed as one generated function over buffers allocated once (`Plan`), and the
generated accessors of the state a replayed step reads and writes (`_state_io`, `Hot`)."""
from __future__ import annotations

import re

import numpy as np


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


class Hot:
    """The signature replayed last, for the short path: its plan, the state it left (`expect`), the
    generated accessors, and what the next step must match to take it."""

    def __init__(self, key, plan, weights: list, optimizer, expect: list):
        io = _state_io(weights, optimizer)
        self.key, self.plan, self.expect, self.optimizer = key, plan, expect, optimizer
        self.x_shape, self.x_dtype, self.trainable = key[0], key[1], key[4]
        self.read, self.write, self.flags = io["read"], io["write"], io["flags"]
