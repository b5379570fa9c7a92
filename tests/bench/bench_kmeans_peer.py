#!/usr/bin/env python3
"""PyTorch CPU peer for tests/bench/bench-kmeans.c: one Lloyd iteration as
the C engine does it (blocked x @ C^T, argmin of ||e||^2 - 2 x.e, per-cluster
sums in float64, empty clusters left in place), timed the same way.

Prints one line
`PEER median_s=<s> min_s=<s> iters=<n> torch=<version> threads=<t>`,
or `peer unavailable: <why>` (exit 0) when torch cannot be imported.
"""
import argparse
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--block", type=int, default=1024)
    a = ap.parse_args()
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means no peer
        print(f"peer unavailable: import torch failed ({e.__class__.__name__}: {e})")
        return 0

    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, a.d, generator=g, dtype=torch.float32)
    # Start from data points, as k-means++ would; the iteration cost does not
    # depend on which ones.
    cent = x[: a.k].clone()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        norms = (cent * cent).sum(1)
        sums = torch.zeros(a.k, a.d, dtype=torch.float64)
        counts = torch.zeros(a.k, dtype=torch.int64)
        sse = 0.0
        for i in range(0, a.n, a.block):
            xb = x[i:i + a.block]
            # One fused GEMM: norms - 2 x.e, as a careful torch user writes it.
            scores = torch.addmm(norms.unsqueeze(0), xb, cent.T, alpha=-2.0)
            best, lab = scores.min(1)  # first minimum on ties, like argmin
            # The C side measures the error exactly per point; here the
            # cheaper ||x||^2 + min score, to keep the peer at its best.
            sse += float(((xb * xb).sum(1) + best).double().sum())
            sums.index_add_(0, lab, xb.double())
            counts += torch.bincount(lab, minlength=a.k)
        nz = counts > 0
        cent[nz] = (sums[nz] / counts[nz].unsqueeze(1).double()).float()
        times.append(time.perf_counter() - t0)
        print(f"peer iter {len(times)}: {times[-1]:.3f} s mse {sse / a.n:.6g}",
              file=sys.stderr)
    print(f"PEER median_s={statistics.median(times):.6f} min_s={min(times):.6f} "
          f"iters={a.iters} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
