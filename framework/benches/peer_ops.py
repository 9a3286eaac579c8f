"""PyTorch side of the extra op workloads of `ops.rs` (pooling, resize, separable filter).

Same timing rules as benches/peer/bench_peer.py: 2 threads, 2 warm-up iterations, then at
least 5 runs and 3 s; prints one JSON line per workload (median/min/max ms).

    OMP_NUM_THREADS=2 .venv-peer/bin/python framework/benches/peer_ops.py [--only-conv2d]
"""
import json
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def timed(name, prep, fn):
    for _ in range(2):
        prep()
        fn()
    samples = []
    while len(samples) < 5 or sum(samples) < 3000.0:
        prep()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if len(samples) >= 50:
            break
    print(json.dumps({"name": name, "median_ms": statistics.median(samples),
                      "min_ms": min(samples), "max_ms": max(samples), "n": len(samples)}))


def conv2d_atlalign(g):
    """conv2d at atlalign's full resolution, as `bench_conv2d` in ops.rs."""
    for name, xs, ws in (("conv2d_16_16_b4_320x456", (4, 16, 320, 456), (16, 16, 3, 3)),
                         ("conv2d_2_16_b1_320x448", (1, 2, 320, 448), (16, 2, 3, 3))):
        x = (torch.rand(xs, generator=g) * 2 - 1).requires_grad_(True)
        w = ((torch.rand(ws, generator=g) * 2 - 1) * 0.1).requires_grad_(True)
        go = torch.rand((xs[0], ws[0], xs[2], xs[3]), generator=g) * 2 - 1

        def clear():
            x.grad = None
            w.grad = None
        with torch.no_grad():
            timed(f"{name}_fwd", lambda: None, lambda: F.conv2d(x, w, padding=1))
        timed(f"{name}_fwd_bwd", clear, lambda: F.conv2d(x, w, padding=1).backward(go))


def main():
    g = torch.Generator().manual_seed(0)
    if "--only-conv2d" in __import__("sys").argv:
        conv2d_atlalign(g)
        return
    x = torch.randn(1, 16, 64, 64, 64, generator=g, requires_grad=True)
    gp = torch.randn(1, 16, 32, 32, 32, generator=g)
    timed("maxpool3d_k2_fwd_bwd", lambda: setattr(x, "grad", None),
          lambda: F.max_pool3d(x, 2, 2).backward(gp))
    timed("avgpool3d_k2_fwd_bwd", lambda: setattr(x, "grad", None),
          lambda: F.avg_pool3d(x, 2, 2).backward(gp))
    # General pooling; voxreg's mean leaves the padding out, hence count_include_pad=False.
    timed("maxpool3d_k3s2p1_fwd_bwd", lambda: setattr(x, "grad", None),
          lambda: F.max_pool3d(x, 3, 2, 1).backward(gp))
    timed("avgpool3d_k3s2p1_fwd_bwd", lambda: setattr(x, "grad", None),
          lambda: F.avg_pool3d(x, 3, 2, 1, count_include_pad=False).backward(gp))
    u = torch.randn(1, 32, 32, 32, 32, generator=g, requires_grad=True)
    gu = torch.randn(1, 32, 64, 64, 64, generator=g)
    timed("resize_trilinear_x2_fwd_bwd", lambda: setattr(u, "grad", None),
          lambda: F.interpolate(u, scale_factor=2, mode="trilinear",
                                align_corners=False).backward(gu))
    f = torch.rand(1, 1, 128, 128, 128, generator=g, requires_grad=True)
    gf = torch.randn(1, 1, 128, 128, 128, generator=g)
    ks = [torch.ones(1, 1, 9, 1, 1), torch.ones(1, 1, 1, 9, 1), torch.ones(1, 1, 1, 1, 9)]
    pads = [(4, 0, 0), (0, 4, 0), (0, 0, 4)]

    def box(t):
        for k, p in zip(ks, pads):
            t = F.conv3d(t, k, padding=p)
        return t

    def fwd():
        with torch.no_grad():
            box(f)

    timed("separable_box9_128_fwd", lambda: None, fwd)
    timed("separable_box9_128_fwd_bwd", lambda: setattr(f, "grad", None),
          lambda: box(f).backward(gf))
    conv2d_atlalign(g)


if __name__ == "__main__":
    main()
