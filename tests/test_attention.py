"""F7 additive and F8 dot-product attention against NumPy: forward, hand-derived backprop, finite
differences, the causal mask (exact zeros), large inputs, and the gradient programs' loop cost."""
import numpy as np
import pytest

from symdl import formulas
from symdl.formulas.attention import additive_attention, dot_product_attention
from symdl.loops import lower, trip_count
from symdl.runtime import ProgramKernel

# -- NumPy references -------------------------------------------------------------------------------


def np_softmax(sc, mask=None):
    if mask is not None:
        sc = np.where(mask, sc, -np.inf)
    e = np.exp(sc - sc.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_mha(x, Wq, Wk, Wv, Wo, causal, G=None):
    """Multi-head self-attention (Wq [E, H, D], Wo [H, D, E]): y, and the input gradients for G."""
    D = Wq.shape[-1]
    q, k, v = (np.einsum("bse,ehd->bhsd", x, w) for w in (Wq, Wk, Wv))
    sc = np.einsum("bhtd,bhsd->bhts", q, k) / np.sqrt(D)
    S = x.shape[1]
    A = np_softmax(sc, np.tril(np.ones((S, S), bool)) if causal else None)
    o = np.einsum("bhts,bhsd->bthd", A, v)
    y = np.einsum("bthd,hde->bte", o, Wo)
    if G is None:
        return y, A
    go = np.einsum("bte,hde->bthd", G, Wo)
    gA = np.einsum("bthd,bhsd->bhts", go, v)
    gv = np.einsum("bhts,bthd->bhsd", A, go)
    gsc = A * (gA - (gA * A).sum(-1, keepdims=True)) / np.sqrt(D)
    gq = np.einsum("bhts,bhsd->bhtd", gsc, k)
    gk = np.einsum("bhts,bhtd->bhsd", gsc, q)
    grads = {"Wo": np.einsum("bthd,bte->hde", o, G), "x": 0}
    for name, g, w in (("Wq", gq, Wq), ("Wk", gk, Wk), ("Wv", gv, Wv)):
        grads[name] = np.einsum("bse,bhsd->ehd", x, g)
        grads["x"] = grads["x"] + np.einsum("bhsd,ehd->bse", g, w)
    return y, A, grads


def np_single(x, Wq, Wk, Wv, Wo, causal, G=None):
    """One head: Wq/Wk/Wv [E, D], Wo [D, E], as multi-head with H = 1."""
    out = np_mha(x, Wq[:, None], Wk[:, None], Wv[:, None], Wo[None], causal, G)
    if G is None:
        return out[0], out[1][:, 0]
    y, A, g = out
    return y, A[:, 0], {"x": g["x"], "Wo": g["Wo"][0], **{n: g[n][:, 0] for n in ("Wq", "Wk", "Wv")}}


def np_additive(Q, H, W, R, bias, v, G=None):
    act = np.tanh((Q @ W)[:, :, None, :] + (H @ R)[:, None, :, :] + bias)
    A = np_softmax(act @ v)
    c = np.einsum("bts,bsd->btd", A, H)
    if G is None:
        return c, A
    gA = np.einsum("btd,bsd->bts", G, H)
    ge = A * (gA - (gA * A).sum(-1, keepdims=True))
    gpre = ge[..., None] * v * (1 - act ** 2)
    gq, gh = gpre.sum(2), gpre.sum(1)
    return c, A, {"Q": gq @ W.T, "W": np.einsum("btd,btu->du", Q, gq), "R": np.einsum("bsd,bsu->du", H, gh),
                  "H": np.einsum("bts,btd->bsd", A, G) + gh @ R.T, "bias": gpre.sum((0, 1, 2)),
                  "v": np.einsum("bts,btsu->u", ge, act)}


# -- inputs ---------------------------------------------------------------------------------------

B, S, E, D, NH = 2, 5, 4, 3, 2


def dot_inputs(heads: bool, rng, scale=1.0):
    wshape = (E, NH, D) if heads else (E, D)
    return {"x": scale * rng.standard_normal((B, S, E)),
            **{n: rng.standard_normal(wshape) / np.sqrt(E) for n in ("Wq", "Wk", "Wv")},
            "Wo": rng.standard_normal((NH, D, E) if heads else (D, E)) / np.sqrt(D)}


def additive_inputs(rng, T=3, S=4, Dm=3, U=5):
    return {"Q": rng.standard_normal((B, T, Dm)), "H": rng.standard_normal((B, S, Dm)),
            "W": rng.standard_normal((Dm, U)), "R": rng.standard_normal((Dm, U)),
            "bias": rng.standard_normal(U), "v": rng.standard_normal(U)}


def reference(heads):
    return np_mha if heads else np_single


CASES = [(False, False), (False, True), (True, False), (True, True)]


def entry_name(heads, causal):
    return ("multi_head_attention" if heads else "dot_product_attention") + ("_causal" if causal else "")


# -- forward and gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("heads,causal", CASES)
def test_dot_product_attention_matches_numpy(heads, causal):
    rng = np.random.default_rng(1)
    inputs = dot_inputs(heads, rng)
    pk = formulas.get(entry_name(heads, causal)).compile()
    env = pk.run(**inputs)
    G = rng.standard_normal((B, S, E))
    y, A, grads = reference(heads)(**inputs, causal=causal, G=G)
    np.testing.assert_allclose(env["y"], y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(env["A"], A, rtol=1e-10, atol=1e-12)
    got = pk.vjp(G, **inputs)
    assert set(got) == set(grads)
    for name, want in grads.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("heads,causal", [(False, True), (True, False)])
def test_dot_product_attention_gradients_match_finite_differences(heads, causal):
    """The NumPy backprop above is itself checked: <vjp, dir> against central differences of the
    NumPy forward, for each input."""
    rng = np.random.default_rng(2)
    inputs = dot_inputs(heads, rng)
    G = rng.standard_normal((B, S, E))
    got = formulas.get(entry_name(heads, causal)).compile().vjp(G, **inputs)
    f = reference(heads)
    for name in inputs:
        direction = rng.standard_normal(inputs[name].shape)
        eps = 1e-6
        plus = f(**{**inputs, name: inputs[name] + eps * direction}, causal=causal)[0]
        minus = f(**{**inputs, name: inputs[name] - eps * direction}, causal=causal)[0]
        fd = np.sum((plus - minus) * G) / (2 * eps)
        assert abs(np.sum(got[name] * direction) - fd) <= 1e-6 * max(1.0, abs(fd)), name


def test_additive_attention_matches_numpy_and_finite_differences():
    rng = np.random.default_rng(3)
    inputs = additive_inputs(rng)
    pk = formulas.get("additive_attention").compile()
    env = pk.run(**inputs)
    G = rng.standard_normal(env["c"].shape)
    c, A, grads = np_additive(**inputs, G=G)
    np.testing.assert_allclose(env["c"], c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(env["A"], A, rtol=1e-10, atol=1e-12)
    got = pk.vjp(G, **inputs)
    for name, want in grads.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-9, atol=1e-11, err_msg=name)
        direction = rng.standard_normal(np.shape(inputs[name]))
        eps = 1e-6
        fd = np.sum((np_additive(**{**inputs, name: inputs[name] + eps * direction})[0]
                     - np_additive(**{**inputs, name: inputs[name] - eps * direction})[0]) * G) / (2 * eps)
        assert abs(np.sum(want * direction) - fd) <= 1e-6 * max(1.0, abs(fd)), name


def test_builders_take_tensor_names():
    prog = dot_product_attention(heads=True, x="tokens", Wq="q_w", Wk="k_w", Wv="v_w", Wo="o_w", out="att",
                                 weights="probs", name="mine")
    assert prog.name == "mine" and prog.outputs == ("att",)
    assert set(prog.input_names) == {"tokens", "q_w", "k_w", "v_w", "o_w"}
    assert "probs" in {f.output.name for f in prog.formulas}
    add = additive_attention(Q="dec", H="enc", out="ctx")
    assert add.outputs == ("ctx",) and {"dec", "enc"} <= set(add.input_names)


# -- the causal mask ------------------------------------------------------------------------------


@pytest.mark.parametrize("heads", [False, True])
def test_masked_weights_and_their_gradients_are_exactly_zero(heads):
    rng = np.random.default_rng(4)
    inputs = dot_inputs(heads, rng)
    prog = formulas.get(entry_name(heads, True))
    masked = np.triu(np.ones((S, S), bool), k=1)  # s > t
    A = prog.compile().run(**inputs)["A"]
    assert np.all(A[..., masked] == 0.0)
    assert np.all(A[..., ~masked] > 0.0)
    # the score gradient at a masked position is exactly 0, whatever the upstream gradient
    env = ProgramKernel(prog.vjp()).run(**inputs, grad_y=rng.standard_normal((B, S, E)))
    assert np.all(env["grad_y_score"][..., masked] == 0.0)
    # causality: y at position t0 does not depend on x at any later position, exactly
    t0 = 2
    G = np.zeros((B, S, E))
    G[:, t0] = rng.standard_normal((B, E))
    gx = prog.compile().vjp(G, **inputs)["x"]
    assert np.all(gx[:, t0 + 1:] == 0.0)
    assert np.all(np.abs(gx[:, :t0 + 1]) > 0.0)


def test_masked_scores_that_would_overflow_stay_out_of_the_softmax():
    """x chosen so that every masked score is 1000 (exp overflows) while the unmasked ones are
    small: the masked exponentials are never formed, so everything stays finite."""
    Sl = 4
    x = np.zeros((1, Sl, 2))
    x[0, 0, 0] = 100.0  # query of position 0 is large ...
    x[0, 1:, 1] = 10.0  # ... and keys of later positions too: q_0 · k_s = 1000 for s > 0
    x[0, 1:, 0] = 0.1
    inputs = {"x": x, "Wq": np.array([[1.0], [0.0]]), "Wk": np.array([[0.0], [1.0]]),
              "Wv": np.array([[1.0], [1.0]]), "Wo": np.array([[1.0, -1.0]])}
    pk = formulas.get("dot_product_attention_causal").compile()
    env = pk.run(**inputs)
    assert env["y_score"][0, 0, 1] == 1000.0
    G = np.ones((1, Sl, 2))
    y, A, grads = np_single(**inputs, causal=True, G=G)
    np.testing.assert_allclose(env["A"], A, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(env["y"], y, rtol=1e-12)
    got = pk.vjp(G, **inputs)
    for name, want in grads.items():
        assert np.all(np.isfinite(got[name])), name
        np.testing.assert_allclose(got[name], want, rtol=1e-9, atol=1e-12, err_msg=name)


# -- large inputs ----------------------------------------------------------------------------------


def scaled_to(inputs, heads, top):
    """The inputs with x rescaled so that the largest |score| is `top` (scores are quadratic in x)."""
    sc = np.einsum("bthd,bshd->bhts", *(np.einsum("bse,e...d->bs...d", inputs["x"], inputs[w]).reshape(
        B, S, -1, D) for w in ("Wq", "Wk"))) / np.sqrt(D)
    return {**inputs, "x": inputs["x"] * np.sqrt(top / np.abs(sc).max())}


@pytest.mark.parametrize("heads,causal", [(False, True), (True, False)])
def test_large_scores_stay_finite_in_float64(heads, causal):
    """Scores up to 300 (nearly one-hot rows, exponentials near 1e130): finite and as NumPy's."""
    rng = np.random.default_rng(5)
    inputs = scaled_to(dot_inputs(heads, rng), heads, 300.0)
    pk = formulas.get(entry_name(heads, causal)).compile()
    env = pk.run(**inputs)
    assert np.isclose(np.abs(env["y_score"]).max(), 300.0)
    G = rng.standard_normal((B, S, E))
    y, A, grads = reference(heads)(**inputs, causal=causal, G=G)
    np.testing.assert_allclose(env["A"], A, rtol=1e-8, atol=1e-300)
    got = pk.vjp(G, **inputs)
    for name, want in grads.items():
        assert np.all(np.isfinite(got[name])), name
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-9 * np.abs(want).max(), err_msg=name)


def test_plain_softmax_gradient_in_float32_at_scores_of_60():
    """The plain form's derived gradient squares the row sum (overflow past scores of ~44 in
    float32); the catalog entry is stabilized (row max subtracted), so this holds."""
    rng = np.random.default_rng(8)
    inputs = {k: v.astype(np.float32) for k, v in scaled_to(dot_inputs(False, rng), False, 60.0).items()}
    G = rng.standard_normal((B, S, E))
    grads = np_single(**{k: v.astype(np.float64) for k, v in inputs.items()}, causal=False, G=G)[2]
    got = formulas.get("dot_product_attention").compile().vjp(G.astype(np.float32), **inputs)
    np.testing.assert_allclose(got["x"], grads["x"], rtol=2e-3, atol=2e-3 * np.abs(grads["x"]).max())


@pytest.mark.parametrize("heads,causal", [(False, True), (True, False), (True, True)])
def test_stable_softmax_handles_scores_beyond_exp_range(heads, causal):
    """`stable=True` subtracts the row maximum. Every position shares a large component, so scores
    are in the thousands (exp overflows, even in float64) while each row varies by O(1): the
    weights are not one-hot and the gradients are not vanishingly small. Float32 throughout."""
    rng = np.random.default_rng(6)
    inputs = dot_inputs(heads, rng)
    inputs["x"] = 40.0 * rng.standard_normal((B, 1, E)) + 0.2 * inputs["x"]
    x32 = {k: v.astype(np.float32) for k, v in inputs.items()}
    pk = dot_product_attention(heads=heads, causal=causal, stable=True).compile()
    env = pk.run(**x32)
    assert np.abs(env["y_score"]).max() > 1000
    G = rng.standard_normal((B, S, E))
    y, A, grads = reference(heads)(**{k: v.astype(np.float64) for k, v in x32.items()}, causal=causal, G=G)
    assert (A.max(axis=-1) < 0.95).any()  # not every row is one-hot
    np.testing.assert_allclose(env["A"], A, atol=2e-3)
    got = pk.vjp(G.astype(np.float32), **x32)
    for name, want in grads.items():
        assert np.all(np.isfinite(got[name])), name
        np.testing.assert_allclose(got[name], want, rtol=0, atol=2e-2 * np.abs(want).max(), err_msg=name)


def test_stable_additive_attention_matches_the_plain_one():
    rng = np.random.default_rng(7)
    inputs = additive_inputs(rng)
    G = rng.standard_normal((B, 3, 3))
    plain = formulas.get("additive_attention").compile()
    stable = additive_attention(stable=True).compile()
    np.testing.assert_allclose(stable(**inputs), plain(**inputs), rtol=1e-12)
    want, got = plain.vjp(G, **inputs), stable.vjp(G, **inputs)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)


# -- cost: the gradient program keeps the forward program's asymptotic cost ------------------------


def trips(prog, dims) -> list:
    return [trip_count(lower(f), dims) for f in prog.formulas]


def growth_check(prog):
    grad = prog.vjp()
    n = len(prog.formulas)
    ratios, growth = [], []
    sizes = ({"B": 2, "S": 16, "T": 16, "D": 4, "U": 4, "E": 8, "NH": 2},
             {"B": 2, "S": 32, "T": 32, "D": 4, "U": 4, "E": 8, "NH": 2})
    for dims in sizes:
        forward, backward = trips(prog, dims), trips(grad, dims)[n:]
        ratios.append(sum(backward) / sum(forward))
        growth.append((forward, backward))
    (f16, b16), (f32, b32) = growth
    fastest = max(hi / lo for lo, hi in zip(f16, f32, strict=True))
    for f, lo, hi in zip(grad.formulas[n:], b16, b32, strict=True):  # none grows faster than the forward
        assert hi / lo <= 1.05 * fastest, (f.name, lo, hi, fastest)
    return ratios


@pytest.mark.parametrize("name", ["additive_attention", "dot_product_attention",
                                  "dot_product_attention_causal", "multi_head_attention",
                                  "multi_head_attention_causal"])
def test_gradient_trips_stay_within_a_constant_of_the_forward(name):
    ratios = growth_check(formulas.get(name))
    assert max(ratios) <= 4, ratios


@pytest.mark.parametrize("heads", [False, True])
def test_stable_gradient_trips_stay_within_a_constant_of_the_forward(heads):
    assert max(growth_check(dot_product_attention(heads=heads, stable=True))) <= 4


def test_stable_causal_gradient_trips():
    assert max(growth_check(dot_product_attention(causal=True, stable=True))) <= 4
