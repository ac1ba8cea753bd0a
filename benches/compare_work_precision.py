#!/usr/bin/env python3
"""Work precision at equal network calls: fmrt's fixed-step solvers and grids
against torchdiffeq's solvers and diffusers' flow schedulers, on the same
ONNX models and the same noise.

Models: the exact velocity of the 8-component ring mixture
(tests/fixtures/gmm_ot.onnx, 2-D), of a 16-D mixture
(tests/fixtures/gmm16_ot.onnx) and the trained two-moons MLP that the demo
ships (examples/models/two_moons.onnx). For each, 256 noise rows (seeded)
are integrated from t = 0 to 1 by
- fmrt (the `fmrt` CLI, release build: `fmrt sample --noise`), every fixed-step
  solver on the uniform grid and on the shift grid (mu = 3), with the number
  of steps that spends the call budget;
- torchdiffeq (`odeint`, fixed grids: euler, midpoint, rk4 on the uniform and
  the shift grid), the velocity evaluated by ONNX Runtime on the same file;
- diffusers (`FlowMatchEulerDiscreteScheduler`, `DPMSolverMultistepScheduler`
  and `UniPCMultistepScheduler` in flow mode, `solver_order=2`, shift 1 and 3),
  their loop run as a pipeline runs it (float32 state, v = dx/dsigma).
The error of a sample is the RMS over its entries of the difference to a tight
reference from the same noise (fmrt's dopri5, rtol = atol = 1e-10, independent
steps; torchdiffeq's dopri5 at 1e-10 is reported beside it as a check). The
table gives the median and the 99th percentile over the samples; calls are
counted where the velocity is called.

Needs `pip install torch torchdiffeq diffusers onnxruntime numpy matplotlib`
(never in CI); without them it says so and exits with status 0. Build fmrt
first: `cargo build --release -p fmrt-cli`.

    python3 benches/compare_work_precision.py [--calls 8,12,16,24,32] [--plot OUT.png]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import numpy as np
    import onnxruntime as ort
    import torch
    import torchdiffeq
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )
except ImportError as missing:  # pragma: no cover - depends on the machine
    print(f"compare_work_precision: {missing}; pip install torch torchdiffeq diffusers "
          "onnxruntime numpy matplotlib to run it")
    sys.exit(0)

MODELS = [
    ("mixture 2-D", "tests/fixtures/gmm_ot.onnx"),
    ("mixture 16-D", "tests/fixtures/gmm16_ot.onnx"),
    ("two-moons MLP", "examples/models/two_moons.onnx"),
]
ROWS = 256
SEED = 7
SHIFT = 3.0
# (solver, calls per step, extra calls once)
FMRT_SOLVERS = [
    ("euler", 1, 0),
    ("midpoint", 2, 0),
    ("heun", 2, 0),
    ("rk4", 4, 0),
    ("ab2", 1, 0),
    ("ab3", 1, 0),
    ("pec2", 1, 1),
    ("dpmpp2m", 1, 0),
    ("unipc", 1, 0),
]
TORCHDIFFEQ_SOLVERS = [("euler", 1), ("midpoint", 2), ("rk4", 4)]


class Velocity:
    """u(x, t) of an fmrt-convention ONNX file (t = 0 noise), counting calls."""

    def __init__(self, path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        self.time = next(n for n in names if n in ("t", "time", "timestep", "timesteps"))
        self.state = next(n for n in names if n != self.time)
        rank = len(next(i for i in inputs if i.name == self.time).shape)
        self.time_rank = rank
        self.output = self.session.get_outputs()[0].name
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.shape[0]
        if self.time_rank == 0:
            times = np.array(t, dtype=np.float32)
        elif self.time_rank == 1:
            times = np.full((n,), t, dtype=np.float32)
        else:
            times = np.full((n, 1), t, dtype=np.float32)
        return self.session.run([self.output], {self.state: x, self.time: times})[0]


def shift_grid(steps, mu):
    u = np.linspace(0.0, 1.0, steps + 1)
    s = 1.0 - u
    t = 1.0 - mu * s / (1.0 + (mu - 1.0) * s)
    t[0], t[-1] = 0.0, 1.0
    return t


def errors(x, reference):
    e = np.sqrt(np.mean((x.astype(np.float64) - reference) ** 2, axis=1))
    return float(np.median(e)), float(np.percentile(e, 99))


def run_fmrt(binary, model, noise_path, out_path, args):
    command = [binary, "sample", "--model", model, "--noise", noise_path, "-o", out_path,
               "--quiet", "--json"] + args
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return None, done.stderr.strip().splitlines()[-1] if done.stderr else "failed"
    report = json.loads(done.stdout)
    calls = report.get("stats", {}).get("nfe", report.get("nfe"))
    return (np.load(out_path), calls), None


def fmrt_rows(binary, model, noise_path, work, reference, budgets):
    rows = []
    for solver, per_step, once in FMRT_SOLVERS:
        for grid, grid_args in (("uniform", []), (f"shift {SHIFT:g}", ["--grid", "shift",
                                                                       "--grid-param", f"mu={SHIFT}"])):
            for budget in budgets:
                steps = (budget - once) // per_step
                if steps < 1:
                    continue
                out = os.path.join(work, "x.npy")
                result, why = run_fmrt(binary, model, noise_path, out,
                                       ["--solver", solver, "--steps", str(steps)] + grid_args)
                if result is None:
                    print(f"  fmrt {solver} on {grid} ({steps} steps) refused: {why}")
                    break
                x, calls = result
                rows.append(("fmrt", solver, grid, calls, *errors(x, reference)))
    return rows


def torchdiffeq_rows(velocity, noise, reference, budgets):
    rows = []

    def func(t, x):
        return torch.from_numpy(velocity(x.numpy(), float(t)))

    for solver, per_step in TORCHDIFFEQ_SOLVERS:
        for grid in ("uniform", f"shift {SHIFT:g}"):
            for budget in budgets:
                steps = budget // per_step
                times = np.linspace(0.0, 1.0, steps + 1) if grid == "uniform" else shift_grid(steps, SHIFT)
                velocity.calls = 0
                with torch.no_grad():
                    path = torchdiffeq.odeint(func, torch.from_numpy(noise), torch.from_numpy(times.astype(np.float32)),
                                              method=solver)
                x = path[-1].numpy()
                rows.append(("torchdiffeq", solver, grid, velocity.calls, *errors(x, reference)))
    return rows


def diffusers_rows(velocity, noise, reference, budgets):
    rows = []
    makers = {
        "euler": lambda k: FlowMatchEulerDiscreteScheduler(shift=k),
        "dpmpp2m": lambda k: DPMSolverMultistepScheduler(
            use_flow_sigmas=True, flow_shift=k, prediction_type="flow_prediction", solver_order=2),
        "unipc": lambda k: UniPCMultistepScheduler(
            use_flow_sigmas=True, flow_shift=k, prediction_type="flow_prediction", solver_order=2),
    }
    for name, make in makers.items():
        for shift in (1.0, SHIFT):
            for budget in budgets:
                scheduler = make(shift)
                scheduler.set_timesteps(budget)
                sample = torch.from_numpy(noise.copy())
                velocity.calls = 0
                for i, timestep in enumerate(scheduler.timesteps):
                    sigma = float(scheduler.sigmas[i])
                    # diffusers' model output is dx/dsigma with sigma = 1 - t.
                    v = -velocity(sample.numpy(), 1.0 - sigma)
                    sample = scheduler.step(torch.from_numpy(v), timestep, sample).prev_sample
                rows.append(("diffusers", name, f"shift {shift:g}", velocity.calls,
                             *errors(sample.numpy(), reference)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="8,12,16,24,32")
    parser.add_argument("--fmrt", default=os.path.join(ROOT, "target", "release", "fmrt"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "benches", "work_precision.png"))
    args = parser.parse_args()
    budgets = [int(c) for c in args.calls.split(",")]
    if not os.path.exists(args.fmrt):
        print(f"compare_work_precision: no fmrt at {args.fmrt}; cargo build --release -p fmrt-cli")
        return 1
    torch.set_num_threads(2)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for label, relative in MODELS:
            model = os.path.join(ROOT, relative)
            velocity = Velocity(model)
            dim = velocity.session.get_inputs()[[i.name for i in velocity.session.get_inputs()].index(velocity.state)].shape[1]
            noise = np.random.default_rng(SEED).standard_normal((ROWS, dim)).astype(np.float32)
            noise_path = os.path.join(work, "noise.npy")
            np.save(noise_path, noise)
            ref_path = os.path.join(work, "ref.npy")
            result, why = run_fmrt(args.fmrt, model, noise_path, ref_path,
                                   ["--solver", "dopri5", "--rtol", "1e-10", "--atol", "1e-10"])
            if result is None:
                print(f"reference failed on {relative}: {why}")
                return 1
            reference = result[0].astype(np.float64)

            def func(t, x):
                return torch.from_numpy(velocity(x.numpy(), float(t)).astype(np.float64))

            with torch.no_grad():
                check = torchdiffeq.odeint(func, torch.from_numpy(noise.astype(np.float64)),
                                           torch.tensor([0.0, 1.0], dtype=torch.float64),
                                           method="dopri5", rtol=1e-10, atol=1e-10)[-1].numpy()
            agreement = float(np.max(np.abs(check - reference)))
            print(f"\n{label} ({relative}, D = {dim}, {ROWS} samples); references: "
                  f"max |fmrt dopri5 - torchdiffeq dopri5| = {agreement:.1e}")
            rows = fmrt_rows(args.fmrt, model, noise_path, work, reference, budgets)
            rows += torchdiffeq_rows(velocity, noise, reference, budgets)
            rows += diffusers_rows(velocity, noise, reference, budgets)
            results[label] = rows
            print(f"{'library':<12} {'solver':<9} {'grid':<9} " + " ".join(f"{b:>9}" for b in budgets))
            keyed = {}
            for lib, solver, grid, calls, median, p99 in rows:
                keyed.setdefault((lib, solver, grid), {})[calls] = median
            for (lib, solver, grid), by_calls in keyed.items():
                cells = []
                for b in budgets:
                    best = [c for c in by_calls if c <= b]
                    cells.append(f"{by_calls[max(best)]:9.1e}" if best else f"{'-':>9}")
                print(f"{lib:<12} {solver:<9} {grid:<9} " + " ".join(cells))
            for b in budgets:
                fits = [r for r in rows if r[3] <= b]
                if fits:
                    lib, solver, grid, calls, median, _ = min(fits, key=lambda r: r[4])
                    print(f"  best within {b} calls: {lib} {solver} on {grid} ({calls} calls), "
                          f"median {median:.1e}")
    plot(results, args.plot)
    return 0


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: no plot")
        return
    shown = [
        ("fmrt", "euler", "uniform"), ("fmrt", "midpoint", "uniform"), ("fmrt", "rk4", "uniform"),
        ("fmrt", "ab3", "uniform"), ("fmrt", "pec2", "uniform"),
        ("torchdiffeq", "midpoint", "uniform"), ("torchdiffeq", "rk4", "uniform"),
        ("diffusers", "euler", f"shift {SHIFT:g}"), ("diffusers", "dpmpp2m", f"shift {SHIFT:g}"),
        ("diffusers", "unipc", f"shift {SHIFT:g}"),
    ]
    styles = {"fmrt": "-", "torchdiffeq": "--", "diffusers": ":"}
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2))
    for axis, (label, rows) in zip(np.atleast_1d(axes), results.items()):
        for key in shown:
            points = sorted((r[3], r[4]) for r in rows if r[:3] == key)
            if points:
                axis.loglog(*zip(*points), styles[key[0]], marker="o", markersize=3,
                            label=f"{key[0]} {key[1]} ({key[2]})")
        axis.set_title(label)
        axis.set_xlabel("network calls per sample")
        axis.set_ylabel("median error (RMS per sample)")
        axis.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    sys.exit(main())
