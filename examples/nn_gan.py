"""F10 of docs/catalog.md (generator G(z) = tanh(W_G z + b_G), discriminator D(x) = σ(W_D x + b_D),
adversarial losses) on a 2-D toy distribution: real samples are N(mu, sigma²) points, the
generator maps 2-D Gaussian noise to the plane.

The losses are the catalog's Programs on the discriminator's logits (`gan_discriminator_loss`:
mean softplus(-a_real) + mean softplus(a_fake); `gan_generator_loss`: the non-saturating mean
softplus(-a_fake)); their compiled gradient programs give every parameter's gradient in one run
each, and symdl.nn's optimizers update the four parameters (Adam for the generator, AdamW for
the discriminator: see --decay). The discriminator is linear (one logit),
so it can only tell the generator which way the means differ: the generated mean moves onto
the real one, while the spread stays whatever the generator drifts to.

    python examples/nn_gan.py [--steps 1500] [--batch 64]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from symdl import formulas, nn
from symdl.nn.layers import Variable

MU, SIGMA = np.array([0.5, -0.3], dtype=np.float32), np.float32(0.1)
LATENT = 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--decay", type=float, default=2.0,
                    help="AdamW weight decay on the discriminator (damps the adversarial cycling)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    glorot = nn.initializers.get("glorot_uniform")
    G = {"W_G": Variable("W_G", glorot((LATENT, 2), rng)), "b_G": Variable("b_G", np.zeros(2, np.float32))}
    D = {"W_D": Variable("W_D", glorot((2,), rng)), "b_D": Variable("b_D", np.zeros((), np.float32))}
    d_loss = formulas.get("gan_discriminator_loss").compile()
    g_loss = formulas.get("gan_generator_loss").compile()
    # a linear discriminator and its generator play a bilinear game: plain gradient steps circle
    # around the equilibrium; decaying W_D towards 0 turns the circles into a spiral inwards
    d_opt = nn.optimizers.AdamW(args.lr, weight_decay=args.decay, beta_1=0.5)
    g_opt = nn.optimizers.Adam(args.lr, beta_1=0.5)

    def params(*groups):  # the scalar b_D feeds the kernels as a float
        return {n: (float(v.value) if v.value.ndim == 0 else v.value) for g in groups for n, v in g.items()}

    def sample(n):
        real = (MU + SIGMA * rng.standard_normal((n, 2))).astype(np.float32)
        return real, rng.standard_normal((n, LATENT)).astype(np.float32)

    print(f"real data: mean {MU}, std {SIGMA}")
    z0 = sample(4096)[1]
    gap0 = float(np.linalg.norm(np.tanh(z0 @ G["W_G"].value + G["b_G"].value).mean(0) - MU))
    for step in range(args.steps + 1):
        x, z = sample(args.batch)
        ld, grads = d_loss.value_and_grad(1.0, wrt=list(D), x=x, z=z, **params(G, D))
        d_opt.apply(list(D.values()), [grads[n] for n in D])
        _, z = sample(args.batch)
        lg, grads = g_loss.value_and_grad(1.0, wrt=list(G), z=z, **params(G, D))
        g_opt.apply(list(G.values()), [grads[n] for n in G])
        if step % (args.steps // 10 or 1) == 0:
            fake = np.tanh(z @ G["W_G"].value + G["b_G"].value)
            print(f"step {step:5d}: L_D {float(ld):.4f}  L_G {float(lg):.4f}  generated mean "
                  f"{np.round(fake.mean(0), 3)} std {np.round(fake.std(0), 3)}")
    _, z = sample(4096)
    fake = np.tanh(z @ G["W_G"].value + G["b_G"].value)
    gap = float(np.linalg.norm(fake.mean(0) - MU))
    print(f"after {args.steps} steps: |generated mean - real mean| = {gap:.3f} (at the start: "
          f"{gap0:.3f}); L_D near 2 log 2 = {2 * np.log(2):.3f} means the discriminator "
          f"can no longer separate the means; {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
