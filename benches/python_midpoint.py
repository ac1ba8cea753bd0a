"""Baseline for benches/onnx.rs: the midpoint sampling loop written in Python
around onnxruntime, as a PyTorch user would write it without fmrt.

    python benches/python_midpoint.py --model tests/fixtures/mlp256.onnx \
        --batch 4096 --steps 50 --repeats 7

Prints the median wall time of one full sampling run, in seconds.
"""

import argparse
import time

import numpy as np
import onnxruntime as ort


def sample(session, x0, steps):
    x = x0.copy()
    h = 1.0 / steps
    batch = x.shape[0]
    for i in range(steps):
        t = np.full(batch, i * h, dtype=np.float32)
        v = session.run(["v"], {"x": x, "t": t})[0]
        x_mid = x + 0.5 * h * v
        t_mid = np.full(batch, (i + 0.5) * h, dtype=np.float32)
        v_mid = session.run(["v"], {"x": x_mid.astype(np.float32), "t": t_mid})[0]
        x = (x + h * v_mid).astype(np.float32)
    return x


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((args.batch, 2)).astype(np.float32)
    sample(session, x0, 2)
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        sample(session, x0, args.steps)
        times.append(time.perf_counter() - started)
    print(sorted(times)[len(times) // 2])


if __name__ == "__main__":
    main()
