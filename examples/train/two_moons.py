#!/usr/bin/env python3
"""Train a flow-matching velocity model on two moons and export examples/models/two_moons.onnx.

What it makes
-------------
`two_moons.onnx`: inputs x float32 [B,2], t float32 [B]; output v float32 [B,2].
Network: concat(x, sin/cos(pi 2^j t), j = 0..5) -> 256 -> 256 -> 256 -> 2, SiLU.
Trained by conditional flow matching on the OT path (alpha = t, sigma = 1 - t,
source N(0, I)); the exported weights are an exponential moving average.
Metadata: fmrt.scheduler = text of the built-in `ot` scheduler, fmrt.prediction = velocity.

The data (draw fresh samples with the same formula in any language)
-------------------------------------------------------------------
For each point: moon m ~ Bernoulli(1/2), angle th ~ U(0, pi), noise e ~ N(0, I_2):
    m = 0: p = (cos th, sin th)             + 0.07 e   (upper arc, centre (0, 0))
    m = 1: p = (1 - cos th, 0.5 - sin th)   + 0.07 e   (lower arc, centre (1, 0.5))
    x = ((p_x - 0.5) / 0.87, (p_y - 0.25) / 0.5)       (about zero mean, unit variance per axis)
`moons(n, rng)` below is that formula. Distance to the moons, `moon_distance`, is
measured in p coordinates (p = (0.87 x_1 + 0.5, 0.5 x_2 + 0.25)) to the nearer arc
(each a half circle of radius 1, endpoints included).

Checks printed at the end (Python; Rust tests can redo them on fmrt's samples)
------------------------------------------------------------------------------
2000 samples from N(0, I) (seed 123) integrated with the midpoint rule, 100 steps:
energy distance to 2000 fresh moons, next to the same statistic between two fresh
moon sets (the noise floor) and between N(0, I) and the moons (untrained reference);
fraction of samples within 0.21 (3 noise stds) of a moon; fraction on each moon.
Also ONNX Runtime vs PyTorch max abs diff.

How to run
----------
    python examples/train/two_moons.py        # about 1-2 minutes on 2 CPU cores
Deterministic (fixed seeds, CPU, 2 threads).
"""

import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from fm_common import (EMA, OT_FM, TimeFeatures, Timer, check_onnx, energy_distance,
                       export_onnx, mlp, ot_batch, sample_midpoint)

SEED = 0
STEPS = 12000
BATCH = 512
LR = 2e-3
EMA_DECAY = 0.999
NOISE = 0.07
SCALE = np.array([0.87, 0.5])
SHIFT = np.array([0.5, 0.25])

torch.set_num_threads(2)


def moons(n, rng, noise=NOISE):
    """Two interleaved half circles with Gaussian noise, standardised (see module doc).
    Returns (x [n,2] float32, moon index [n])."""
    m = rng.integers(0, 2, n)
    th = rng.uniform(0.0, np.pi, n)
    p = np.where(m[:, None] == 0,
                 np.stack([np.cos(th), np.sin(th)], 1),
                 np.stack([1.0 - np.cos(th), 0.5 - np.sin(th)], 1))
    p = p + noise * rng.standard_normal((n, 2))
    return ((p - SHIFT) / SCALE).astype(np.float32), m


def moon_distance(x):
    """Distance (in unscaled p coordinates) to each arc -> [n,2]."""
    p = np.asarray(x, np.float64) * SCALE + SHIFT

    def arc(q, upper):
        r = np.linalg.norm(q, axis=1)
        on_side = q[:, 1] >= 0 if upper else q[:, 1] <= 0
        ends = np.minimum(np.linalg.norm(q - [1.0, 0.0], axis=1),
                          np.linalg.norm(q + [1.0, 0.0], axis=1))
        return np.where(on_side, np.abs(r - 1.0), ends)

    return np.stack([arc(p, True), arc(p - [1.0, 0.5], False)], 1)


class VelocityMLP(nn.Module):
    def __init__(self, hidden=256, depth=3):
        super().__init__()
        self.time = TimeFeatures(6)
        self.net = mlp(2 + 12, hidden, depth, 2)

    def forward(self, x, t):
        return self.net(torch.cat([x, self.time(t)], dim=1))


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = VelocityMLP()
    ema = EMA(model, EMA_DECAY)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS, eta_min=LR * 0.02)

    losses = []
    with Timer() as tm:
        for step in range(STEPS):
            x1 = torch.from_numpy(moons(BATCH, rng)[0])
            xt, t, target = ot_batch(x1, gen)
            loss = ((model(xt, t) - target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update(model)
            losses.append(loss.item())
            if (step + 1) % 1000 == 0:
                print(f"step {step + 1:6d}  loss(mean of last 1000) {np.mean(losses[-1000:]):.4f}")
    final_loss = float(np.mean(losses[-1000:]))
    print(f"training: {STEPS} steps, batch {BATCH}, {tm.seconds:.1f} s, final loss {final_loss:.4f}")

    model.load_state_dict(ema.shadow)
    model.eval()

    # Exact held-out loss of the EMA model (fixed seed) for the record.
    g2 = torch.Generator().manual_seed(999)
    with torch.no_grad():
        x1 = torch.from_numpy(moons(20000, np.random.default_rng(999))[0])
        xt, t, target = ot_batch(x1, g2)
        eval_loss = ((model(xt, t) - target) ** 2).mean().item()
    print(f"held-out CFM loss of the exported (EMA) weights: {eval_loss:.4f}")

    # Sample quality.
    n = 2000
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(123))
    with Timer() as ts:
        xs = sample_midpoint(model, x0, 100).numpy()
    fresh_a = moons(n, np.random.default_rng(1))[0]
    fresh_b = moons(n, np.random.default_rng(2))[0]
    ed_model = energy_distance(xs, fresh_a)
    ed_floor = energy_distance(fresh_b, fresh_a)
    ed_gauss = energy_distance(x0.numpy(), fresh_a)
    d = moon_distance(xs)
    near = (d.min(1) <= 3 * NOISE).mean()
    near_fresh = (moon_distance(fresh_a).min(1) <= 3 * NOISE).mean()
    which = d.argmin(1)
    print(f"sampling 2000 x 100 midpoint steps: {ts.seconds:.1f} s")
    print(f"energy distance model vs fresh moons: {ed_model:.5f}   "
          f"(fresh vs fresh {ed_floor:.5f}, N(0,I) vs fresh {ed_gauss:.5f})")
    print(f"fraction within {3 * NOISE:.2f} of a moon: model {near:.4f}, fresh data {near_fresh:.4f}")
    print(f"fraction nearer moon 0 / moon 1: {np.mean(which == 0):.3f} / {np.mean(which == 1):.3f}")
    print(f"sample mean {xs.mean(0)}, std {xs.std(0)}; fresh mean {fresh_a.mean(0)}, std {fresh_a.std(0)}")

    # Export and verify.
    path = export_onnx(
        model, (torch.zeros(4, 2), torch.full((4,), 0.5)), "two_moons.onnx", ["x", "t"],
        {"fmrt.scheduler": OT_FM, "fmrt.prediction": "velocity"},
        "fmrt example: two-moons velocity model (OT path), trained by examples/train/two_moons.py")
    rng_c = np.random.default_rng(5)
    feeds = {"x": rng_c.standard_normal((257, 2)).astype(np.float32),
             "t": rng_c.uniform(0, 1, 257).astype(np.float32)}
    feeds["t"][:2] = [0.0, 1.0]
    print(f"{path}: onnxruntime vs torch max abs diff {check_onnx(model, path, feeds):.3e}")


if __name__ == "__main__":
    main()
