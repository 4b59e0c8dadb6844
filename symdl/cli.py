"""The `symdl` command: list, show and verify the catalog; train the documents' example models.

    symdl list                 the catalog, with each entry's formula code (F1-F18: docs/catalog.md)
    symdl show dense_relu      formula, derived gradients (pretty and LaTeX), loop IR, source
    symdl show e2 --step       an example model's whole training step as one generated function
    symdl show embedding --backend cuda    ... with the numba.cuda.jit source
    symdl verify [NAME ...]    symdl.verify.all: symbolic, numeric and backend checks; exit 1 on any failure
    symdl train [EXAMPLE]      train e1..e5 (docs/catalog.md), rnn, attention, ... (default: e5 on digits)
    symdl bench [--workloads]  training steps of the documents' workloads, next to NumPy by hand
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="symdl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the catalog (codes F1-F18: docs/catalog.md)")
    show = sub.add_parser("show", help="print a formula, its gradients and its generated code")
    show.add_argument("name")
    show.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    show.add_argument("--step", action="store_true",
                      help="NAME is an example model (e1..e5, rnn, ...): print its generated training step")
    show.add_argument("--backend", default="cpu", choices=["cpu", "cuda"],
                      help="whose generated source to print (cuda: printed without a GPU or numba.cuda)")
    verify = sub.add_parser("verify", help="verify catalog formulas (all when no name is given)")
    verify.add_argument("names", nargs="*")
    verify.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    _add_train_parser(sub)
    sub.add_parser("bench", add_help=False, help="time training steps against NumPy by hand (symdl bench --help)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":  # its own options (symdl/bench.py)
        from symdl import bench
        return bench.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"list": _list, "show": _show, "verify": _verify, "train": _train}[args.command](args)


def _catalog():
    from symdl import formulas
    return formulas


def _list(args) -> int:
    entries = _catalog().entries()
    width = max(len(e.name) for e in entries) + 1
    print(f"{'entry':{width}s} {'code':4s} summary")
    for e in entries:
        print(f"{e.name:{width}s} {e.ref:4s} {e.summary}")
    print(f"\n{len(entries)} entries. Codes F1-F18 are the source articles' formulas, explained in "
          f"docs/catalog.md; `symdl show NAME` prints an entry.")
    return 0


def _show_step(name: str) -> int:
    """The example model's recorded training step (symdl/nn/replay.py), after a few steps on the
    bundled digits (E3: its synthetic regression data) in the example's batch size."""
    from symdl.nn import zoo
    try:
        spec = zoo.get(name)
    except ValueError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    if spec.layout == "regression":
        (x, y), _ = zoo.regression_data()[0]
    else:
        (x, y), _ = zoo.load_dataset("digits", spec.layout)
    model = spec.build(x.shape[1:])
    x, y = x[:spec.batch_size], spec.targets(y[:spec.batch_size])
    for _ in range(6):  # two steps recorded, one checked both ways, then replayed
        model.train_on_batch(x, y)
    print(f"# {spec.summary}\n# generated training step (batch {len(x)}): the kernels' run functions in order")
    print(model.step_source())
    return 0


def _show(args) -> int:
    if args.step:
        return _show_step(args.name)
    from symdl.loops import format_ir, lower
    from symdl.loops.lower import fusable, lower_fused
    formulas = _catalog()
    try:
        target = formulas.get(args.name)
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    parts = list(getattr(target, "formulas", [target]))
    stability = getattr(target, "stability", None)
    if stability is not None:  # the catalog registers its entries through symdl.passes.stabilize
        _section("stability rewrites (proven equal by symdl.verify.equivalent)")
        for rewrite in stability.rewrites:
            print(f"  {rewrite}")
    states = {o for s in getattr(target, "systems", ()) for o in s.outputs}
    for f in parts:
        _section(f"formula {f.name}")
        print(f.pretty())
        print(f"\nLaTeX: {f.latex()}")
        if f.output.name in states:  # differentiated with its system, below
            continue
        for name, g in f.vjp().items():
            _section(f"gradient with respect to {name}: {g.name}")
            print(g.pretty())
            print(f"\nLaTeX: {g.latex()}")
    if states:
        _section(f"gradient: the adjoint system{'s' if len(target.systems) > 1 else ''}, then the inputs' gradients")
        grad = target.vjp()
        print("\n\n".join(g.pretty() for g in grad.formulas[len(parts):]))
    _cost([f for f in parts if f.output.name not in states])
    source = _printer(args.backend, args.dtype)
    for system in ({id(k): k for k in target.compile().systems.values()}.values() if states else ()):
        _section(f"loop IR and generated source: the system {', '.join(system.outputs)} ({args.dtype})")
        print(format_ir(system.program))
        print()
        print(source(system.program))
    if not states and fusable(parts):  # an optimizer step: one nest writes every output
        fused = lower_fused(parts, target.name)
        _section(f"loop IR and generated source: {target.name}, fused ({args.dtype})")
        print(format_ir(fused))
        print()
        print(source(fused))
    for f in parts:
        if f.output.name in states:
            continue
        # a recurrence's gradients are Programs (its adjoint recurrence, then the gradient): each formula
        grads = {h.key(): h for g in f.vjp().values() for h in getattr(g, "formulas", (g,))}  # one adjoint
        for g in [f, *grads.values()]:
            _section(f"loop IR and generated source: {g.name} ({args.dtype}, {args.backend})")
            print(format_ir(lower(g)))
            print()
            print(g.compile().source(args.dtype) if args.backend == "cpu" else source(lower(g)))
    return 0


def _printer(backend: str, dtype: str):
    """LoopProgram -> the backend's generated module source (cuda's printing imports no numba.cuda)."""
    from symdl import __version__
    from symdl.backends.cpu import generate as cpu
    from symdl.backends.cuda import generate as gpu
    return lambda prog: (cpu if backend == "cpu" else gpu)(prog, dtype, __version__)


def _cost(parts) -> None:
    """Counted work (loop trip counts, m·n·k per matrix product) of each formula and its gradients,
    at sizes 8x the smallest valid ones: the cost contract reverse mode keeps (tests/test_cost_contract.py)."""
    from symdl.loops import lower, trip_count
    from symdl.reference.inputs import default_sizes

    _section("cost: counted work of the forward pass and of each gradient")
    for f in parts:
        if f.recurrence is not None:
            print(f"  {f.name}: a recurrence (its gradient runs the adjoint recurrence backwards)")
            continue
        dims = {str(k): 8 * v for k, v in default_sizes(f).items()}
        forward = trip_count(lower(f), dims)
        work = {n: trip_count(lower(g), dims) for n, g in f.vjp().items()}
        grads = ", ".join(f"grad_{n} {w} ({w / max(forward, 1):.2f}x)" for n, w in work.items())
        print(f"  {f.name} at {dims}: forward {forward}; {grads}")


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 72 - len(title)))


def _verify(args) -> int:
    import symdl
    formulas = _catalog()
    names = args.names or formulas.names()
    unknown = [n for n in names if n not in formulas.names()]
    if unknown:
        print(f"unknown catalog formula(s): {', '.join(unknown)}; see `symdl list`", file=sys.stderr)
        return 2
    header = f"{'formula':34s} {'ref':4s} {'symbolic':>10s} {'numeric':>10s} {'backends':>10s} {'time':>7s}  result"
    print(header)
    print("-" * len(header))
    refs = {e.name: e.ref for e in formulas.entries()}
    failed = 0
    for name in names:
        start = time.perf_counter()
        target = formulas.get(name)
        error, failing = None, None
        try:
            summary = symdl.verify.all(target, backend=args.backend)
        except symdl.verify.VerificationFailed as err:  # report every failure, keep going
            cause = err.__cause__ or err
            summary, failing, error = err.summary, err.check, f"{err.check}: {type(cause).__name__}: {cause}"
        found = summary.cells()
        cells = [found.get(c, "FAIL" if c == failing else "-") for c in ("symbolic", "numeric", "backends")]
        note = (f"    note: {len(summary.undecided)} gradient elements undecided: equal at random points to "
                f"30 digits, no exact proof within the time limit") if summary.undecided else ""
        failed += error is not None
        result = "ok" if error is None else "FAILED"
        print(f"{name:34s} {refs[name]:4s} {cells[0]:>10s} {cells[1]:>10s} {cells[2]:>10s} "
              f"{time.perf_counter() - start:6.1f}s  {result}", flush=True)
        if error:
            print(f"    {error}", flush=True)
        if note:
            print(note, flush=True)
    print(f"\n{len(names) - failed} of {len(names)} formulas verified"
          f"{'' if not failed else f', {failed} failed'}.")
    return 1 if failed else 0


# -- symdl train ----------------------------------------------------------------------------------
DEFAULT_EXAMPLE = "e5"  # reaches >= 95 % on the bundled digits in well under a minute (docs/nn.md)
TRAIN_EXAMPLES = ("e1", "e2", "e3", "e4", "e5", "logreg", "rnn", "attention", "autoencoder")


def _add_train_parser(sub) -> None:
    train = sub.add_parser(
        "train", help="train one of the documents' example models (default: e5 on the bundled digits)",
        description="Train a named example model (the example models E1-E5 of docs/catalog.md and "
                    "the nn examples' models) with "
                    "the documents' optimizer, loss, batch size and epochs, print one line per epoch "
                    "and the test accuracy. Offline with the default data set (digits, bundled).")
    train.add_argument("example", nargs="?", default=DEFAULT_EXAMPLE,
                       help=f"one of {', '.join(TRAIN_EXAMPLES)} (default {DEFAULT_EXAMPLE})")
    train.add_argument("--dataset", default="digits",
                       help="digits (bundled, default), mnist, fashion_mnist or cifar10 (downloaded once)")
    train.add_argument("--epochs", type=int, help="default: the document's")
    train.add_argument("--batch-size", type=int, help="default: the document's")
    train.add_argument("--lr", type=float, help="default: the document's (higher for some models on digits)")
    train.add_argument("--seed", type=int, default=0, help="initial weights and shuffling (default 0)")
    train.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    train.add_argument("--plot", metavar="PATH", help="write the training curves (needs matplotlib)")
    train.add_argument("--ranks", type=int, help="train data-parallel on N processes of this machine "
                       "(mpiexec; batch size per rank; needs symdl[mpi], docs/distributed.md)")
    train.add_argument("--distributed", action="store_true",
                       help="train data-parallel under an MPI launcher you started (mpiexec, srun)")


def _fail(message: str, code: int) -> int:
    print(f"symdl train: {message}", file=sys.stderr)
    return code


def _train(args) -> int:
    if args.example not in TRAIN_EXAMPLES:
        return _fail(f"unknown example {args.example!r}; choose one of {', '.join(TRAIN_EXAMPLES)}", 2)
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            return _fail(f"{flag} must be at least 1, got {value}", 2)
    if args.plot and importlib.util.find_spec("matplotlib") is None:  # before training, not after
        return _fail("--plot needs matplotlib, which symdl does not install: pip install 'symdl[plot]'", 2)
    if args.ranks is not None:
        return _launch(args)
    dist = None
    if args.distributed:
        from symdl import nn
        try:
            dist = nn.Distributed()
        except RuntimeError as e:  # no mpi4py
            return _fail(str(e), 2)
    say = _silent if dist and dist.rank else print  # one voice: rank 0 prints, the others train silently
    from symdl.datasets import DownloadError
    from symdl.nn import zoo
    spec = zoo.get(args.example)
    if spec.layout == "regression" and args.dataset != "digits":
        return _fail(f"{args.example} trains on its own synthetic data; --dataset does not apply", 2)
    if spec.layout != "regression" and args.dataset not in zoo.DATASETS:
        return _fail(f"unknown data set {args.dataset!r}; choose one of {', '.join(zoo.DATASETS)}", 2)
    start = time.perf_counter()
    try:
        if spec.layout == "regression":
            (xtr, ytr), (xte, yte) = zoo.regression_data()[0]
            data_name = "synthetic y = 2 x1 - 3 x2 + 0.5 + noise"
        else:
            (xtr, ytr), (xte, yte) = zoo.load_dataset(args.dataset, spec.layout)
            data_name = args.dataset
    except DownloadError as e:
        return _fail(str(e), 1)
    if spec.name == "autoencoder":
        ytr, yte = xtr, xte
    else:
        ytr, yte = spec.targets(ytr), spec.targets(yte)
    try:
        model = spec.build(xtr.shape[1:], dataset=args.dataset, lr=args.lr, seed=args.seed, device=args.device)
    except (ImportError, RuntimeError) as e:  # device="cuda" without numba-cuda or a GPU
        return _fail(str(e), 1)
    epochs = args.epochs or spec.epochs
    batch = args.batch_size or spec.batch_size
    say(f"{spec.name}: {spec.summary}")
    ranks = f" per rank x {dist.size} ranks" if dist else ""
    say(f"data: {data_name}, {len(xtr)} training and {len(xte)} test samples of shape {xtr.shape[1:]}; "
        f"{model.count_params()} parameters; {epochs} epochs, batch {batch}{ranks}, "
        f"{type(model.optimizer).__name__} lr {model.optimizer.learning_rate:g}, {spec.loss}, {args.device}",
        flush=True)
    # one line per epoch (verbose 2), at most ~20 lines for E3's 1000 epochs
    every = max(1, epochs // 20)
    hist = model.fit(xtr, ytr, epochs=epochs, batch_size=batch, verbose=2 if every == 1 else 0,
                     callbacks=[] if every == 1 else [_every_n_epochs(every, epochs, say)], distributed=dist or False)
    trained = time.perf_counter() - start
    done = f"{len(hist.epoch)} epoch{'s' if len(hist.epoch) != 1 else ''} in {trained:.1f} s"
    result = model.evaluate(xte, yte, batch_size=max(batch, 256), verbose=0, return_dict=True)
    metrics = ", ".join(f"test {k} {v:.4f}" for k, v in result.items())
    if "accuracy" in result:
        say(f"test accuracy: {result['accuracy']:.2%} ({metrics}); {done}")
    else:
        say(f"test loss: {result['loss']:.6f}; {done}")
    if spec.name == "e3":
        W, b = model.get_weights()
        say(f"learned w = {W.ravel().astype(float).round(3).tolist()}, "
            f"b = {b.astype(float).round(3).tolist()} (true [2.0, -3.0], [0.5])")
    if args.plot and not (dist and dist.rank):
        hist.plot(args.plot)
        say(f"training curves written to {args.plot}")
    return 130 if hist.interrupted else 0


def _silent(*args, **kwargs) -> None:
    pass


def _launch(args) -> int:
    """`symdl train ... --ranks N`: the same command on N ranks under mpiexec (symdl.launch)."""
    from symdl import launch
    if args.ranks < 1:
        return _fail(f"--ranks must be at least 1, got {args.ranks}", 2)
    if importlib.util.find_spec("mpi4py") is None:
        return _fail(f"--ranks needs mpi4py and an MPI library: {launch.INSTALL}", 2)
    child = [sys.executable, "-m", "symdl.cli", "train", args.example, "--dataset", args.dataset,
             "--seed", str(args.seed), "--device", args.device, "--distributed"]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--lr", args.lr),
                        ("--plot", args.plot)):
        if value is not None:
            child += [flag, str(value)]
    try:
        return launch.run(args.ranks, child)
    except RuntimeError as e:  # no mpiexec
        return _fail(str(e), 2)


def _every_n_epochs(every: int, epochs: int, say=print):
    """A callback printing the first and every n-th epoch's logs (E3 runs 1000 one-batch epochs)."""
    from symdl.nn import Callback

    class EveryN(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % every == 0 or epoch == 0:
                shown = " - ".join(f"{k}: {v:.6f}" for k, v in (logs or {}).items())
                say(f"Epoch {epoch + 1}/{epochs} - {shown}", flush=True)
    return EveryN()


if __name__ == "__main__":
    sys.exit(main())
