#!/usr/bin/env python3
"""Train a class-conditional flow-matching model and export examples/models/conditional.onnx.

What it makes
-------------
`conditional.onnx`: inputs x float32 [B,2], t float32 [B], label int64 [B]; output
v float32 [B,2]. Labels 0, 1, 2 are the classes, 3 is the null (unconditional)
condition used for classifier-free guidance: during training each label is replaced
by 3 with probability 0.15. Network: concat(x, sin/cos(pi 2^j t) j = 0..5,
Embedding(4, 16)(label)) -> 128 -> 128 -> 128 -> 2, SiLU; exported weights are an
exponential moving average. OT path (alpha = t, sigma = 1 - t), source N(0, I).
Metadata: fmrt.scheduler = text of `ot`, fmrt.prediction = velocity,
fmrt.null_condition = 3.

The data
--------
Class k in {0, 1, 2} (equally likely) is an isotropic Gaussian blob with std 0.35
centred at c_k = 3 (cos(pi/2 + 2 pi k/3), sin(pi/2 + 2 pi k/3)):
    c_0 = (0, 3),  c_1 = (-2.598, -1.5),  c_2 = (2.598, -1.5)
Class k's REGION is the disc of radius 1.4 (4 stds) around c_k; the discs are far
apart (centres 5.196 apart). A fresh class-k point falls in its region with
probability 1 - exp(-8) = 0.99966. A looser test: the nearest centre is c_k.

Checks printed (Python; Rust tests can repeat them on fmrt's samples)
---------------------------------------------------------------------
For each class, 1000 samples (source seed 321, midpoint rule, 100 steps) with guidance
w = 0 (plain conditional) and w = 2 (u = (1+w) u(x,t,k) - w u(x,t,null)): fraction
in the class's region, mean and std. Unconditional sampling with label 3: fraction of
samples in each region. ONNX Runtime vs PyTorch max abs diff.

How to run
----------
    python examples/train/conditional.py      # about a minute on 2 CPU cores
Deterministic (fixed seeds, CPU, 2 threads).
"""

import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the repository

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from fm_common import (EMA, OT_FM, TimeFeatures, Timer, check_onnx, export_onnx, mlp,
                       ot_batch, sample_midpoint)

SEED = 0
STEPS = 6000
BATCH = 512
LR = 2e-3
EMA_DECAY = 0.999
N_CLASSES = 3
NULL = N_CLASSES  # label id of the null condition
P_DROP = 0.15
STD = 0.35
RADIUS = 3.0
REGION = 1.4
ANGLES = np.pi / 2 + 2 * np.pi * np.arange(N_CLASSES) / N_CLASSES
CENTERS = RADIUS * np.stack([np.cos(ANGLES), np.sin(ANGLES)], 1)

torch.set_num_threads(2)


def blobs(n, rng):
    """(x [n,2] float32, label [n] int64): class uniform in 0..2, x ~ N(c_label, STD^2 I)."""
    lab = rng.integers(0, N_CLASSES, n)
    x = CENTERS[lab] + STD * rng.standard_normal((n, 2))
    return x.astype(np.float32), lab.astype(np.int64)


def in_region(x, k):
    return np.linalg.norm(np.asarray(x, np.float64) - CENTERS[k], axis=1) <= REGION


class CondMLP(nn.Module):
    def __init__(self, hidden=128, depth=3, emb=16):
        super().__init__()
        self.time = TimeFeatures(6)
        self.emb = nn.Embedding(N_CLASSES + 1, emb)
        self.net = mlp(2 + 12 + emb, hidden, depth, 2)

    def forward(self, x, t, label):
        return self.net(torch.cat([x, self.time(t), self.emb(label)], dim=1))


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = CondMLP()
    ema = EMA(model, EMA_DECAY)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS, eta_min=LR * 0.02)

    losses = []
    with Timer() as tm:
        for step in range(STEPS):
            x1, lab = blobs(BATCH, rng)
            lab = np.where(rng.uniform(size=BATCH) < P_DROP, NULL, lab)
            xt, t, target = ot_batch(torch.from_numpy(x1), gen)
            loss = ((model(xt, t, torch.from_numpy(lab)) - target) ** 2).mean()
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

    n = 1000
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(321))
    for w in (0.0, 2.0):
        for k in range(N_CLASSES):
            lab_k = torch.full((n,), k, dtype=torch.int64)
            lab_0 = torch.full((n,), NULL, dtype=torch.int64)

            def field(x, t):
                u_c = model(x, t, lab_k)
                return u_c if w == 0 else (1 + w) * u_c - w * model(x, t, lab_0)

            xs = sample_midpoint(field, x0, 100).numpy()
            print(f"w={w:.0f} class {k}: in region {in_region(xs, k).mean():.4f}, "
                  f"nearest centre {np.mean(np.argmin(np.linalg.norm(xs[:, None] - CENTERS, axis=2), 1) == k):.4f}, "
                  f"mean {np.round(xs.mean(0), 3)} (target {np.round(CENTERS[k], 3)}), "
                  f"std {np.round(xs.std(0), 3)} (target {STD})")
    lab_0 = torch.full((n,), NULL, dtype=torch.int64)
    xs = sample_midpoint(lambda x, t: model(x, t, lab_0), x0, 100).numpy()
    fr = [in_region(xs, k).mean() for k in range(N_CLASSES)]
    print(f"unconditional (label {NULL}): fraction in regions 0/1/2 = "
          f"{fr[0]:.3f} / {fr[1]:.3f} / {fr[2]:.3f}, outside all {1 - sum(fr):.3f}")

    path = export_onnx(
        model, (torch.zeros(4, 2), torch.full((4,), 0.5), torch.zeros(4, dtype=torch.int64)),
        "conditional.onnx", ["x", "t", "label"],
        {"fmrt.scheduler": OT_FM, "fmrt.prediction": "velocity",
         "fmrt.null_condition": str(NULL)},
        "fmrt example: 3-class conditional velocity model (label 3 = null), "
        "trained by examples/train/conditional.py")
    rng_c = np.random.default_rng(5)
    feeds = {"x": (3 * rng_c.standard_normal((257, 2))).astype(np.float32),
             "t": rng_c.uniform(0, 1, 257).astype(np.float32),
             "label": rng_c.integers(0, N_CLASSES + 1, 257).astype(np.int64)}
    feeds["t"][:2] = [0.0, 1.0]
    print(f"{path}: onnxruntime vs torch max abs diff {check_onnx(model, path, feeds):.3e}")


if __name__ == "__main__":
    main()
