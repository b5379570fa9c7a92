#!/usr/bin/env python3
"""PyTorch peer of bench-encode: the AVQ edge encode at ViT-L/14-336 size on
the CPU, with random fp32 weights, timed the same way (median of --runs after
two warm-up frames). Prints one line: `peer layer=L median_ms=X`.

The computation follows transformers' CLIP (conv patch embedding, CLS,
position embedding, pre_layrnorm, pre-LN encoder layers with quick_gelu,
scaled-dot-product attention where the torch version has it), then
layer_norm1 of layer L, the DLP and the codebook argmin as the AVQ spec
writes it (||e||^2 - 2 u.e with one matmul).

Exit status 3 when torch is missing, so a caller can say "peer unavailable".
"""
import argparse
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch unavailable", file=sys.stderr)
    sys.exit(3)

D, MLP, HEADS, IMAGE, PATCH, K = 1024, 4096, 16, 336, 14, 4096
TOKENS = (IMAGE // PATCH) ** 2 + 1
EPS = 1e-5


def rand(*shape, center=0.0, spread=0.035):
    return center + spread * (2 * torch.rand(*shape) - 1)


class Layer:
    def __init__(self):
        self.ln1 = (rand(D, center=1, spread=0.2), rand(D, spread=0.1))
        self.ln2 = (rand(D, center=1, spread=0.2), rand(D, spread=0.1))
        self.q, self.k, self.v, self.o = [(rand(D, D), rand(D, spread=0.02)) for _ in range(4)]
        self.fc1 = (rand(MLP, D), rand(MLP, spread=0.02))
        self.fc2 = (rand(D, MLP), rand(D, spread=0.02))

    def attention(self, z):
        hd = D // HEADS
        q = F.linear(z, *self.q).view(1, TOKENS, HEADS, hd).transpose(1, 2)
        k = F.linear(z, *self.k).view(1, TOKENS, HEADS, hd).transpose(1, 2)
        v = F.linear(z, *self.v).view(1, TOKENS, HEADS, hd).transpose(1, 2)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) * hd ** -0.5
            o = torch.matmul(torch.softmax(s, dim=-1), v)
        return F.linear(o.transpose(1, 2).reshape(1, TOKENS, D), *self.o)

    def __call__(self, x):
        h = x + self.attention(F.layer_norm(x, (D,), *self.ln1, EPS))
        m = F.linear(F.layer_norm(h, (D,), *self.ln2, EPS), *self.fc1)
        m = m * torch.sigmoid(1.702 * m)
        return h + F.linear(m, *self.fc2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", type=int, default=0)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    patch_w = rand(D, 3, PATCH, PATCH, spread=0.07)
    cls = rand(D, spread=0.5)
    pos = rand(TOKENS, D, spread=0.1)
    pre = (rand(D, center=1, spread=0.2), rand(D, spread=0.1))
    layers = [Layer() for _ in range(args.layer)]
    ln1 = (rand(D, center=1, spread=0.2), rand(D, spread=0.1))
    codebook = rand(K, D, spread=1.7)
    dlp_in = (rand(D, D), rand(D, spread=0.02))
    tanh_in = torch.tanh(torch.tensor(0.5))
    pixels = 0.15 + 1.9 * (2 * torch.rand(1, 3, IMAGE, IMAGE) - 1)
    side = args.layer > 0

    def encode():
        e = F.conv2d(pixels, patch_w, stride=PATCH).flatten(2).transpose(1, 2)
        x = torch.cat([cls.view(1, 1, D), e], dim=1) + pos
        x = F.layer_norm(x, (D,), *pre, EPS)
        for layer in layers:
            x = layer(x)
        z = F.layer_norm(x, (D,), *ln1, EPS)
        u = z + tanh_in * F.linear(z, *dlp_in)
        # ||e||^2 is a per-file constant, precomputed as the C side does.
        dist = sqnorm - 2 * torch.matmul(u[0], codebook.t())
        idx = torch.argmin(dist, dim=1)
        if side:
            mu = x.mean(-1)
            ls = 0.5 * torch.log(x.var(-1, unbiased=False) + EPS)
            lo, hi = mu.min(), mu.max()
            torch.clamp(torch.round((mu - lo) / ((hi - lo) / 255)), 0, 255)
            lo, hi = ls.min(), ls.max()
            torch.clamp(torch.round((ls - lo) / ((hi - lo) / 255)), 0, 255)
        return idx

    sqnorm = (codebook * codebook).sum(1)
    times = []
    with torch.no_grad():
        for r in range(args.runs + 2):
            t0 = time.perf_counter()
            encode()
            t1 = time.perf_counter()
            if r >= 2:
                times.append((t1 - t0) * 1000)
    print(f"peer layer={args.layer} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} median_ms={statistics.median(times):.2f}")


if __name__ == "__main__":
    main()
