#!/usr/bin/env python
"""symdl kernels vs plain NumPy, side by side in one process with the same thread settings.

    python benchmarks/kernels.py [--quick] [--threads N] [--blas-threads N]

Sections: (1) dense forward + VJP at batch 128, (2) elementwise activations and a fused
relu(x*w + b) on 1e7 float32 elements, (3) compile latency of the dense kernels in fresh processes
(cold and warm cache). See benchmarks/README.md for what the columns mean.
"""
from __future__ import annotations

import os
import sys


def _flag(name: str, default: int) -> int:
    # parsed before numpy is imported: thread pools read their environment once, at import
    for k, arg in enumerate(sys.argv):
        if arg == name and k + 1 < len(sys.argv):
            return int(sys.argv[k + 1])
        if arg.startswith(name + "="):
            return int(arg.split("=", 1)[1])
    return default


NUMBA_THREADS = _flag("--threads", 2)
BLAS_THREADS = _flag("--blas-threads", 1)  # NOTES.md: OpenBLAS threads + numba threads oversubscribe
THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": str(BLAS_THREADS),
    "OMP_NUM_THREADS": str(BLAS_THREADS),
    "MKL_NUM_THREADS": str(BLAS_THREADS),
    "NUMBA_NUM_THREADS": str(NUMBA_THREADS),
}
os.environ.update(THREAD_ENV)  # before numpy/numba are imported, here and in every subprocess

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import sympy as sp  # noqa: E402

import symdl  # noqa: E402
from symdl import formulas  # noqa: E402
from symdl.runtime.cache import cache_dir  # noqa: E402


# -- timing -----------------------------------------------------------------------------------------

def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def race(fns: dict, repeats: int, warmup: int) -> dict:
    """Per-call times of each function, interleaved call by call so drift hits every peer alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return times


def mn(ts) -> float:
    return min(ts)


def md(ts) -> float:
    return statistics.median(ts)


def table(headers: list, rows: list, aligns: str | None = None) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    aligns = aligns or "l" + "r" * (len(headers) - 1)

    def line(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, aligns))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def check(name: str, got, want, rtol=1e-4, atol=1e-5) -> None:
    """Every pair is compared once before it is timed: a fast wrong answer is not a result."""
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        err = np.max(np.abs(np.asarray(got, np.float64) - want))
        raise AssertionError(f"{name}: symdl and NumPy disagree (max abs error {err:.3g})")


def raw_caller(kern, feed: dict, dims: dict | None = None):
    """The generated module's run() for these inputs, bypassing Kernel's checks and plan lookup
    (output still allocated per call): what the kernel itself costs. None if symdl's internals moved."""
    try:
        out = kern(dims=dims, **feed)
        bound, f = kern.last_dims, kern.formula
        args = [feed[t.name] for t in f.inputs]
        values = [bound[str(d)] for d in f.dims]
        parallel = kern.parallel_at(bound) and numba.get_num_threads() > 1  # Kernel's own choice
        run, shape, dtype = kern._module(out.dtype).run, out.shape, out.dtype
    except Exception:  # noqa: BLE001 (a diagnostic column; the benchmark goes on without it)
        return None
    if not shape:
        return lambda: run(np.empty(1, dtype), *args, *values, parallel)
    return lambda: run(np.empty(shape, dtype), *args, *values, parallel)


# -- header -----------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas_name() -> str:
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name')} {cfg.get('version')}"
    except Exception:  # noqa: BLE001 (older numpy: the header just says unknown)
        return "unknown"


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"


def busy() -> bool:
    return os.getloadavg()[0] > 0.5


def header(quick: bool) -> str:
    import llvmlite
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    lines = [
        "symdl kernel benchmarks: symdl vs plain NumPy, same process, same thread settings",
        f"mode: {'--quick' if quick else 'full'}",
        f"cpu: {cpu_model()}; os.cpu_count()={os.cpu_count()}, usable={affinity}",
        f"python {platform.python_version()}, numpy {np.__version__} (BLAS: {blas_name()}), "
        f"numba {numba.__version__}, llvmlite {llvmlite.__version__}, sympy {sp.__version__}, "
        f"symdl {symdl.__version__}",
        "threads: " + ", ".join(f"{k}={v}" for k, v in THREAD_ENV.items())
        + f" (numba.get_num_threads()={numba.get_num_threads()})",
        "  NumPy's ufuncs run on one thread whatever the settings; symdl's parallel loops use numba's "
        "threads (columns '1thr' rerun them with numba.set_num_threads(1)).",
        f"kernel cache: {cache_dir()}",
        f"load average at start: {load()}" + (
            "  WARNING: other processes are busy; 2-thread timings suffer most (a parallel loop waits "
            "for its slowest thread)" if busy() else ""),
    ]
    return "\n".join(lines)


# -- 1. dense forward + VJP --------------------------------------------------------------------------

LAYERS = [(784, 64), (64, 64), (64, 10)]
BATCH = 128


def bench_dense(repeats: int, warmup: int) -> str:
    kern = formulas.get("dense").compile()
    rng = np.random.default_rng(0)
    rows, verdicts, totals = [], [], None
    for n, m in LAYERS:
        x = rng.standard_normal((BATCH, n), dtype=np.float32)
        W = rng.standard_normal((n, m), dtype=np.float32) / np.float32(np.sqrt(n))
        b = rng.standard_normal(m, dtype=np.float32)
        G = rng.standard_normal((BATCH, m), dtype=np.float32)

        def s_fwd():
            return kern(x=x, W=W, b=b)

        def s_vjp():
            return kern.vjp(G, x=x, W=W, b=b)

        def n_fwd():
            return x @ W + b

        def n_vjp():
            return G @ W.T, x.T @ G, G.sum(0)

        check(f"dense {n}->{m} forward", s_fwd(), n_fwd())
        g, (gx, gW, gb) = s_vjp(), n_vjp()
        for k, want in (("x", gx), ("W", gW), ("b", gb)):
            check(f"dense {n}->{m} grad {k}", g[k], want, rtol=1e-3, atol=1e-3)
        fns = {"sf": s_fwd, "nf": n_fwd, "sv": s_vjp, "nv": n_vjp}
        raw_f = raw_caller(kern, dict(x=x, W=W, b=b))
        feed = {"grad_y": G, "x": x, "W": W, "b": b}
        raw_g = [raw_caller(gk, {i: a for i, a in feed.items() if i in gk.formula.input_names}, kern.last_dims)
                 for gk in (kern.grad_kernel(k) for k in ("x", "W", "b"))]
        if raw_f and all(raw_g):
            fns["rf"] = raw_f
            rx, rW, rb = raw_g

            def raw_vjp():
                rx(), rW(), rb()

            fns["rv"] = raw_vjp
        t = {k: np.array(v) for k, v in race(fns, repeats, warmup).items()}
        totals = t if totals is None else {k: totals[k] + t[k] for k in t}
        for part, key in (("forward", ("sf", "nf", "rf")), ("vjp", ("sv", "nv", "rv")),
                          ("fwd+vjp", None)):
            if key is None:
                s, p = t["sf"] + t["sv"], t["nf"] + t["nv"]
                r = t["rf"] + t["rv"] if "rf" in t else None
            else:
                s, p, r = t[key[0]], t[key[1]], t.get(key[2])
            rows.append(_dense_row(f"{n}->{m}", part, s, p, r))
        ratio = md(t["sf"] + t["sv"]) / md(t["nf"] + t["nv"])
        verdicts.append(f"{n}->{m}: {ratio:.2f}x {'PASS' if ratio <= 1.5 else 'FAIL'}")
    s, p = totals["sf"] + totals["sv"], totals["nf"] + totals["nv"]
    rows.append(_dense_row("all 3", "fwd+vjp", s, p, totals["rf"] + totals["rv"] if "rf" in totals else None))
    ratio = md(s) / md(p)
    verdicts.append(f"all 3: {ratio:.2f}x {'PASS' if ratio <= 1.5 else 'FAIL'}")
    head = ["layer", "part", "symdl min", "symdl med", "numpy min", "numpy med", "ratio med", "ratio min",
            "kernel med", "overhead"]
    return "\n".join([
        f"1. Dense layer, batch {BATCH}, float32: times in microseconds per call ({repeats} interleaved "
        f"repeats after {warmup} warm-up).",
        "   symdl: kern(x=, W=, b=) and kern.vjp(G, x=, W=, b=) (catalog 'dense'); NumPy: x@W + b, and "
        "G@W.T, x.T@G, G.sum(0).",
        "   Both sides allocate their outputs. ratio = symdl / NumPy (< 1: symdl faster).",
        "   kernel = the generated modules' run() called directly (still allocating outputs): the code "
        "symdl generates, without Kernel's checks;",
        "   overhead = symdl med - kernel med: the Python cost of Kernel.__call__ / Kernel.vjp per call.",
        table(head, rows, "llrrrrrrrr"),
        "   target symdl/NumPy <= 1.5x for fwd+vjp (median): " + "; ".join(verdicts),
    ])


def _dense_row(layer, part, s, p, r):
    us = 1e6
    raw = [f"{md(r) * us:.1f}", f"{(md(s) - md(r)) * us:.1f}"] if r is not None else ["n/a", "n/a"]
    return [layer, part, f"{mn(s) * us:.1f}", f"{md(s) * us:.1f}", f"{mn(p) * us:.1f}",
            f"{md(p) * us:.1f}", f"{md(s) / md(p):.2f}", f"{mn(s) / mn(p):.2f}", *raw]


# -- 2. elementwise activations and a fused layer tail -----------------------------------------------

def fused_formula() -> symdl.Formula:
    """y[i, j] = relu(x[i, j]*w[j] + b[j]): one pass over x instead of NumPy's three."""
    R, C = sp.symbols("R C", integer=True, positive=True)
    i, j = sp.Idx("i", R), sp.Idx("j", C)
    x, w, b, y = map(sp.IndexedBase, "x w b y".split())
    return symdl.Formula(sp.Eq(y[i, j], symdl.relu(x[i, j] * w[j] + b[j])), name="bench_scale_shift_relu")


class NumpyPeers:
    """The plain-NumPy peers, each in an allocating form and an out= form (scratch preallocated)."""

    def __init__(self, shape):
        self.o = np.empty(shape, np.float32)
        self.t = np.empty(shape, np.float32)
        self.mask = np.empty(shape, bool)

    # forward
    def relu(self, x):
        return np.maximum(x, 0)

    def relu_out(self, x):
        return np.maximum(x, 0, out=self.o)

    def sigmoid(self, x):
        return 1 / (1 + np.exp(-x))

    def sigmoid_out(self, x):
        o = self.o
        np.negative(x, out=o)
        np.exp(o, out=o)
        np.add(o, 1, out=o)
        return np.reciprocal(o, out=o)

    def tanh(self, x):
        return np.tanh(x)

    def tanh_out(self, x):
        return np.tanh(x, out=self.o)

    def fused(self, x, w, b):
        return np.maximum(x * w + b, 0)

    def fused_out(self, x, w, b):
        o = self.o
        np.multiply(x, w, out=o)
        np.add(o, b, out=o)
        return np.maximum(o, 0, out=o)

    # VJPs from the forward inputs (what the symdl gradient kernels read too)
    def relu_vjp(self, G, x):
        return G * (x > 0)

    def relu_vjp_out(self, G, x):
        np.greater(x, 0, out=self.mask)
        return np.multiply(G, self.mask, out=self.o)

    def sigmoid_vjp(self, G, x):
        s = 1 / (1 + np.exp(-x))
        return G * s * (1 - s)

    def sigmoid_vjp_out(self, G, x):
        s, o = self.t, self.o
        self.sigmoid_out(x)
        s[...] = o
        np.subtract(1, s, out=o)
        np.multiply(o, s, out=o)
        return np.multiply(o, G, out=o)

    def tanh_vjp(self, G, x):
        t = np.tanh(x)
        return G * (1 - t * t)

    def tanh_vjp_out(self, G, x):
        t, o = self.t, self.o
        np.tanh(x, out=t)
        np.multiply(t, t, out=o)
        np.subtract(1, o, out=o)
        return np.multiply(o, G, out=o)

    def fused_vjp(self, G, x, w, b):
        m = G * (x * w + b > 0)
        return {"x": m * w, "w": (m * x).sum(0), "b": m.sum(0)}

    def fused_vjp_x(self, G, x, w, b):
        return G * (x * w + b > 0) * w

    def fused_vjp_w(self, G, x, w, b):
        return (G * (x * w + b > 0) * x).sum(0)

    def fused_vjp_b(self, G, x, w, b):
        return (G * (x * w + b > 0)).sum(0)


def bench_elementwise(shape, repeats: int, warmup: int) -> tuple[str, float]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape, dtype=np.float32)
    G = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal(shape[1], dtype=np.float32)
    b = rng.standard_normal(shape[1], dtype=np.float32)
    o = np.empty(shape, np.float32)
    P = NumpyPeers(shape)
    t0 = time.perf_counter()
    kern = {k: formulas.get(k).compile() for k in ("relu", "sigmoid", "tanh")}
    kern["fused"] = fused_formula().compile()
    gk = {k: kern[k].grad_kernel("x") for k in ("relu", "sigmoid", "tanh")}
    fx = kern["fused"]
    fw = dict(x=x, w=w, b=b)

    # (label, output mode, symdl call, NumPy call)
    cases = []
    for k in ("relu", "sigmoid", "tanh"):
        cases.append((k, "alloc", lambda k=k: kern[k](x=x), lambda k=k: getattr(P, k)(x)))
        cases.append((k, "out=", lambda k=k: kern[k](x=x, out=o), lambda k=k: getattr(P, f"{k}_out")(x)))
    cases.append(("relu(x*w+b) fused", "alloc", lambda: fx(**fw), lambda: P.fused(x, w, b)))
    cases.append(("relu(x*w+b) fused", "out=", lambda: fx(out=o, **fw), lambda: P.fused_out(x, w, b)))
    for k in ("relu", "sigmoid", "tanh"):
        cases.append((f"{k} vjp", "alloc", lambda k=k: kern[k].vjp(G, x=x)["x"],
                      lambda k=k: getattr(P, f"{k}_vjp")(G, x)))
        cases.append((f"{k} vjp", "out=", lambda k=k: gk[k](out=o, grad_y=G, x=x),
                      lambda k=k: getattr(P, f"{k}_vjp_out")(G, x)))
    cases.append(("fused vjp x,w,b", "alloc", lambda: fx.vjp(G, **fw), lambda: P.fused_vjp(G, x, w, b)))
    for n in ("x", "w", "b"):
        cases.append((f"fused vjp {n} only", "alloc", lambda n=n: fx.vjp(G, wrt=[n], **fw)[n],
                      lambda n=n: getattr(P, f"fused_vjp_{n}")(G, x, w, b)))

    for label, mode, s, p in cases:  # compile (first run only), and check each pair agrees
        got, want = s(), p()
        if isinstance(got, dict):
            for n in got:
                check(f"{label} {n}", got[n], want[n], rtol=1e-3, atol=1e-2)
        else:
            check(f"{label} {mode}", got, want, rtol=1e-3, atol=1e-5)
    warm_s = time.perf_counter() - t0

    rows = []
    for label, mode, s, p in cases:
        numba.set_num_threads(NUMBA_THREADS)
        t = race({"s": s, "p": p}, repeats, warmup)
        numba.set_num_threads(1)
        t1 = race({"s": s}, max(3, repeats // 2), 1)["s"]
        numba.set_num_threads(NUMBA_THREADS)
        ms = 1e3
        rows.append([label, mode, f"{mn(t['s']) * ms:.2f}", f"{md(t['s']) * ms:.2f}",
                     f"{mn(t['p']) * ms:.2f}", f"{md(t['p']) * ms:.2f}", f"{md(t['s']) / md(t['p']):.2f}",
                     f"{mn(t['s']) / mn(t['p']):.2f}", f"{mn(t1) * ms:.2f}", f"{mn(t1) / mn(t['p']):.2f}"])
    head = ["kernel", "output", "symdl min", "symdl med", "numpy min", "numpy med", "ratio med", "ratio min",
            "symdl 1thr min", "ratio 1thr min"]
    text = "\n".join([
        f"2. Elementwise on {shape[0]}x{shape[1]} = {shape[0] * shape[1]:.0e} float32: times in "
        f"milliseconds per call ({repeats} interleaved repeats after {warmup} warm-up; '1thr' "
        f"{max(3, repeats // 2)} repeats).",
        "   alloc: both sides allocate the result. out=: symdl writes a preallocated out= (VJP rows "
        "call kern.grad_kernel('x')(out=...)),",
        "   NumPy writes preallocated out=/scratch arrays (relu vjp out= uses a preallocated bool mask). "
        "NumPy VJPs recompute from x like the symdl kernels.",
        "   'fused vjp x,w,b' is one kern.vjp call (three gradient kernels) vs NumPy sharing its mask; "
        "'... only' rows compute one gradient each.",
        "   ratio = symdl / NumPy (< 1: symdl faster), of medians and of minimums; '1thr' = symdl with "
        "numba.set_num_threads(1), vs NumPy's min.",
        table(head, rows, "llrrrrrrrr"),
    ])
    return text, warm_s


# -- 3. compile latency -----------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    t_np = time.perf_counter()
    import sympy
    t_sp = time.perf_counter()
    import numba
    t_nb = time.perf_counter()
    sys.path.insert(0, {root!r})
    import symdl
    from symdl import formulas
    formulas.names()
    t_sd = time.perf_counter()
    kern = formulas.get("dense").compile()
    grads = {{n: kern.grad_kernel(n) for n in ("x", "W", "b")}}
    t_derive = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 784), dtype=np.float32)
    W = rng.standard_normal((784, 64), dtype=np.float32)
    b = rng.standard_normal(64, dtype=np.float32)
    G = rng.standard_normal((128, 64), dtype=np.float32)
    t_data = time.perf_counter()
    kern(x=x, W=W, b=b)
    t_fwd = time.perf_counter()
    kern.vjp(G, x=x, W=W, b=b)
    t_end = time.perf_counter()
    data = t_data - t_derive
    print(json.dumps(dict(numpy=t_np - t0, sympy=t_sp - t_np, numba=t_nb - t_sp, symdl=t_sd - t_nb,
                          imports=t_sd - t0, derive=t_derive - t_sd, first_fwd=t_fwd - t_data,
                          first_vjp=t_end - t_fwd, compile=t_end - t_sd - data,
                          total=t_end - t0 - data)))
""")


def run_child(cache: str) -> dict:
    env = dict(os.environ, SYMDL_CACHE_DIR=cache)
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"compile-latency subprocess failed ({res.returncode}):\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process"] = wall
    return out


def bench_compile(cold_runs: int, warm_runs: int) -> str:
    results = []
    for c in range(cold_runs):
        with tempfile.TemporaryDirectory(prefix="symdl-bench-cache-") as d:
            cold = run_child(d)
            results.append((f"cold #{c + 1}", cold))
            if c == 0:
                for w in range(warm_runs):
                    results.append((f"warm #{w + 1}", run_child(d)))
    keys = ["numpy", "sympy", "numba", "symdl", "imports", "derive", "first_fwd", "first_vjp", "compile",
            "total", "process"]
    rows = [[name] + [f"{r[k]:.3f}" for k in keys] for name, r in results]
    warm = [r for name, r in results if name.startswith("warm")]
    verdict = ""
    if warm:
        a, bb = md([r["total"] for r in warm]), md([r["compile"] for r in warm])
        verdict = (f"   warm start, median of {len(warm)}: (a) imports + compile + first calls {a:.3f} s "
                   f"{'PASS' if a < 1 else 'FAIL'}, (b) compile + first calls {bb:.3f} s "
                   f"{'PASS' if bb < 1 else 'FAIL'} (target < 1 s)")
    head = ["run", "import numpy", "sympy", "numba", "symdl", "imports", "derive", "1st fwd", "1st vjp",
            "(b) compile", "(a) total", "process"]
    return "\n".join([
        "3. Compile latency of the dense kernels (forward + VJP for x, W, b; float32, 128x784 -> 64), "
        "seconds, each run a new process.",
        "   cold: fresh empty SYMDL_CACHE_DIR (temporary folder); warm: new processes on the same folder.",
        "   imports = numpy + sympy + numba + symdl + catalog; derive = build Kernels (lowering, symbolic VJPs);",
        "   1st fwd / 1st vjp = first calls (code generation, numba compile or cache load, run);",
        "   (b) compile = derive + 1st fwd + 1st vjp (no imports); (a) total = imports + (b); process = "
        "wall time of the subprocess seen by the parent (adds interpreter start-up).",
        table(head, rows),
        verdict,
    ])


# -- main -------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (about a minute in all)")
    ap.add_argument("--threads", type=int, default=2, help="numba threads (default 2)")
    ap.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS/OpenMP/MKL threads (default 1)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: dense,elementwise,compile")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    numba.set_num_threads(NUMBA_THREADS)
    if args.quick:
        dense_reps, dense_warm, ew_reps, ew_warm, cold, warm = 400, 50, 5, 1, 1, 2
    else:
        dense_reps, dense_warm, ew_reps, ew_warm, cold, warm = 3000, 200, 21, 3, 2, 5
    start = time.perf_counter()
    print(header(args.quick), flush=True)
    if "dense" not in skip:
        print("\n" + bench_dense(dense_reps, dense_warm), flush=True)
        print(f"   (load average after section 1: {load()})")
    if "elementwise" not in skip:
        text, warm_s = bench_elementwise((10000, 1000), ew_reps, ew_warm)
        print("\n" + text, flush=True)
        print(f"   (first calls and checks before timing: {warm_s:.1f} s, includes any compiling into the "
              f"kernel cache; load average after section 2: {load()})")
    if "compile" not in skip:
        print("\n" + bench_compile(cold, warm), flush=True)
        print(f"   (load average after section 3: {load()}; these are wall times, so a busy machine "
              "inflates them all)")
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none used (no parallel kernel ran)"
    print(f"\nnumba threading layer: {layer}; load average at end: {load()}; total benchmark time "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
