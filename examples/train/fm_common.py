"""Shared pieces of the example training scripts (two_moons.py, conditional.py).

Not run by itself. Holds: the `ot` scheduler text written into the models'
metadata, sinusoidal time features, the conditional flow-matching batch under
the OT path, an exponential moving average of weights, a midpoint ODE sampler,
the energy-distance two-sample statistic, and the ONNX export + check.
"""

import math
import os
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

warnings.filterwarnings("ignore", category=DeprecationWarning)  # legacy exporter notice

# Text of fmrt's built-in `ot` scheduler (src/scheduler/builtin/ot.fm).
OT_FM = """# ot — conditional optimal transport (CondOT) path:
#   alpha(t) = t,  sigma(t) = 1 - t
alpha = t
sigma = 1 - t
"""

MODELS_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))


class TimeFeatures(nn.Module):
    """t [B] -> [B, 2n]: sin and cos of pi * 2^j * t, j = 0..n-1."""

    def __init__(self, n=6):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n, dtype=torch.float32))

    def forward(self, t):
        ang = t.unsqueeze(1) * self.freqs
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


def mlp(d_in, hidden, depth, d_out):
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def ot_batch(x1, gen):
    """Conditional flow matching under alpha = t, sigma = 1 - t:
    x0 ~ N(0, I), t ~ U(0, 1), x_t = t x1 + (1 - t) x0, target x1 - x0."""
    x0 = torch.randn(x1.shape, generator=gen)
    t = torch.rand(x1.shape[0], generator=gen)
    xt = t[:, None] * x1 + (1.0 - t[:, None]) * x0
    return xt, t, x1 - x0


class EMA:
    """Exponential moving average of a model's parameters (exported instead of the raw weights)."""

    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)


@torch.no_grad()
def sample_midpoint(field, x0, steps=100):
    """Integrate dx/dt = field(x, t) from t = 0 to 1 with the explicit midpoint rule."""
    x = x0.clone()
    h = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * h)
        k1 = field(x, t)
        x_mid = x + 0.5 * h * k1
        x = x + h * field(x_mid, t + 0.5 * h)
    return x


def energy_distance(a, b):
    """Squared energy distance 2E|A-B| - E|A-A'| - E|B-B'| (V-statistic, float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)

    def mean_dist(p, q):
        return np.sqrt(((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)).mean()

    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def export_onnx(model, example_args, filename, input_names, metadata, doc):
    """Legacy exporter, opset 17, dynamic batch axis on all inputs and the output `v`;
    metadata written with the onnx package. Returns the path."""
    model.eval()
    out = os.path.join(MODELS_DIR, filename)
    os.makedirs(MODELS_DIR, exist_ok=True)
    dyn = {n: {0: "B"} for n in input_names + ["v"]}
    with torch.no_grad():
        torch.onnx.export(model, example_args, out, input_names=input_names,
                          output_names=["v"], dynamic_axes=dyn, opset_version=17,
                          dynamo=False, do_constant_folding=True)
    m = onnx.load(out)
    m.doc_string = doc
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, metadata)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, out)
    size = os.path.getsize(out)
    assert size < 1_000_000, size
    return out


def check_onnx(model, path, feeds):
    """Max abs diff between onnxruntime and PyTorch on the given numpy feeds."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    with torch.no_grad():
        ref = model(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    return float(np.abs(got - ref).max())


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
