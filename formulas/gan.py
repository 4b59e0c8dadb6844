"""F10 GAN: generator G(z) = tanh(z W_G + b_G), discriminator D(x) = σ(Σ_n x[n] W_D[n] + b_D),
and the adversarial losses written on the discriminator's logits a = Σ_n x W_D + b_D:

    discriminator  L_D = -mean log D(x) - mean log(1 - D(G(z)))
                       = mean softplus(-a_real) + mean softplus(a_fake)
    generator      L_G = -mean log D(G(z)) = mean softplus(-a_fake)   (the non-saturating loss)

-log σ(a) = softplus(-a) and -log(1 - σ(a)) = softplus(a) stay finite where σ rounds to 0 or 1.
"""
import sympy as sp

from symdl.declare import Formula, Program, sigmoid, softplus

from . import entry
from .autoencoder import dense
from .common import B, N

Z = sp.Symbol("Z", integer=True, positive=True)  # latent width; N is the data width
_SIZES = {B: 2, Z: 2, N: 3}


def generator(z: str = "z", W: str = "W_G", b: str = "b_G", out: str = "G", sizes: dict | None = None,
              name: str = "gan_generator") -> Program:
    """out[i, j] = tanh(Σ_k z[i, k] W[k, j] + b[j]): latent z[B, Z] to a sample out[B, N]."""
    return Program(dense(z, W, b, out, Z, N, "tanh", sizes=sizes), name=name)


def logits(x: str = "x", W: str = "W_D", b: str = "b_D", out: str = "a") -> Formula:
    """out[i] = Σ_n x[i, n] W[n] + b: the discriminator's logit per sample (b a scalar)."""
    i, n = sp.Idx("i", B), sp.Idx("n", N)
    X, w = sp.IndexedBase(x), sp.IndexedBase(W)
    body = sp.Sum(X[i, n] * w[n], n) + sp.Symbol(b)
    return Formula(sp.Eq(sp.IndexedBase(out)[i], body), name=f"{out}.logit")


def discriminator(x: str = "x", W: str = "W_D", b: str = "b_D", out: str = "D", sizes: dict | None = None,
                  name: str = "gan_discriminator") -> Program:
    """out[i] = σ(Σ_n x[i, n] W[n] + b), the probability that x[i] is real."""
    i = sp.Idx("i", B)
    a = f"{out}_logit"
    prob = Formula(sp.Eq(sp.IndexedBase(out)[i], sigmoid(sp.IndexedBase(a)[i])), name=f"{out}.sigmoid",
                   sizes=sizes)
    return Program([logits(x, W, b, a), prob], name=name)


def _mean_softplus(a: str, sign: int) -> sp.Expr:
    i = sp.Idx("i", B)
    return sp.Sum(softplus(sign * sp.IndexedBase(a)[i]), i) / B


def discriminator_loss(x: str = "x", z: str = "z", W_G: str = "W_G", b_G: str = "b_G", W_D: str = "W_D",
                       b_D: str = "b_D", out: str = "L_D", sizes: dict | None = None,
                       name: str = "gan_discriminator_loss") -> Program:
    """out = mean softplus(-a(x)) + mean softplus(a(G(z))), the discriminator's cross-entropy on a
    batch of real samples x[B, N] and fakes G(z), z[B, Z]."""
    body = _mean_softplus("a_real", -1) + _mean_softplus("a_fake", 1)
    return Program([*generator(z, W_G, b_G, "G").formulas, logits(x, W_D, b_D, "a_real"),
                    logits("G", W_D, b_D, "a_fake"),
                    Formula(sp.Eq(sp.Symbol(out), body), name=f"{out}.bce", sizes=sizes)], name=name)


def generator_loss(z: str = "z", W_G: str = "W_G", b_G: str = "b_G", W_D: str = "W_D", b_D: str = "b_D",
                   out: str = "L_G", sizes: dict | None = None, name: str = "gan_generator_loss") -> Program:
    """out = mean softplus(-a(G(z))) = -mean log D(G(z)), the non-saturating generator loss."""
    loss = Formula(sp.Eq(sp.Symbol(out), _mean_softplus("a_fake", -1)), name=f"{out}.bce", sizes=sizes)
    return Program([*generator(z, W_G, b_G, "G").formulas, logits("G", W_D, b_D, "a_fake"), loss], name=name)


entry("gan_generator", "F10", "GAN generator G(z) = tanh(z W_G + b_G)")(lambda: generator(sizes=_SIZES))
entry("gan_discriminator", "F10", "GAN discriminator D(x) = σ(x W_D + b_D)")(
    lambda: discriminator(sizes=_SIZES))
entry("gan_discriminator_loss", "F10", "-mean log D(x) - mean log(1 - D(G(z))), on logits")(
    lambda: discriminator_loss(sizes=_SIZES))
entry("gan_generator_loss", "F10", "non-saturating -mean log D(G(z)), on logits")(
    lambda: generator_loss(sizes=_SIZES))
