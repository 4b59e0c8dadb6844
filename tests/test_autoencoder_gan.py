"""F9 autoencoder and F10 GAN against NumPy: forward, hand-derived backprop checked by finite
differences, losses on logits that stay finite where the probabilities round to 0 or 1."""
import numpy as np
import pytest

from symdl import formulas
from symdl.formulas.autoencoder import autoencoder
from symdl.formulas.gan import discriminator_loss, generator

# -- NumPy references -------------------------------------------------------------------------------


def sig(a):
    return 0.5 * (1 + np.tanh(a / 2))  # no overflow warning for large |a|


def softplus(a):
    return np.logaddexp(0.0, a)


def np_autoencoder(x, loss, G=None, **p):
    """Forward (xhat, loss) through len(p) // 2 sigmoid layers and, given G = dloss, the gradients."""
    n = len(p) // 2
    acts, zs = [x], []
    for i in range(1, n + 1):
        zs.append(acts[-1] @ p[f"W{i}"] + p[f"b{i}"])
        acts.append(sig(zs[-1]))
    xhat, z = acts[-1], zs[-1]
    if loss == "mse":
        L = np.mean((xhat - x) ** 2)
        gz = 2 * (xhat - x) / x.size * xhat * (1 - xhat)
        gx = -2 * (xhat - x) / x.size
    else:
        L = np.mean(x * softplus(-z) + (1 - x) * softplus(z))
        gz = (sig(z) - x) / x.size
        gx = (softplus(-z) - softplus(z)) / x.size
    if G is None:
        return xhat, L
    grads = {}
    for i in range(n, 0, -1):
        gz = gz * G if i == n else gz
        grads[f"W{i}"], grads[f"b{i}"] = acts[i - 1].T @ gz, gz.sum(0)
        ga = gz @ p[f"W{i}"].T
        if i > 1:
            gz = ga * acts[i - 1] * (1 - acts[i - 1])
    grads["x"] = gx * G + ga
    return xhat, L, grads


def np_gan(x, z, W_G, b_G, W_D, b_D, G=None):
    """(L_D, L_G) and, given G, the gradients of L_D."""
    fake = np.tanh(z @ W_G + b_G)
    a_real, a_fake = x @ W_D + b_D, fake @ W_D + b_D
    Bn = len(x)
    L_D = softplus(-a_real).mean() + softplus(a_fake).mean()
    L_G = softplus(-a_fake).mean()
    if G is None:
        return L_D, L_G
    g_real, g_fake = -G * sig(-a_real) / Bn, G * sig(a_fake) / Bn
    g_pre = np.outer(g_fake, W_D) * (1 - fake ** 2)
    return L_D, L_G, {"x": np.outer(g_real, W_D), "W_D": x.T @ g_real + fake.T @ g_fake,
                      "b_D": g_real.sum() + g_fake.sum(), "z": g_pre @ W_G.T, "W_G": z.T @ g_pre,
                      "b_G": g_pre.sum(0)}


def directional_fd(f, inputs, name, direction, eps=1e-6):
    plus = f(**{**inputs, name: inputs[name] + eps * direction})
    minus = f(**{**inputs, name: inputs[name] - eps * direction})
    return (plus - minus) / (2 * eps)


# -- autoencoder -------------------------------------------------------------------------------------

Bn, N, M, K = 4, 6, 3, 2


def ae_params(layers, rng, scale=1.0):
    widths = [N, M, K][:layers + 1] + [N]
    p = {}
    for i in range(1, len(widths)):
        p[f"W{i}"] = scale * rng.standard_normal((widths[i - 1], widths[i]))
        p[f"b{i}"] = scale * rng.standard_normal(widths[i])
    return p


@pytest.mark.parametrize("loss,layers", [("mse", 1), ("bce", 1), ("mse", 2), ("bce", 2)])
def test_autoencoder_matches_numpy(loss, layers):
    rng = np.random.default_rng(layers)
    x = rng.uniform(0, 1, (Bn, N))
    p = ae_params(layers, rng)
    pk = autoencoder(loss, layers=layers).compile()
    env = pk.run(x=x, **p)
    xhat, L, grads = np_autoencoder(x, loss, G=0.7, **p)
    np.testing.assert_allclose(env["xhat"], xhat, rtol=1e-12)
    np.testing.assert_allclose(env["L"], L, rtol=1e-12)
    got = pk.vjp(0.7, x=x, **p)
    assert set(got) == set(grads)
    for name, want in grads.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-10, atol=1e-14, err_msg=name)
        d = rng.standard_normal(np.shape(want))
        inputs = {"x": x, **p}
        fd = directional_fd(lambda **a: np_autoencoder(a.pop("x"), loss, **a)[1], inputs, name, d)
        assert abs(0.7 * fd - np.sum(want * d)) <= 1e-6 * max(1.0, abs(fd)), name


def test_catalog_autoencoders_are_the_builders():
    assert formulas.get("autoencoder_mse").outputs == ("L",)
    assert formulas.get("autoencoder_bce").domains["x"] == (0.0, 1.0)
    x = np.random.default_rng(0).uniform(0, 1, (Bn, N))
    p = ae_params(1, np.random.default_rng(1))
    xhat = formulas.get("autoencoder").compile()(x=x, **p)
    np.testing.assert_allclose(xhat, np_autoencoder(x, "mse", **p)[0], rtol=1e-12)


def test_bce_on_logits_is_finite_where_the_probabilities_saturate():
    """Decoder logits of ±hundreds: xhat rounds to exactly 1 where the target is 0, so the
    probability form of BCE is inf; the logit form gives the exact finite value and gradients."""
    rng = np.random.default_rng(3)
    x = (rng.uniform(0, 1, (Bn, N)) > 0.5).astype(float)
    p = ae_params(1, rng, scale=200.0)
    pk = formulas.get("autoencoder_bce").compile()
    env = pk.run(x=x, **p)
    with np.errstate(divide="ignore", invalid="ignore"):
        xh = env["xhat"]
        assert not np.isfinite(-np.mean(x * np.log(xh) + (1 - x) * np.log(1 - xh)))
    xhat, L, grads = np_autoencoder(x, "bce", G=1.0, **p)
    assert np.isfinite(env["L"]) and L > 10
    np.testing.assert_allclose(env["L"], L, rtol=1e-12)
    got = pk.vjp(1.0, x=x, **p)
    for name, want in grads.items():
        assert np.all(np.isfinite(got[name])), name
        np.testing.assert_allclose(got[name], want, rtol=1e-9, atol=1e-12, err_msg=name)


def test_autoencoder_learns_by_gradient_descent():
    rng = np.random.default_rng(4)
    x = (rng.uniform(0, 1, (16, N)) > 0.5).astype(float)
    p = ae_params(1, rng, scale=0.5)
    pk = formulas.get("autoencoder_bce").compile()
    first = float(pk(x=x, **p))
    for _ in range(300):
        g = pk.vjp(1.0, wrt=list(p), x=x, **p)
        p = {k: v - 2.0 * g[k] for k, v in p.items()}
    assert float(pk(x=x, **p)) < 0.7 * first


# -- GAN ----------------------------------------------------------------------------------------------

Z, Nd = 3, 4


def gan_inputs(rng, scale=1.0):
    return {"x": rng.uniform(-1, 1, (Bn, Nd)), "z": rng.standard_normal((Bn, Z)),
            "W_G": rng.standard_normal((Z, Nd)), "b_G": rng.standard_normal(Nd),
            "W_D": scale * rng.standard_normal(Nd), "b_D": float(scale * rng.standard_normal())}


def test_generator_and_discriminator_match_numpy():
    rng = np.random.default_rng(5)
    a = gan_inputs(rng)
    fake = formulas.get("gan_generator").compile()(z=a["z"], W_G=a["W_G"], b_G=a["b_G"])
    np.testing.assert_allclose(fake, np.tanh(a["z"] @ a["W_G"] + a["b_G"]), rtol=1e-12)
    d = formulas.get("gan_discriminator").compile()
    np.testing.assert_allclose(d(x=a["x"], W_D=a["W_D"], b_D=a["b_D"]), sig(a["x"] @ a["W_D"] + a["b_D"]),
                               rtol=1e-12)
    G = rng.standard_normal(Bn)
    got = d.vjp(G, x=a["x"], W_D=a["W_D"], b_D=a["b_D"])
    s = sig(a["x"] @ a["W_D"] + a["b_D"])
    ga = G * s * (1 - s)
    np.testing.assert_allclose(got["W_D"], a["x"].T @ ga, rtol=1e-12)
    np.testing.assert_allclose(got["b_D"], ga.sum(), rtol=1e-12)
    np.testing.assert_allclose(got["x"], np.outer(ga, a["W_D"]), rtol=1e-12)
    renamed = generator(z="noise", out="sample")
    assert set(renamed.input_names) == {"noise", "W_G", "b_G"} and renamed.outputs == ("sample",)


@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_gan_losses_match_numpy(scale):
    """At scale 300 the discriminator's logits are in the hundreds: D rounds to 0 or 1, the
    log-probability form would be inf or NaN, the softplus form stays exact."""
    rng = np.random.default_rng(6)
    a = gan_inputs(rng, scale)
    L_D, L_G, grads = np_gan(**a, G=1.3)
    dk = formulas.get("gan_discriminator_loss").compile()
    gk = formulas.get("gan_generator_loss").compile()
    gen_inputs = {k: v for k, v in a.items() if k != "x"}
    np.testing.assert_allclose(dk(**a), L_D, rtol=1e-12)
    np.testing.assert_allclose(gk(**gen_inputs), L_G, rtol=1e-12)
    got = dk.vjp(1.3, **a)
    for name, want in grads.items():
        assert np.all(np.isfinite(got[name])), name
        np.testing.assert_allclose(got[name], want, rtol=1e-10, atol=1e-12 * max(1, np.abs(want).max()),
                                   err_msg=name)
    if scale == 1.0:  # the NumPy backprop itself, against finite differences
        for name, want in grads.items():
            d = rng.standard_normal(np.shape(want))
            fd = directional_fd(lambda **k: np_gan(**k)[0], a, name, d)
            assert abs(1.3 * fd - np.sum(want * d)) <= 1e-6 * max(1.0, abs(fd)), name


def test_generator_loss_gradient_is_non_saturating():
    """With D confidently rejecting the fakes (a_fake << 0), -log D(G(z)) still has a gradient of
    order 1 for the generator, where log(1 - D(G(z))) would give ~exp(a_fake)."""
    rng = np.random.default_rng(7)
    a = gan_inputs(rng)
    a["b_D"] = -30.0
    gen_inputs = {k: v for k, v in a.items() if k != "x"}
    got = formulas.get("gan_generator_loss").compile().vjp(1.0, **gen_inputs)
    fake = np.tanh(a["z"] @ a["W_G"] + a["b_G"])
    a_fake = fake @ a["W_D"] + a["b_D"]
    g_pre = np.outer(-sig(-a_fake) / Bn, a["W_D"]) * (1 - fake ** 2)
    np.testing.assert_allclose(got["W_G"], a["z"].T @ g_pre, rtol=1e-10)
    assert np.abs(got["W_G"]).max() > 1e-2


def test_discriminator_loss_builder_takes_names():
    prog = discriminator_loss(x="real", z="noise", out="loss_d", name="d_loss")
    assert prog.outputs == ("loss_d",) and {"real", "noise", "W_D", "b_D"} <= set(prog.input_names)
