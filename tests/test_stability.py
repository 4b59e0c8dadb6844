"""Stability rewrites (symdl.passes.stabilize) against NumPy: at logits of ±1e4 (float64) and
±88..±1e4 (float32) every stabilized catalog entry is finite and equal to a NumPy reference written
with stable formulas, forward and gradients; gradients match finite differences at moderate inputs;
the naive forms do overflow there; the verifier proves each rewrite and rejects a wrong one."""
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import Formula, Program, formulas, sigmoid, softplus
from symdl.cli import main
from symdl.formulas import activations, losses
from symdl.passes import stabilize
from symdl.verify.equivalent import exact_zero, rewrites_hold

# -- NumPy references, stable by construction --------------------------------------------------------


def np_logsumexp(z):
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_softplus(z):
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def np_sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def ref_softmax(a, G):
    p = np_softmax(a["z"])
    return p, {"z": p * (G - (G * p).sum(-1, keepdims=True))}


def ref_log_softmax(a, G):
    z = a["z"]
    return z - np_logsumexp(z)[:, None], {"z": G - np_softmax(z) * G.sum(-1, keepdims=True)}


def ref_logsumexp(a, G):
    return np_logsumexp(a["z"]), {"z": G[:, None] * np_softmax(a["z"])}


def ref_bce(a, G):
    z, t = a["z"], a["t"]
    B = len(z)
    return np.mean(np_softplus(z) - t * z), {"z": G * (np_sigmoid(z) - t) / B, "t": -G * z / B}


def ref_cce(a, G):
    z, t = a["z"], a["t"]
    B, lse = len(z), np_logsumexp(z)
    L = np.sum(t * (lse[:, None] - z)) / B
    return L, {"z": G * (t.sum(-1, keepdims=True) * np_softmax(z) - t) / B, "t": G * (lse[:, None] - z) / B}


def ref_sparse(a, G):
    z, t = a["z"], a["t"]
    B = len(z)
    onehot = np.eye(z.shape[1])[t]
    return np.mean(np_logsumexp(z) - z[np.arange(B), t]), {"z": G * (np_softmax(z) - onehot) / B}


# name: (reference, naive builder, rules the pass applies)
CASES = {
    "softmax": (ref_softmax, activations.softmax, ["max-shift"]),
    "log_softmax": (ref_log_softmax, activations.log_softmax, ["log-softmax", "max-shift"]),
    "logsumexp": (ref_logsumexp, activations.logsumexp, ["logsumexp"]),
    "binary_crossentropy_logits": (ref_bce, losses.binary_crossentropy_logits, ["log-sigmoid"]),
    "categorical_crossentropy_logits": (ref_cce, losses.categorical_crossentropy_logits,
                                        ["log-softmax", "max-shift"]),
    "sparse_categorical_crossentropy_logits": (ref_sparse, losses.sparse_categorical_crossentropy_logits,
                                               ["log-softmax", "max-shift"]),
}
Bn, C = 4, 5


def logits(rng, scale, dtype, shape):
    """Rows of every kind at magnitude `scale`: all huge and close (a softmax that is not one-hot),
    large of both signs, one huge entry among moderate ones, moderate."""
    if len(shape) == 1:
        return (scale * np.array([1, -1, 0.5, -0.02]) + rng.standard_normal(4)).astype(dtype)
    z = rng.standard_normal(shape)
    z[0] += scale
    z[1] = rng.choice([-1, 1], shape[1]) * rng.uniform(min(88.0, scale / 2), scale, shape[1])
    z[2, 0] = -scale
    z[3, 1] = scale
    return z.astype(dtype)


def inputs(name, rng, scale=1e4, dtype=np.float64):
    if name == "binary_crossentropy_logits":
        return {"z": logits(rng, scale, dtype, (Bn,)), "t": rng.uniform(0, 1, Bn).astype(dtype)}
    z = logits(rng, scale, dtype, (Bn, C))
    if name == "categorical_crossentropy_logits":
        return {"z": z, "t": np.eye(C, dtype=dtype)[rng.integers(0, C, Bn)]}
    if name == "sparse_categorical_crossentropy_logits":
        return {"z": z, "t": rng.integers(0, C, Bn)}
    return {"z": z}


def upstream(name, rng, dtype):
    shape = {"softmax": (Bn, C), "log_softmax": (Bn, C), "logsumexp": (Bn,)}.get(name, ())
    return rng.standard_normal(shape).astype(dtype) if shape else 1.3


# -- the stabilized catalog entries at extreme inputs ----------------------------------------------


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e4), (np.float32, 1e4), (np.float32, 100.0)])
@pytest.mark.parametrize("name", list(CASES))
def test_extreme_logits_are_finite_and_match_numpy(name, dtype, scale):
    rng = np.random.default_rng(0)
    a = inputs(name, rng, scale, dtype)
    G = upstream(name, rng, dtype)
    pk = formulas.get(name).compile()
    value, grads = pk.value_and_grad(G, **a)
    want, want_grads = CASES[name][0]({k: v.astype(np.float64) if v.dtype.kind == "f" else v
                                       for k, v in a.items()}, np.float64(G) if np.ndim(G) == 0 else
                                      G.astype(np.float64))
    assert np.all(np.isfinite(value))
    # float32: the inputs are exact, every result is within a few ulps of its largest term
    rtol, atol = (1e-12, 1e-12) if dtype == np.float64 else (1e-5, 4e-7)
    np.testing.assert_allclose(value, want, rtol=rtol, atol=atol * max(1.0, np.abs(want).max()))
    assert set(grads) == set(want_grads)
    for k, g in grads.items():
        assert g.dtype == dtype and np.all(np.isfinite(g)), k
        np.testing.assert_allclose(g, want_grads[k], rtol=rtol, atol=atol * max(1.0, np.abs(want_grads[k]).max()),
                                   err_msg=k)


def test_fused_cross_entropy_gradients_are_p_minus_onehot_over_B():
    """On one-hot rows both fused losses give exactly the classic (softmax(z) - onehot) / B."""
    rng = np.random.default_rng(1)
    z = logits(rng, 1e4, np.float64, (Bn, C))
    t = rng.integers(0, C, Bn)
    want = (np_softmax(z) - np.eye(C)[t]) / Bn
    sparse = formulas.get("sparse_categorical_crossentropy_logits").compile().vjp(1.0, z=z, t=t)["z"]
    dense = formulas.get("categorical_crossentropy_logits").compile().vjp(1.0, z=z, t=np.eye(C)[t])["z"]
    np.testing.assert_allclose(sparse, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dense, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_finite_differences_of_the_reference(name):
    rng = np.random.default_rng(2)
    a = inputs(name, rng, scale=3.0)
    G = upstream(name, rng, np.float64)
    got = formulas.get(name).compile().vjp(G, **a)
    ref = CASES[name][0]
    for k, g in got.items():
        d = rng.standard_normal(np.shape(a[k]))
        eps = 1e-6
        plus, minus = ref({**a, k: a[k] + eps * d}, G)[0], ref({**a, k: a[k] - eps * d}, G)[0]
        fd = np.sum((plus - minus) * G) / (2 * eps)
        assert abs(np.sum(g * d) - fd) <= 1e-6 * max(1.0, abs(fd)), k


# -- the naive forms do overflow (so the tests above can fail) -------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_naive_forms_overflow(name):
    rng = np.random.default_rng(3)
    for dtype, scale in ((np.float32, 100.0), (np.float64, 1e4)):
        a = inputs(name, rng, scale, dtype)
        kern = CASES[name][1]().compile()  # a Kernel (logsumexp) or a ProgramKernel
        with np.errstate(all="ignore"):
            value, grads = kern(**a), kern.vjp(upstream(name, rng, dtype), **a)
        assert not (np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads.values())), dtype


def test_naive_softmax_gradient_breaks_below_the_forward_overflow():
    """Scores of 60 in float32: exp is finite, but the derived gradient squares the row sum."""
    z = np.array([[60.0, 59.0, 0.0]], dtype=np.float32)
    G = np.array([[1.0, -1.0, 0.5]], dtype=np.float32)
    want = ref_softmax({"z": z.astype(np.float64)}, G.astype(np.float64))[1]["z"]
    with np.errstate(all="ignore"):
        naive = activations.softmax().compile().vjp(G, z=z)["z"]
    stable = formulas.get("softmax").compile().vjp(G, z=z)["z"]
    assert not np.allclose(naive, want, atol=1e-3)
    np.testing.assert_allclose(stable, want, rtol=1e-5, atol=1e-6)


# -- the pass: records, purity, rules ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_catalog_entries_record_their_rewrites(name):
    entry = formulas.get(name)
    assert [r.rule for r in entry.stability.rewrites] == CASES[name][2]
    assert entry.stability.original.stability is None  # the naive entry was not made by stabilize


def test_other_catalog_entries_that_needed_it_are_stabilized():
    for name in ("dense_softmax", "additive_attention", "dot_product_attention", "dot_product_attention_causal",
                 "multi_head_attention", "multi_head_attention_causal"):
        assert [r.rule for r in formulas.get(name).stability.rewrites] == ["max-shift"], name
    for name in ("gan_discriminator_loss", "gan_generator_loss", "autoencoder_bce", "binary_crossentropy",
                 "dense_relu"):  # written stably already (softplus on logits), or nothing to do
        assert getattr(formulas.get(name), "stability", None) is None, name


def test_stabilize_is_pure():
    naive = activations.log_softmax()
    bodies = [f.body for f in naive.formulas]
    stable = stabilize(naive)
    assert stable is not naive and stable.stability.original is naive
    assert [f.body for f in naive.formulas] == bodies and naive.stability is None
    assert stable.outputs == naive.outputs and set(stable.input_names) == set(naive.input_names)
    plain = symdl.formulas.dense.linear()
    assert stabilize(plain) is plain  # nothing to rewrite: the same object back
    with pytest.raises(AttributeError, match="immutable"):
        stable.stability = None  # the record lives in passes/stability.py, keyed by stable.key()


N = sp.Symbol("N", integer=True, positive=True)
i = sp.Idx("i", N)
x, y, a = sp.IndexedBase("x"), sp.IndexedBase("y"), sp.IndexedBase("a")


@pytest.mark.parametrize("naive,stable", [
    (sp.log(sigmoid(x[i])), -softplus(-x[i])),
    (sp.log(1 - sigmoid(x[i])), -softplus(x[i])),
    (sp.log(1 + sp.exp(x[i])), softplus(x[i])),
    (1 / (1 + sp.exp(-x[i])), sigmoid(x[i])),
])
def test_sigmoid_and_softplus_rules(naive, stable):
    f = Formula(sp.Eq(y[i], naive), name="f")
    got = stabilize(f)
    assert isinstance(got, Formula) and got.body == Formula(sp.Eq(y[i], stable), name="f").body
    assert symdl.verify.equivalent(f, got, sizes={N: 2}) > 0
    big = {"x": np.array([-1e4, -100.0, 0.5, 100.0, 1e4])}
    assert np.all(np.isfinite(got.compile()(**big))) and np.all(np.isfinite(got.compile().vjp(np.ones(5), **big)["x"]))


def test_naive_gan_loss_becomes_the_catalog_softplus_form():
    """-mean log D(G(z)) = -mean log σ(a) is rewritten to mean softplus(-a), the GAN entries' form."""
    L = sp.Symbol("L")
    naive = Formula(sp.Eq(L, -sp.Sum(sp.log(sigmoid(a[i])), i) / N), name="gen_loss")
    written = Formula(sp.Eq(L, sp.Sum(softplus(-a[i]), i) / N), name="gen_loss")
    got = stabilize(naive)
    assert not got.body.has(sp.log, sigmoid) and got.body.atoms(softplus) == written.body.atoms(softplus)
    assert symdl.verify.equivalent(naive, written, sizes={N: 3}) > 0


def test_bce_on_logits_is_softplus_minus_t_z():
    f = formulas.get("binary_crossentropy_logits").formulas[-1]
    assert f.body.has(softplus) and not f.body.has(sp.log) and not f.body.has(sigmoid)
    z, t = (sp.IndexedBase(n, real=True) for n in "zt")
    b = sp.Symbol("b", integer=True)
    (total,) = f.body.atoms(sp.Sum)  # L = -Σ_b (t z - softplus(z)) / B
    assert sp.expand(f.body + total / sp.Symbol("B", integer=True, positive=True)) == 0
    assert sp.expand(total.function - (t[b] * z[b] - softplus(z[b]))) == 0


# -- the verifier ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "sparse_categorical_crossentropy_logits",
                                  "dot_product_attention_causal"])
def test_verifier_proves_the_rewrites(name):
    assert rewrites_hold(formulas.get(name)) > 0


def test_verifier_rejects_a_wrong_rewrite():
    """log-sum-exp with the max subtracted but not added back: the verifier names the output."""
    naive = activations.logsumexp()
    stable = stabilize(naive)
    mx, good = stable.formulas
    wrong = Formula.from_parts(good.name, good.output.name, good.indices, good.ranges,
                               good.body - sp.IndexedBase(mx.output.name)[good.indices], {}, set())
    with pytest.raises(AssertionError, match=r"differ at y\["):
        symdl.verify.equivalent(naive, Program([mx, wrong], name="wrong"), sizes={"B": 1, "N": 2})
    assert symdl.verify.equivalent(naive, stable, sizes={"B": 1, "N": 2}) > 0


def test_exact_zero_knows_the_identities_and_no_more():
    u, v = sp.symbols("u v", real=True)
    assert exact_zero(sp.log(sigmoid(u)) + softplus(-u))
    assert exact_zero(softplus(-u) - softplus(u) + u)
    assert exact_zero(sp.log(sp.exp(u) + sp.exp(v)) - v - sp.log(sp.exp(u - v) + 1))
    assert not exact_zero(sp.log(sigmoid(u)) + softplus(u))
    assert not exact_zero(sp.log(sp.exp(u) + sp.exp(v)) - u - sp.log(sp.exp(u - v) + 1))


def test_show_lists_the_rewrites(capsys):
    assert main(["show", "logsumexp"]) == 0
    out = capsys.readouterr().out
    assert "stability rewrites" in out and "logsumexp: logsumexp -> y_max.max, logsumexp" in out
