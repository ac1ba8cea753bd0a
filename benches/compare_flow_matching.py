#!/usr/bin/env python3
"""fmrt against Meta's `flow_matching` (PyTorch) on the same networks, in one run.

For each case the same torch module is built (fixed seed), exported to ONNX
with `torch.onnx.export` into a temporary folder, and then
- flow_matching 1.0.10 runs it in this process (`ODESolver.sample`,
  `ODESolver.compute_likelihood` with the exact divergence or Hutchinson's
  estimator), timed around the solver call, torch on 2 threads;
- the `fmrt` CLI (release build) runs the exported file, timed as a whole
  process (start-up, loading, deriving the tangent model included).
The same inputs go to both; the table gives medians of `--repeats` runs and
the ratio flow_matching / fmrt (above 1: fmrt is faster). Exact likelihoods
must agree to 1e-4 (relative to max(1, |log p|)); Hutchinson draws different
probes in each library, so only their mean difference is shown.

Needs `pip install torch flow-matching==1.0.10 torchdiffeq onnx tqdm` (several GB,
never needed by CI); without them it says so and exits with status 0.
Build fmrt first: `cargo build --release -p fmrt-cli`.

    python3 benches/compare_flow_matching.py [--repeats 3] [--only likelihood] [--skip 64-D]
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import numpy as np
    import torch
    from torch import nn
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper
    import onnx  # noqa: F401  (torch.onnx.export needs it)
    import tqdm  # noqa: F401  (flow_matching imports it)
except ImportError as missing:
    print(f"skipped: {missing.name} is not installed "
          "(pip install torch flow-matching==1.0.10 torchdiffeq onnx tqdm)")
    sys.exit(0)

import warnings

warnings.filterwarnings("ignore")
OPSET = 17
# Seconds of rest before each timed run.
PAUSE = 0.5


# ---------------------------------------------------------------------------
# The networks (each also exported to ONNX).


class ConcatMLP(nn.Module):
    """concat(x, t) -> Linear -> SiLU (x3, width 256) -> Linear -> v."""

    def __init__(self, dim, width=256, depth=3):
        super().__init__()
        layers, d = [], dim + 1
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        layers.append(nn.Linear(d, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x, t):
        return self.net(torch.cat([x, t.unsqueeze(1)], dim=1))


class SmallConv(nn.Module):
    """x [B,1,28,28], t [B]: Conv 3x3 (1->32) SiLU, + time bias, Conv (32->32)
    SiLU, Conv (32->1)."""

    def __init__(self, ch=32):
        super().__init__()
        self.c1 = nn.Conv2d(1, ch, 3, padding=1)
        self.time = nn.Linear(1, ch)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c3 = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x, t):
        h = torch.nn.functional.silu(self.c1(x))
        h = h + self.time(t.unsqueeze(1))[:, :, None, None]
        h = torch.nn.functional.silu(self.c2(h))
        return self.c3(h)


class GmmOT(nn.Module):
    """The exact marginal velocity of the 8-component ring mixture
    (radius 4, std 0.3) under alpha = t, sigma = 1 - t: the same field as
    tests/fixtures/gmm_ot.onnx (made by tests/fixtures/make_fixtures.py)."""

    def __init__(self, k=8, radius=4.0, std=0.3):
        super().__init__()
        ang = 2.0 * np.pi * np.arange(k) / k
        mu = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        self.register_buffer("log_pi", torch.full((k,), math.log(1.0 / k)))
        self.register_buffer("mu", torch.tensor(mu, dtype=torch.float32))
        self.register_buffer("s2", torch.full((k,), std * std))

    def forward(self, x, t):
        a = t.unsqueeze(1)
        sg = 1.0 - a
        v = a * a * self.s2 + sg * sg
        diff = x.unsqueeze(1) - a.unsqueeze(2) * self.mu
        sq = (diff * diff).sum(dim=2)
        logw = self.log_pi - 0.5 * 2 * torch.log(v) - 0.5 * sq / v
        w = torch.softmax(logw, dim=1)
        coef = (a * self.s2 - sg) / v
        return (w.unsqueeze(2) * (self.mu + coef.unsqueeze(2) * diff)).sum(dim=1)


class Wrapped(ModelWrapper):
    """flow_matching's view of a module: t is a scalar, the module wants [B]."""

    def forward(self, x, t, **extras):
        return self.model(x, t.reshape(1).expand(x.shape[0]).to(x.dtype))


def export(module, shape, path):
    module.eval()
    x = torch.zeros(2, *shape)
    t = torch.zeros(2)
    with torch.no_grad():
        torch.onnx.export(module, (x, t), path, input_names=["x", "t"],
                          output_names=["v"],
                          dynamic_axes={"x": {0: "B"}, "t": {0: "B"}, "v": {0: "B"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


# ---------------------------------------------------------------------------
# The cases of issue 11.

# (label, kind, network, state shape, batch, method, steps or None for
#  adaptive, divergence[, extra fmrt options])
CASES = [
    ("sample, MLP 2-D, batch 4096, midpoint 100", "sample", "mlp2", (2,), 4096, "midpoint", 100, None),
    ("sample, conv 1x28x28, batch 64, Euler 50", "sample", "conv", (1, 28, 28), 64, "euler", 50, None),
    ("likelihood, MLP 2-D, batch 1024, midpoint 100, exact", "likelihood", "mlp2", (2,), 1024, "midpoint", 100, "exact"),
    ("likelihood, MLP 2-D, batch 1024, midpoint 100, Hutchinson 1", "likelihood", "mlp2", (2,), 1024, "midpoint", 100, "hutchinson"),
    ("likelihood, MLP 64-D, batch 256, midpoint 20, exact", "likelihood", "mlp64", (64,), 256, "midpoint", 20, "exact"),
    ("likelihood, conv 1x28x28, batch 64, Euler 50, Hutchinson 1", "likelihood", "conv", (1, 28, 28), 64, "euler", 50, "hutchinson"),
    ("likelihood, mixture, batch 1024, dopri5 1e-5, exact", "likelihood", "gmm", (2,), 1024, "dopri5", None, "exact"),
    ("likelihood, mixture, batch 1024, dopri5 1e-5, exact, fmrt --error-norm batch", "likelihood", "gmm", (2,), 1024, "dopri5", None, "exact", ["--error-norm", "batch"]),
    ("sample, mixture, batch 4096, dopri5 1e-5", "sample", "gmm", (2,), 4096, "dopri5", None, None),
    ("sample, mixture, batch 4096, dopri5 1e-5, fmrt --error-norm batch", "sample", "gmm", (2,), 4096, "dopri5", None, None, ["--error-norm", "batch"]),
]


def network(name):
    torch.manual_seed(0)
    return {
        "mlp2": lambda: ConcatMLP(2),
        "mlp64": lambda: ConcatMLP(64),
        "conv": lambda: SmallConv(),
        "gmm": lambda: GmmOT(),
    }[name]()


def gmm_log_density(x, k=8, radius=4.0, std=0.3):
    """The exact log-density of the ring mixture at t = 1 (float64)."""
    ang = 2.0 * np.pi * np.arange(k) / k
    mu = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    sq = ((x.astype(np.float64)[:, None, :] - mu[None]) ** 2).sum(2)
    terms = math.log(1.0 / k) - math.log(2 * math.pi * std * std) - sq / (2 * std * std)
    top = terms.max(1)
    return top + np.log(np.exp(terms - top[:, None]).sum(1))


def log_normal(x):
    d = x[0].numel()
    return -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)


def run_flow_matching(case, module, data):
    label, kind, _, _, _, method, steps, divergence = case[:8]
    solver = ODESolver(velocity_model=Wrapped(module))
    step = None if steps is None else 1.0 / steps
    x = torch.from_numpy(data)
    start = time.perf_counter()
    with torch.no_grad():
        if kind == "sample":
            out = solver.sample(x_init=x, step_size=step, method=method,
                                atol=1e-5, rtol=1e-5,
                                time_grid=torch.tensor([0.0, 1.0]))
            result = out.numpy()
        else:
            _, logp = solver.compute_likelihood(
                x_1=x, log_p0=log_normal, step_size=step, method=method,
                atol=1e-5, rtol=1e-5, time_grid=torch.tensor([1.0, 0.0]),
                exact_divergence=(divergence == "exact"))
            result = logp.numpy().astype(np.float64)
    return time.perf_counter() - start, result


def run_fmrt(case, fmrt, model, data_path, out_path):
    _, kind, _, _, _, method, steps, divergence = case[:8]
    cmd = [fmrt, kind, "--model", model, "--solver", method, "-o", out_path, "--quiet"]
    cmd += case[8] if len(case) > 8 else []
    cmd += ["--noise" if kind == "sample" else "--data", data_path]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    else:
        cmd += ["--rtol", "1e-5", "--atol", "1e-5"]
    if divergence is not None:
        cmd += ["--divergence", divergence]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    took = time.perf_counter() - start
    return took, np.load(out_path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="run the cases whose label contains this")
    parser.add_argument("--skip", default=None, help="skip the cases whose label contains this")
    parser.add_argument("--fmrt", default=os.path.join(ROOT, "target", "release", "fmrt"))
    args = parser.parse_args()
    if not os.path.exists(args.fmrt):
        print(f"skipped: {args.fmrt} is missing (cargo build --release -p fmrt-cli)")
        return 0
    torch.set_num_threads(2)
    print(f"torch {torch.__version__} on {torch.get_num_threads()} threads, "
          f"flow_matching 1.0.10, fmrt {args.fmrt}; medians of {args.repeats} runs")
    rows = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            label, kind, name, shape, batch, *_ = case
            if args.only not in label or (args.skip and args.skip in label):
                continue
            module = network(name)
            model = os.path.join(tmp, f"{name}.onnx")
            if not os.path.exists(model):
                export(module, shape, model)
            rng = np.random.default_rng(1)
            data = rng.standard_normal((batch, *shape)).astype(np.float32)
            if kind == "likelihood" and name == "gmm":
                # Points from the mixture itself, where log p is meaningful.
                ang = 2 * np.pi * rng.integers(0, 8, batch) / 8
                data = (4 * np.stack([np.cos(ang), np.sin(ang)], 1)
                        + 0.3 * rng.standard_normal((batch, 2))).astype(np.float32)
            data_path = os.path.join(tmp, "data.npy")
            out_path = os.path.join(tmp, "out.npy")
            np.save(data_path, data)
            fm_times, fmrt_times = [], []
            for _ in range(args.repeats):
                # A pause before each timed run, so that neither library
                # starts while the other's worker threads still spin.
                time.sleep(PAUSE)
                t_fm, ref = run_flow_matching(case, module, data)
                time.sleep(PAUSE)
                t_rt, got = run_fmrt(case, args.fmrt, model, data_path, out_path)
                fm_times.append(t_fm)
                fmrt_times.append(t_rt)
            diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            if kind == "likelihood" and name == "gmm":
                # Adaptive steps differ between the libraries: compare each
                # with the mixture's exact log-density instead.
                exact = gmm_log_density(data)
                e_fm = float(np.abs(ref - exact).max())
                e_rt = float(np.abs(got - exact).max())
                agree = f"max |log p - exact|: flow_matching {e_fm:.1e}, fmrt {e_rt:.1e}"
            elif kind == "likelihood" and case[7] == "exact":
                rel = float((diff / np.maximum(1.0, np.abs(ref))).max())
                agree = f"max rel {rel:.1e}" + (" ok" if rel <= 1e-4 else " DIFFERS")
                failed |= rel > 1e-4
            elif kind == "likelihood":
                agree = f"mean |diff| {float(diff.mean()):.2e} (other probes)"
            else:
                agree = f"max |diff| {float(diff.max()):.1e}"
            fm, rt = statistics.median(fm_times), statistics.median(fmrt_times)
            rows.append((label, fm, rt, fm / rt, agree))
            print(f"  {label}: flow_matching {fm:.2f} s, fmrt {rt:.2f} s", flush=True)
    print()
    print("| case | flow_matching | fmrt | flow_matching / fmrt | agreement |")
    print("|---|---|---|---|---|")
    for label, fm, rt, ratio, agree in rows:
        print(f"| {label} | {fm:.2f} s | {rt:.2f} s | {ratio:.2f} | {agree} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
