#!/usr/bin/env python3
"""The PyTorch / MONAI side of voxreg's benchmarks: the peer workloads every ratio in the docs is taken against.

Each workload runs in a fresh Python process (so its peak RSS is its own and no allocator state carries over)
and prints one JSON line: median / min / max ms over the timed runs, every sample, the derived throughput
(GFLOP/s, voxels/s, steps/s) where the workload defines one, and the process's peak RSS.

Timing rules: ``--warmup`` untimed iterations, then timed iterations until at least ``--min-runs`` runs and
``--min-time`` seconds of timed runs (at most ``--max-runs``); only the workload's timed callable sits inside
``time.perf_counter()``; an untimed preparation (dropping the leaf gradients) runs before every iteration.
All tensors float32, batch 1, contiguous NCDHW unless a workload states otherwise, ``--threads`` threads
(``torch.set_num_threads`` plus ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in each workload's process).

    python benches/peer/bench_peer.py --list
    python benches/peer/bench_peer.py --only a_conv3d_fwd_bwd,b_warp_fwd_bwd --out peer.jsonl
    python benches/peer/bench_peer.py --quick        # each workload once, no warm-up: proves the set-up only
    python benches/peer/bench_peer.py --check        # the hand-written losses and warp against known values
"""
import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional


# ---------------------------------------------------------------------------------------------------------------
# Workload registry. A workload's `build()` imports torch itself (the parent process never does) and returns a
# `Case`: what to time, what to run untimed before each iteration, and what to report.
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    """One prepared workload inside its own process."""

    run: Callable[[], None]
    shape: Dict[str, list]
    prep: Optional[Callable[[], None]] = None
    flops: Optional[int] = None
    voxels: Optional[int] = None
    steps: Optional[int] = None
    meta: Dict[str, object] = dataclasses.field(default_factory=dict)
    # A training step whose first warm-up iteration takes longer than this is reported as skipped.
    skip_if_first_step_over_s: Optional[float] = None


@dataclasses.dataclass
class Workload:
    """A named workload: its one-line definition (for --list and the JSON line) and its builder."""

    name: str
    description: str
    build: Callable[[], Case]


REGISTRY: Dict[str, Workload] = {}


def register(name: str, description: str):
    """Decorator: adds the decorated builder to REGISTRY under `name`."""

    def wrap(build):
        if name in REGISTRY:
            raise ValueError(f"workload {name!r} registered twice")
        REGISTRY[name] = Workload(name, description, build)
        return build

    return wrap


def seeded(seed: int):
    """A CPU generator with a fixed seed; each workload family draws its data from its own seed."""
    import torch

    return torch.Generator().manual_seed(seed)


def drop_grads(*tensors):
    """An untimed preparation step: forget the gradients of the given leaf tensors."""

    def prep():
        for t in tensors:
            t.grad = None

    return prep


# ---------------------------------------------------------------------------------------------------------------
# (a) conv3d: x (1,16,64³) ~ N(0,1), w (16,16,3³) ~ N(0,1)/sqrt(16·27), stride 1, padding 1, no bias.
# Forward FLOPs 2·N·Cout·Cin·27·D·H·W; forward + backward counted as three forwards (fwd, dgrad, wgrad).
# ---------------------------------------------------------------------------------------------------------------
CONV_X = (1, 16, 64, 64, 64)
CONV_W = (16, 16, 3, 3, 3)
CONV_Y = (1, 16, 64, 64, 64)
CONV_FWD_FLOPS = 2 * CONV_X[0] * CONV_W[0] * CONV_W[1] * 27 * 64 ** 3


def conv_operands(channels_last: bool, with_grad: bool):
    """x, w and the fixed upstream gradient of workload (a), NCDHW or (x, w, and the upstream gradient when it is
    used) channels-last-3d."""
    import torch

    gen = seeded(0)
    x = torch.randn(CONV_X, generator=gen)
    w = torch.randn(CONV_W, generator=gen) / (CONV_W[1] * 27) ** 0.5
    upstream = torch.randn(CONV_Y, generator=gen)
    if channels_last:
        layout = torch.channels_last_3d
        x, w = x.contiguous(memory_format=layout), w.contiguous(memory_format=layout)
        if with_grad:
            upstream = upstream.contiguous(memory_format=layout)
    if with_grad:
        x.requires_grad_(True)
        w.requires_grad_(True)
    return x, w, upstream


def conv_forward_case(channels_last: bool) -> Case:
    """Workload (a), forward only, under no_grad."""
    import torch
    import torch.nn.functional as F

    x, w, _ = conv_operands(channels_last, with_grad=False)

    def run():
        with torch.no_grad():
            F.conv3d(x, w, None, stride=1, padding=1)

    return Case(run=run, shape=conv_shape(channels_last), flops=CONV_FWD_FLOPS, voxels=64 ** 3,
                meta={"flops": CONV_FWD_FLOPS, "flops_formula": "2*N*Cout*Cin*27*D*H*W"})


def conv_forward_backward_case(channels_last: bool) -> Case:
    """Workload (a), forward + backward against the fixed upstream gradient: gradients of x and w."""
    import torch.nn.functional as F

    x, w, upstream = conv_operands(channels_last, with_grad=True)

    def run():
        F.conv3d(x, w, None, stride=1, padding=1).backward(upstream)

    flops = 3 * CONV_FWD_FLOPS
    return Case(run=run, prep=drop_grads(x, w), shape=conv_shape(channels_last), flops=flops, voxels=64 ** 3,
                meta={"flops": flops, "flops_formula": "3 * 2*N*Cout*Cin*27*D*H*W (fwd + dgrad + wgrad)"})


def conv_shape(channels_last: bool):
    """The `shape` field of the conv3d workloads."""
    shape = {"input": list(CONV_X), "weight": list(CONV_W)}
    if channels_last:
        shape["memory_format"] = "channels_last_3d"
    return shape


@register("a_conv3d_fwd", "conv3d forward, x(1,16,64,64,64) * w(16,16,3,3,3), stride 1, padding 1, no bias, "
                          "NCDHW, no grad")
def a_conv3d_fwd():
    return conv_forward_case(channels_last=False)


@register("a_conv3d_fwd_bwd", "conv3d forward + backward (grads of input and weight) against a fixed random "
                              "upstream gradient (1,16,64,64,64), NCDHW")
def a_conv3d_fwd_bwd():
    return conv_forward_backward_case(channels_last=False)


@register("a_conv3d_fwd_cl3d", "a_conv3d_fwd with input and weight in channels_last_3d memory format")
def a_conv3d_fwd_cl3d():
    return conv_forward_case(channels_last=True)


@register("a_conv3d_fwd_bwd_cl3d", "a_conv3d_fwd_bwd with input, weight and upstream gradient in "
                                   "channels_last_3d memory format")
def a_conv3d_fwd_bwd_cl3d():
    return conv_forward_backward_case(channels_last=True)


# ---------------------------------------------------------------------------------------------------------------
# (b) warp a (1,1,128³) image by a (1,3,128³) voxel-unit DDF (channel 0 along D, 1 along H, 2 along W, as MONAI's
# Warp): sample point = identity + ddf, normalised n = 2·p/(size−1) − 1, last axis reordered to (x, y, z),
# grid_sample trilinear, zeros padding, align_corners=True. Image ~ U(0,1), ddf ~ U(−2,2) i.i.d.
# ---------------------------------------------------------------------------------------------------------------
WARP_SIZE = 128
WARP_SHAPE = {"image": [1, 1, WARP_SIZE, WARP_SIZE, WARP_SIZE], "ddf": [1, 3, WARP_SIZE, WARP_SIZE, WARP_SIZE]}
WARP_NOTE = "image U(0,1); ddf U(-2,2) voxels; grid_sample(bilinear, padding zeros, align_corners=True)"


def warp_operands():
    """Image, DDF and the fixed upstream gradient of workload (b)."""
    import torch

    gen = seeded(1)
    size = (WARP_SIZE,) * 3
    image = torch.rand((1, 1) + size, generator=gen)
    ddf = torch.rand((1, 3) + size, generator=gen) * 4.0 - 2.0
    upstream = torch.randn((1, 1) + size, generator=gen)
    return image, ddf, upstream


class DdfWarp:
    """Pull-back warp out(p) = image(p + ddf(p)) by trilinear grid_sample; ddf in voxels, (D, H, W) channel order.

    # Shapes
    image (N, C, D, H, W), ddf (N, 3, D, H, W) -> (N, C, D, H, W)
    """

    def __init__(self, spatial, padding_mode="zeros"):
        import torch

        axes = [torch.arange(n, dtype=torch.float32) for n in spatial]
        self.identity = torch.stack(torch.meshgrid(*axes, indexing="ij")).unsqueeze(0)
        self.to_unit = torch.tensor([2.0 / (n - 1) for n in spatial]).view(1, 3, 1, 1, 1)
        self.padding_mode = padding_mode

    def __call__(self, image, ddf):
        import torch.nn.functional as F

        unit = (self.identity + ddf) * self.to_unit - 1.0
        grid = unit.permute(0, 2, 3, 4, 1).flip(-1)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=True)


@register("b_warp_fwd", "whole warp (identity + ddf, normalise, reorder, grid_sample) of a (1,1,128,128,128) image "
                        "by a (1,3,128,128,128) ddf, no grad")
def b_warp_fwd():
    import torch

    image, ddf, _ = warp_operands()
    warp = DdfWarp(image.shape[2:])

    def run():
        with torch.no_grad():
            warp(image, ddf)

    return Case(run=run, shape=WARP_SHAPE, voxels=WARP_SIZE ** 3, meta={"note": WARP_NOTE})


@register("b_warp_fwd_bwd", "whole warp forward + backward against a fixed random upstream gradient "
                            "(1,1,128,128,128); grad of the ddf only")
def b_warp_fwd_bwd():
    image, ddf, upstream = warp_operands()
    ddf.requires_grad_(True)
    warp = DdfWarp(image.shape[2:])

    def run():
        warp(image, ddf).backward(upstream)

    return Case(run=run, prep=drop_grads(ddf), shape=WARP_SHAPE, voxels=WARP_SIZE ** 3, meta={"note": WARP_NOTE})


# ---------------------------------------------------------------------------------------------------------------
# (c) local NCC, window 9, on two (1,1,128³) images: fixed ~ U(0,1), moving = 0.7·fixed + 0.3·U(0,1).
# ---------------------------------------------------------------------------------------------------------------
NCC_SIZE = 128
NCC_WINDOW = 9


def ncc_operands():
    """Fixed and moving images of workload (c)."""
    import torch

    gen = seeded(2)
    size = (1, 1) + (NCC_SIZE,) * 3
    fixed = torch.rand(size, generator=gen)
    moving = 0.7 * fixed + 0.3 * torch.rand(size, generator=gen)
    return fixed, moving.contiguous()


def voxelmorph_ncc(target, prediction, window=NCC_WINDOW):
    """VoxelMorph's (PyTorch, <= 0.2) local NCC loss, box sums by a zero-padded conv3d with a ones kernel.

    With S(·) the box sum over the window of n = window³ voxels, I = target, J = prediction,
    cross = S(IJ) − S(I)S(J)/n, var_I = S(I²) − S(I)²/n, var_J likewise (written out below in VoxelMorph's
    expanded form), loss = −mean(cross² / (var_I·var_J + 1e-5)).

    # Shapes
    target, prediction (1, 1, D, H, W) -> scalar
    """
    import torch
    import torch.nn.functional as F

    ones = torch.ones((1, 1, window, window, window), dtype=target.dtype)
    n = float(window ** 3)

    def box(t):
        return F.conv3d(t, ones, stride=1, padding=window // 2)

    s_i, s_j = box(target), box(prediction)
    s_ii, s_jj, s_ij = box(target * target), box(prediction * prediction), box(target * prediction)
    mean_i, mean_j = s_i / n, s_j / n
    cross = s_ij - mean_j * s_i - mean_i * s_j + mean_i * mean_j * n
    var_i = s_ii - 2 * mean_i * s_i + mean_i * mean_i * n
    var_j = s_jj - 2 * mean_j * s_j + mean_j * mean_j * n
    return -torch.mean(cross * cross / (var_i * var_j + 1e-5))


NCC_SHAPE = {"fixed": [1, 1, NCC_SIZE, NCC_SIZE, NCC_SIZE], "moving": [1, 1, NCC_SIZE, NCC_SIZE, NCC_SIZE]}


@register("c_ncc_vxm_fwd_bwd", "VoxelMorph local NCC (window 9, ones-kernel conv3d box sums, zero padding 4) on "
                               "(1,1,128,128,128), forward + backward, grad of the moving image only")
def c_ncc_vxm_fwd_bwd():
    fixed, moving = ncc_operands()
    moving.requires_grad_(True)

    def run():
        voxelmorph_ncc(fixed, moving).backward()

    return Case(run=run, prep=drop_grads(moving), shape=NCC_SHAPE, voxels=NCC_SIZE ** 3,
                meta={"window": NCC_WINDOW})


@register("c_lncc_monai_fwd_bwd", "monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=9, "
                                  "kernel_type='rectangular') on (1,1,128,128,128), forward + backward, grad of "
                                  "the moving image only")
def c_lncc_monai_fwd_bwd():
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    fixed, moving = ncc_operands()
    moving.requires_grad_(True)
    lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=NCC_WINDOW, kernel_type="rectangular")

    def run():
        lncc(moving, fixed).backward()

    return Case(run=run, prep=drop_grads(moving), shape=NCC_SHAPE, voxels=NCC_SIZE ** 3,
                meta={"window": NCC_WINDOW})


# ---------------------------------------------------------------------------------------------------------------
# (d) bending energy of a (1,3,128³) DDF ~ N(0,1), forward + backward.
# ---------------------------------------------------------------------------------------------------------------
BENDING_SIZE = 128
BENDING_SHAPE = {"ddf": [1, 3, BENDING_SIZE, BENDING_SIZE, BENDING_SIZE]}


def bending_operand():
    """The DDF of workload (d), a leaf that requires grad."""
    import torch

    ddf = torch.randn((1, 3) + (BENDING_SIZE,) * 3, generator=seeded(3))
    return ddf.requires_grad_(True)


def central_difference(f, axis):
    """DeepReg's first-order central difference (f[i+1] − f[i−1]) / 2 along spatial `axis` (0, 1, 2), which also
    crops one voxel off both ends of every spatial axis.

    # Shapes
    (N, C, D, H, W) -> (N, C, D−2, H−2, W−2)
    """
    inner = [slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1)]
    ahead, behind = list(inner), list(inner)
    ahead[2 + axis] = slice(2, None)
    behind[2 + axis] = slice(None, -2)
    return (f[tuple(ahead)] - f[tuple(behind)]) / 2


def deepreg_bending_energy(ddf):
    """DeepReg's bending energy: second derivatives as compositions of central differences (interior (D−4)³),
    energy = mean(f_dd² + f_hh² + f_ww² + 2·f_dh² + 2·f_dw² + 2·f_hw²) over batch, channels and voxels.

    # Shapes
    ddf (N, 3, D, H, W) -> scalar
    """
    import torch

    first = [central_difference(ddf, a) for a in range(3)]
    pure = [central_difference(first[a], a) for a in range(3)]
    mixed = [central_difference(first[0], 1), central_difference(first[0], 2), central_difference(first[1], 2)]
    f_dd, f_hh, f_ww = pure
    f_dh, f_dw, f_hw = mixed
    energy = f_dd ** 2 + f_hh ** 2 + f_ww ** 2 + 2 * f_dh ** 2 + 2 * f_dw ** 2 + 2 * f_hw ** 2
    return torch.mean(energy)


@register("d_bending_deepreg_fwd_bwd", "DeepReg bending energy (composed first-order central differences, interior "
                                       "(D-4)^3, mean) of a (1,3,128,128,128) ddf, forward + backward")
def d_bending_deepreg_fwd_bwd():
    ddf = bending_operand()

    def run():
        deepreg_bending_energy(ddf).backward()

    return Case(run=run, prep=drop_grads(ddf), shape=BENDING_SHAPE, voxels=BENDING_SIZE ** 3)


@register("d_bending_monai_fwd_bwd", "monai.losses.BendingEnergyLoss(normalize=False) of a (1,3,128,128,128) ddf, "
                                     "forward + backward")
def d_bending_monai_fwd_bwd():
    from monai.losses import BendingEnergyLoss

    ddf = bending_operand()
    bending = BendingEnergyLoss(normalize=False)

    def run():
        bending(ddf).backward()

    return Case(run=run, prep=drop_grads(ddf), shape=BENDING_SHAPE, voxels=BENDING_SIZE ** 3)


# ---------------------------------------------------------------------------------------------------------------
# (e) one MONAI VoxelMorph training step: UNet encoder 16,32,32,32, decoder 32,32,32,32,32,16,16 (327,331
# parameters), MSE + 0.01·Grad-L2, Adam(1e-4). (f) one MONAI LocalNet step (1,500,400 parameters), Warp,
# LNCC(9) + 0.5·bending, Adam(1e-4).
# ---------------------------------------------------------------------------------------------------------------
VXM_UNET_CHANNELS = (16, 32, 32, 32, 32, 32, 32, 32)
VXM_PARAMS = 327_331
LOCALNET_PARAMS = 1_500_400


def voxelmorph_grad_l2(ddf):
    """VoxelMorph's Grad('l2') regulariser: the mean squared forward difference along each spatial axis,
    averaged over the three axes.

    # Shapes
    ddf (N, 3, D, H, W) -> scalar
    """
    import torch

    total = 0.0
    for axis in (2, 3, 4):
        n = ddf.shape[axis]
        diff = ddf.narrow(axis, 1, n - 1) - ddf.narrow(axis, 0, n - 1)
        total = total + torch.mean(diff * diff)
    return total / 3.0


def parameter_count(net):
    """Number of scalars in the parameters of `net`."""
    return sum(p.numel() for p in net.parameters())


def require_parameter_count(net, expected, what):
    """The workload is defined by its network: a MONAI version that builds another one must not be timed."""
    got = parameter_count(net)
    if got != expected:
        raise RuntimeError(f"{what}: {got} parameters, the workload defines {expected}; the installed MONAI builds "
                           f"a different network (see benches/peer/requirements.txt)")
    return got


def voxelmorph_step(size, integration_steps):
    """Workload (e): one MONAI VoxelMorph training step on a (1,2,size³) pair."""
    import torch
    from monai.networks.nets import VoxelMorph, VoxelMorphUNet

    torch.manual_seed(0)
    unet = VoxelMorphUNet(spatial_dims=3, in_channels=2, unet_out_channels=32, channels=VXM_UNET_CHANNELS,
                          final_conv_channels=(16, 16))
    net = VoxelMorph(backbone=unet, integration_steps=integration_steps, half_res=False, spatial_dims=3)
    params = require_parameter_count(net, VXM_PARAMS, "VoxelMorph")
    net.train()
    adam = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = seeded(4)
    volume = (1, 1) + (size,) * 3
    moving = torch.rand(volume, generator=gen)
    fixed = torch.rand(volume, generator=gen)

    def run():
        adam.zero_grad(set_to_none=True)
        warped, ddf = net(moving, fixed)
        loss = torch.mean((warped - fixed) ** 2) + 0.01 * voxelmorph_grad_l2(ddf)
        loss.backward()
        adam.step()

    convs = [[m.in_channels, m.out_channels] for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    return Case(run=run, shape={"input": [1, 2, size, size, size]}, steps=1, voxels=size ** 3,
                skip_if_first_step_over_s=20.0,
                meta={"model": "monai.networks.nets.VoxelMorph(VoxelMorphUNet)", "params": params,
                      "integration_steps": integration_steps, "unet_channels": list(VXM_UNET_CHANNELS),
                      "final_conv_channels": [16, 16], "conv3d_in_out": convs,
                      "warp": "monai Warp(bilinear, zeros), grid_sample align_corners=True",
                      "loss": "mean((warped-fixed)^2) + 0.01*GradL2(ddf)", "optimizer": "Adam(lr=1e-4)"})


@register("e_vxm_train_64", "one MONAI VoxelMorph training step at (1,2,64,64,64), DDF output "
                            "(integration_steps=0), MSE + 0.01*GradL2, Adam")
def e_vxm_train_64():
    return voxelmorph_step(64, 0)


@register("e_vxm_train_96", "one MONAI VoxelMorph training step at (1,2,96,96,96), DDF output; skipped if the "
                            "first warm-up step takes over 20 s")
def e_vxm_train_96():
    return voxelmorph_step(96, 0)


@register("e_vxm_train_64_int7", "one MONAI VoxelMorph training step at (1,2,64,64,64) with 7 scaling-and-squaring "
                                 "integration steps")
def e_vxm_train_64_int7():
    return voxelmorph_step(64, 7)


@register("f_localnet_train_64", "one MONAI LocalNet training step (num_channel_initial 16, extract_levels 0-3) at "
                                 "(1,2,64,64,64): Warp, LNCC(9) + 0.5*bending, Adam")
def f_localnet_train_64():
    import torch
    from monai.losses import BendingEnergyLoss, LocalNormalizedCrossCorrelationLoss
    from monai.networks.blocks import Warp
    from monai.networks.nets import LocalNet

    torch.manual_seed(0)
    size = 64
    net = LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=16,
                   extract_levels=(0, 1, 2, 3))
    params = require_parameter_count(net, LOCALNET_PARAMS, "LocalNet")
    net.train()
    warp = Warp()
    lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=9, kernel_type="rectangular")
    bending = BendingEnergyLoss()
    adam = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = seeded(5)
    volume = (1, 1) + (size,) * 3
    moving = torch.rand(volume, generator=gen)
    fixed = torch.rand(volume, generator=gen)
    pair = torch.cat([moving, fixed], dim=1)

    def run():
        adam.zero_grad(set_to_none=True)
        ddf = net(pair)
        loss = lncc(warp(moving, ddf), fixed) + 0.5 * bending(ddf)
        loss.backward()
        adam.step()

    return Case(run=run, shape={"input": [1, 2, size, size, size]}, steps=1, voxels=size ** 3,
                skip_if_first_step_over_s=60.0,
                meta={"model": "monai.networks.nets.LocalNet", "params": params,
                      "warp": "monai Warp() defaults: bilinear, padding border, grid_sample align_corners=True",
                      "loss": "LNCC(9, rectangular) + 0.5*BendingEnergyLoss()", "optimizer": "Adam(lr=1e-4)"})


# ---------------------------------------------------------------------------------------------------------------
# (g) HyperMorph 2-D: VoxelMorph's VxmDense U-Net (int_steps 0) whose every U-Net conv is generated per sample from
# the tutorial hypernetwork h(λ) (1 -> 32 -> 64 -> 128 -> 128, ReLU) by its own linear heads, as neurite's
# HyperConv2DFromDense; the flow conv is a plain trained layer. HyperMorph exists only in TensorFlow, so the
# peer is this PyTorch re-expression of it.
# ---------------------------------------------------------------------------------------------------------------
HM_SHAPE = (192, 160)
HM_PARAMS = 14_072_818
# (in, out) of the generated 3x3 convs in order: encoder, decoder, final convs (VoxelMorph's default features).
HM_ENCODER = ((2, 16), (16, 32), (32, 32), (32, 32))
HM_DECODER = ((32, 32), (64, 32), (64, 32), (64, 32))
HM_FINAL = ((48, 32), (32, 16), (16, 16))


def hypermorph_2d():
    """The HyperMorph 2-D network as a torch module; forward(moving, fixed, lam) -> (moved, flow)."""
    import math

    import torch
    import torch.nn.functional as F
    from torch import nn

    def glorot(*shape):
        fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[0])
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))

    class HyperConv(nn.Module):
        """A 3x3 conv whose kernel and bias are linear functions of h: kernel = reshape(h Wk + bk)."""

        def __init__(self, cin, cout, units):
            super().__init__()
            self.cin, self.cout = cin, cout
            n = 9 * cin * cout
            self.wk, self.bk = glorot(units, n), glorot(n)
            self.wb, self.bb = glorot(units, cout), glorot(cout)

        def forward(self, x, h):
            kernel = torch.addmm(self.bk, h, self.wk).view(self.cout, self.cin, 3, 3)
            bias = torch.addmm(self.bb, h, self.wb).view(self.cout)
            return F.leaky_relu(F.conv2d(x, kernel, bias, padding=1), 0.2)

    class HyperMorph2d(nn.Module):
        def __init__(self):
            super().__init__()
            widths = (1, 32, 64, 128, 128)
            self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
            for layer in self.mlp:
                layer.weight = glorot(layer.out_features, layer.in_features)
                nn.init.zeros_(layer.bias)
            units = widths[-1]
            self.encoder = nn.ModuleList(HyperConv(a, b, units) for a, b in HM_ENCODER)
            self.decoder = nn.ModuleList(HyperConv(a, b, units) for a, b in HM_DECODER)
            self.final = nn.ModuleList(HyperConv(a, b, units) for a, b in HM_FINAL)
            self.flow = nn.Conv2d(16, 2, 3, padding=1)
            nn.init.normal_(self.flow.weight, std=1e-5)
            nn.init.zeros_(self.flow.bias)
            ys, xs = torch.meshgrid(torch.arange(HM_SHAPE[0]), torch.arange(HM_SHAPE[1]), indexing="ij")
            self.register_buffer("grid", torch.stack([ys, xs]).float()[None])

        def forward(self, moving, fixed, lam):
            h = lam
            for layer in self.mlp:
                h = F.relu(layer(h))
            x = torch.cat([moving, fixed], 1)
            skips = []
            for conv in self.encoder:
                x = conv(x, h)
                skips.append(x)
                x = F.max_pool2d(x, 2)
            for conv in self.decoder:
                x = conv(x, h)
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = torch.cat([x, skips.pop()], 1)
            for conv in self.final:
                x = conv(x, h)
            flow = self.flow(x)
            # Pull warp in pixels, clamped at the border (the TF SpatialTransformer without fill_value).
            where = self.grid + flow
            size = torch.tensor(HM_SHAPE, dtype=where.dtype).view(1, 2, 1, 1)
            normalised = 2.0 * where / (size - 1) - 1.0
            grid = normalised.flip(1).permute(0, 2, 3, 1)
            moved = F.grid_sample(moving, grid, mode="bilinear", padding_mode="border", align_corners=True)
            return moved, flow

    return HyperMorph2d()


def hypermorph_grad_l2(flow):
    """VoxelMorph's Grad('l2') in 2-D: squared forward differences, mean per axis, averaged over the axes."""
    import torch

    dy = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    dx = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    return (torch.mean(dy * dy) + torch.mean(dx * dx)) / 2.0


def hypermorph_case(train):
    import torch

    torch.manual_seed(0)
    net = hypermorph_2d()
    params = require_parameter_count(net, HM_PARAMS, "HyperMorph 2-D")
    gen = seeded(7)
    moving = torch.rand((1, 1) + HM_SHAPE, generator=gen)
    fixed = torch.rand((1, 1) + HM_SHAPE, generator=gen)
    meta = {"model": "HyperMorph 2-D (VxmDense int_steps 0, tutorial hypernetwork, plain flow conv)",
            "params": params, "loss": "(1-λ)·mean((moved-fixed)²)/0.05² + λ·GradL2(flow)",
            "optimizer": "Adam(lr=1e-4, eps=1e-7)"}
    if train:
        net.train()
        adam = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1e-7)
        lam_gen = seeded(8)

        def run():
            adam.zero_grad(set_to_none=True)
            lam = torch.rand((1, 1), generator=lam_gen)
            moved, flow = net(moving, fixed, lam)
            l = lam[0, 0]
            loss = (1 - l) * torch.mean((moved - fixed) ** 2) / 0.05 ** 2 + l * hypermorph_grad_l2(flow)
            loss.backward()
            adam.step()

        return Case(run=run, shape={"input": [1, 2, *HM_SHAPE]}, steps=1, voxels=HM_SHAPE[0] * HM_SHAPE[1],
                    meta=meta)
    net.eval()
    lam = torch.full((1, 1), 0.5)

    def run():
        with torch.no_grad():
            net(moving, fixed, lam)

    return Case(run=run, shape={"input": [1, 2, *HM_SHAPE]}, voxels=HM_SHAPE[0] * HM_SHAPE[1], meta=meta)


@register("g_hypermorph_2d_train", "one HyperMorph 2-D training step at (1,2,192,160): tutorial hypernetwork over λ, "
                                   "every U-Net conv generated, plain flow conv, (1-λ)·MSE/0.05² + λ·GradL2, Adam")
def g_hypermorph_2d_train():
    return hypermorph_case(train=True)


@register("g_hypermorph_2d_predict", "HyperMorph 2-D forward only (no grad) at λ = 0.5, (1,2,192,160)")
def g_hypermorph_2d_predict():
    return hypermorph_case(train=False)


# ---------------------------------------------------------------------------------------------------------------
# (h) atlalign's supervised networks (Keras in atlalign 0.6.2; ported to PyTorch here, Keras' default init and
# RMSprop defaults) at atlalign's 320 x 456: the local U-Net trained on both orders of the pair (compute_inv) and
# the global affine network. Fields channel 0 = dx (columns), channel 1 = dy (rows), as atlalign's deltas_xy.
# ---------------------------------------------------------------------------------------------------------------
ATL_SHAPE = (320, 456)
ATL_LOCAL_PARAMS = 192578
ATL_GLOBAL_PARAMS = 237630


def keras_init(module):
    """Keras' defaults for a conv / dense layer: Glorot-uniform kernel, zero bias."""
    import torch

    torch.nn.init.xavier_uniform_(module.weight)
    torch.nn.init.zeros_(module.bias)
    return module


def keras_rmsprop(params):
    """Keras' 'rmsprop': lr 1e-3, rho 0.9, epsilon 1e-7, no momentum, not centred."""
    import torch

    return torch.optim.RMSprop(params, lr=1e-3, alpha=0.9, eps=1e-7, momentum=0.0, centered=False)


def atlalign_warp(image, dvf):
    """Bilinear pull warp out(p) = image(p + dvf(p)), zeros outside (tfa's resampler), dvf x first."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=image.dtype), torch.arange(w, dtype=image.dtype), indexing="ij")
    x = (xx + dvf[:, 0]) / (w - 1) * 2 - 1
    y = (yy + dvf[:, 1]) / (h - 1) * 2 - 1
    return F.grid_sample(image, torch.stack([x, y], -1), mode="bilinear", padding_mode="zeros", align_corners=True)


def atlalign_vector_distance(truth, dvf):
    """atlalign's vector_distance: mean of sqrt(|dx_err^2 + dy_err^2 + 0.001|)."""
    import torch

    d = dvf - truth
    return torch.sqrt(torch.abs(d[:, 0] ** 2 + d[:, 1] ** 2 + 0.001)).mean()


def atlalign_local_net():
    """atlalign's supervised_model_factory with the docs' best settings (end_filters (64, 64))."""
    import torch
    import torch.nn.functional as F

    class Local(torch.nn.Module):
        def __init__(self):
            super().__init__()
            conv = lambda a, b, k=3: keras_init(torch.nn.Conv2d(a, b, k, padding=k // 2 if k % 2 else 0))  # noqa: E731
            self.start = torch.nn.ModuleList([conv(2, 16)])
            self.down = torch.nn.ModuleList([conv(16, 16), conv(16, 32), conv(32, 32), conv(32, 32)])
            self.middle = torch.nn.ModuleList([conv(32, 32)])
            skips = [16, 16, 32, 32]
            self.up_a = torch.nn.ModuleList([conv(32, 32) for _ in range(4)])
            self.up_b = torch.nn.ModuleList([conv(32 + c, 32) for c in reversed(skips)])
            self.end = torch.nn.ModuleList([conv(32, 64), conv(64, 64)])
            self.flow = conv(64, 2, 2)

        def forward(self, pair):
            leaky = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
            x = pair[:, :, :, 4:-4]
            for m in self.start:
                x = leaky(m(x))
            skips = [x]
            for i, m in enumerate(self.down):
                x = leaky(m(F.max_pool2d(x, 2)))
                if i < len(self.down) - 1:
                    skips.append(x)
            for m in self.middle:
                x = leaky(m(x))
            for a, b, skip in zip(self.up_a, self.up_b, reversed(skips)):
                x = leaky(a(F.interpolate(x, scale_factor=2, mode="nearest")))
                x = leaky(b(torch.cat([x, skip], 1)))
            for m in self.end:
                x = leaky(m(x))
            x = self.flow(F.pad(x, (0, 1, 0, 1)))
            return F.pad(x, (4, 4, 0, 0))

    return Local()


def atlalign_global_net():
    """atlalign's supervised_global_model_factory with the docs' best settings."""
    import torch
    import torch.nn.functional as F

    class Global(torch.nn.Module):
        def __init__(self, filters=(16, 16, 32, 32, 32), dense=40):
            super().__init__()
            self.convs = torch.nn.ModuleList()
            c, h, w = 2, *ATL_SHAPE
            for f in filters:
                self.convs.append(keras_init(torch.nn.Conv2d(c, f, 3, padding=1)))
                self.convs.append(keras_init(torch.nn.Conv2d(f, f, 3, padding=1)))
                c, h, w = f, h // 2, w // 2
            self.dense = keras_init(torch.nn.Linear(c * h * w, dense))
            self.head = torch.nn.Linear(dense, 6)
            torch.nn.init.zeros_(self.head.weight)
            with torch.no_grad():
                self.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
            hh, ww = ATL_SHAPE
            yy, xx = torch.meshgrid(torch.arange(hh, dtype=torch.float32), torch.arange(ww, dtype=torch.float32),
                                    indexing="ij")
            self.register_buffer("grid", torch.stack([xx.flatten(), yy.flatten(), torch.ones(hh * ww)], 0))

        def forward(self, pair):
            x = pair
            for i in range(0, len(self.convs), 2):
                x = F.max_pool2d(F.relu(self.convs[i + 1](F.relu(self.convs[i](x)))), 2)
            a = self.head(self.dense(x.permute(0, 2, 3, 1).flatten(1))).view(-1, 2, 3)
            return (torch.matmul(a, self.grid) - self.grid[:2]).view(-1, 2, *ATL_SHAPE)

    return Global()


def atlalign_inputs(batch, seed):
    """Reference, moving and target images U(0, 1); true fields U(-4, 4) px."""
    import torch

    gen = seeded(seed)
    image = lambda: torch.rand((batch, 1, *ATL_SHAPE), generator=gen)  # noqa: E731
    field = lambda: (torch.rand((batch, 2, *ATL_SHAPE), generator=gen) - 0.5) * 8.0  # noqa: E731
    return image(), image(), image(), field(), field()


@register("h_atlalign_local_train", "one atlalign local U-Net training step at (1,2,320,456) (docs' best: "
                                    "end_filters (64,64), compute_inv): both orders of the pair, MSE image + "
                                    "vector_distance forward + inverse, Keras RMSprop")
def h_atlalign_local_train():
    import torch

    torch.manual_seed(0)
    net = atlalign_local_net()
    params = require_parameter_count(net, ATL_LOCAL_PARAMS, "atlalign local")
    net.train()
    opt = keras_rmsprop(net.parameters())
    ref, mov, target, deltas, inv_deltas = atlalign_inputs(1, 9)
    x_rm = torch.cat([ref, mov], 1)
    x_mr = torch.cat([mov, ref], 1)

    def run():
        opt.zero_grad(set_to_none=True)
        dvf = net(x_rm)
        inv_dvf = net(x_mr)
        loss = (torch.mean((atlalign_warp(mov, dvf) - target) ** 2) + atlalign_vector_distance(deltas, dvf)
                + atlalign_vector_distance(inv_deltas, inv_dvf))
        loss.backward()
        opt.step()

    h, w = ATL_SHAPE
    return Case(run=run, shape={"input": [1, 2, h, w]}, steps=1, voxels=h * w,
                meta={"model": "atlalign 0.6.2 supervised_model_factory (docs' best), ported", "params": params,
                      "loss": "mean((warp(mov, dvf) - target)^2) + vector_distance(deltas, dvf) + "
                              "vector_distance(inv_deltas, net(mov, ref))", "optimizer": "Keras RMSprop"})


@register("h_atlalign_global_train", "one atlalign global network training step at (4,2,320,456) (docs' best: "
                                     "filters (16,16,32,32,32), dense (40,)): Affine2DVF, warp, MSE + "
                                     "0.1*vector_distance, Keras RMSprop")
def h_atlalign_global_train():
    import torch

    torch.manual_seed(0)
    net = atlalign_global_net()
    params = require_parameter_count(net, ATL_GLOBAL_PARAMS, "atlalign global")
    net.train()
    opt = keras_rmsprop(net.parameters())
    ref, mov, target, deltas, _ = atlalign_inputs(4, 10)
    pair = torch.cat([ref, mov], 1)

    def run():
        opt.zero_grad(set_to_none=True)
        dvf = net(pair)
        loss = torch.mean((atlalign_warp(mov, dvf) - target) ** 2) + 0.1 * atlalign_vector_distance(deltas, dvf)
        loss.backward()
        opt.step()

    h, w = ATL_SHAPE
    return Case(run=run, shape={"input": [4, 2, h, w]}, steps=1, voxels=4 * h * w,
                meta={"model": "atlalign 0.6.2 supervised_global_model_factory (docs' best), ported",
                      "params": params, "loss": "mean((warp(mov, dvf) - target)^2) + 0.1*vector_distance",
                      "optimizer": "Keras RMSprop"})


# ---------------------------------------------------------------------------------------------------------------
# (z) the CPU's practical float32 matrix rate: C = A·B with A, B (4096, 4096) ~ N(0,1).
# ---------------------------------------------------------------------------------------------------------------
@register("z_sgemm_4096", "reference: torch.mm of two (4096,4096) float32 matrices (sgemm)")
def z_sgemm_4096():
    import torch

    n = 4096
    gen = seeded(6)
    a = torch.randn((n, n), generator=gen)
    b = torch.randn((n, n), generator=gen)
    c = torch.empty((n, n))

    def run():
        torch.mm(a, b, out=c)

    flops = 2 * n ** 3
    return Case(run=run, shape={"A": [n, n], "B": [n, n]}, flops=flops, meta={"flops": flops})


# ---------------------------------------------------------------------------------------------------------------
# Measuring one workload (inside its own process).
# ---------------------------------------------------------------------------------------------------------------
def mib(kib):
    """KiB to MiB, one decimal."""
    return round(kib / 1024.0, 1)


def resident_kib():
    """VmRSS of this process, KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmRSS line")


def cpu_ticks():
    """The machine-wide CPU tick counters of /proc/stat (user, nice, system, idle, iowait, irq, softirq, steal…)."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:]]


def process_cpu_seconds():
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    """Seconds `fn()` takes, by time.perf_counter()."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(workload: Workload, opts) -> dict:
    """Builds `workload`, warms it up, times it by the rules in the module doc and returns its JSON record."""
    import torch

    torch.set_num_threads(opts.threads)
    rss_import = resident_kib()
    case = workload.build()
    rss_setup = resident_kib()
    record = {"name": workload.name, "desc": workload.description, "shape": case.shape, "dtype": "float32",
              "batch": 1, "threads": torch.get_num_threads()}

    warmup = []
    for i in range(opts.warmup):
        if case.prep:
            case.prep()
        warmup.append(timed(case.run))
        limit = case.skip_if_first_step_over_s
        if i == 0 and limit is not None and warmup[0] > limit:
            record.update(skipped=True, reason=f"first step {warmup[0]:.1f} s > {limit} s",
                          warmup_ms=[round(s * 1e3, 2) for s in warmup])
            return record

    samples: List[float] = []
    load_start = os.getloadavg()[0]
    cpu_start, ticks_start = process_cpu_seconds(), cpu_ticks()
    loop_start = time.perf_counter()
    while True:
        if case.prep:
            case.prep()
        samples.append(timed(case.run))
        elapsed = time.perf_counter() - loop_start
        if len(samples) >= opts.max_runs or (len(samples) >= opts.min_runs and elapsed >= opts.min_time):
            break
    wall = time.perf_counter() - loop_start
    cpu = process_cpu_seconds() - cpu_start
    ticks = [b - a for a, b in zip(ticks_start, cpu_ticks())]

    median = statistics.median(samples)
    record.update(median_ms=round(median * 1e3, 3), min_ms=round(min(samples) * 1e3, 3),
                  max_ms=round(max(samples) * 1e3, 3), n_runs=len(samples),
                  samples_ms=[round(s * 1e3, 2) for s in samples], warmup_ms=[round(s * 1e3, 2) for s in warmup])
    if case.flops is not None:
        record["gflop_per_s"] = round(case.flops / median / 1e9, 2)
    if case.voxels is not None:
        record["voxels_per_s"] = round(case.voxels / median, 1)
        record["mvoxels_per_s"] = round(case.voxels / median / 1e6, 3)
    if case.steps is not None:
        record["steps_per_s"] = round(case.steps / median, 4)
    # Diagnostics of the timed loop: cores this process kept busy (2.0 = both), the share of the machine's ticks
    # the hypervisor stole, and the machine's 1-minute load average at its start and end.
    record["cpu_util_cores"] = round(cpu / wall, 2) if wall > 0 else None
    record["steal_pct"] = round(100.0 * ticks[7] / sum(ticks), 2) if len(ticks) > 7 and sum(ticks) > 0 else None
    record["loadavg_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    record.update(rss_after_import_mib=mib(rss_import), rss_after_setup_mib=mib(rss_setup),
                  peak_rss_mib=mib(peak), peak_rss_minus_import_mib=mib(peak - rss_import), meta=case.meta)
    return record


def environment(opts) -> dict:
    """The `_env` line: versions, threads and CPU, so that a result file says what it was measured with."""
    import platform

    import numpy
    import torch

    torch.set_num_threads(opts.threads)
    record = {"name": "_env", "python": platform.python_version(), "torch": torch.__version__,
              "numpy": numpy.__version__, "threads_requested": opts.threads,
              "torch_num_threads": torch.get_num_threads(),
              "torch_num_interop_threads": torch.get_num_interop_threads(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "mkldnn": torch.backends.mkldnn.is_available(),
              "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS")}
    try:
        import monai

        record["monai"] = monai.__version__
    except ImportError as err:
        record["monai"] = f"not installed: {err}"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                record["cpu_model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                record["avx512_flags"] = sorted(f for f in flags if f.startswith("avx512"))
                record["amx_flags"] = sorted(f for f in flags if f.startswith("amx"))
                break
    record["cpus"] = os.cpu_count()
    return record


# ---------------------------------------------------------------------------------------------------------------
# --check: the hand-written formulas above against known values and against MONAI, on small volumes.
# ---------------------------------------------------------------------------------------------------------------
def quadratic_field(size):
    """The field (d², h·w, 0) in voxel coordinates, whose bending energy is (4 + 2 + 0) / 3 = 2 at every voxel.

    # Shapes
    -> (1, 3, size, size, size)
    """
    import torch

    d, h, w = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij")
    return torch.stack([d * d, h * w, torch.zeros_like(d)]).unsqueeze(0)


def linear_w_field(size):
    """The field (0, 0, w): displacement w along W only.

    # Shapes
    -> (1, 3, size, size, size)
    """
    import torch

    field = torch.zeros((1, 3, size, size, size))
    field[:, 2] = torch.arange(size, dtype=torch.float32)
    return field


def self_checks():
    """(name, got, expected, tolerance) for each check of the workloads' own formulas."""
    import torch
    from monai.losses import BendingEnergyLoss, LocalNormalizedCrossCorrelationLoss
    from monai.networks.blocks import Warp

    gen = seeded(7)
    size = 24
    fixed = torch.rand((1, 1, size, size, size), generator=gen)
    moving = 0.7 * fixed + 0.3 * torch.rand((1, 1, size, size, size), generator=gen)
    image = torch.rand((1, 1, size, size, size), generator=gen)
    ddf = torch.rand((1, 3, size, size, size), generator=gen) * 4.0 - 2.0
    shifted = torch.zeros((1, 3, size, size, size))
    shifted[:, 2] = 1.0  # one voxel along W: out[..., w] = image[..., w + 1]
    warp = DdfWarp((size,) * 3)
    monai_lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=NCC_WINDOW, kernel_type="rectangular")
    return [
        ("DeepReg bending energy of (d², h·w, 0)", deepreg_bending_energy(quadratic_field(size)).item(), 2.0, 1e-4),
        ("MONAI bending energy of (d², h·w, 0)", BendingEnergyLoss()(quadratic_field(size)).item(), 2.0, 1e-4),
        ("VoxelMorph NCC minus MONAI LNCC", voxelmorph_ncc(fixed, moving).item()
         - monai_lncc(moving, fixed).item(), 0.0, 1e-4),
        ("warp minus MONAI Warp(zeros), max |·|", (warp(image, ddf) - Warp(padding_mode="zeros")(image, ddf))
         .abs().max().item(), 0.0, 1e-5),
        ("warp by +1 along W minus the shifted image, max |·|", (warp(image, shifted)[..., :-1]
                                                                 - image[..., 1:]).abs().max().item(), 0.0, 1e-5),
        # Forward differences of (0, 0, w): 1 along W in one channel of three, 0 elsewhere -> (1/3) / 3 axes.
        ("Grad-L2 of the linear field (0, 0, w)", voxelmorph_grad_l2(linear_w_field(size)).item(), 1.0 / 9.0, 1e-6),
    ]


def run_self_checks():
    """Prints each self-check; 1 if any failed, else 0."""
    failures = 0
    for name, got, expected, tolerance in self_checks():
        ok = abs(got - expected) <= tolerance
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {got:.7g} (expected {expected:.7g} ± {tolerance:g})")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------------------------
# The parent: one fresh process per workload, one JSON line each.
# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv):
    """Command-line options; --quick overrides the timing options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the workload names with their definitions")
    ap.add_argument("--only", help="comma-separated workload names (default: all)")
    ap.add_argument("--out", help="append the JSON lines to this file too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations before timing")
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds of timed runs at least")
    ap.add_argument("--max-runs", type=int, default=50)
    ap.add_argument("--quick", action="store_true",
                    help="no warm-up and 1 timed run per workload (so no step is skipped for its first warm-up "
                         "time): proves each workload runs; its times are not results")
    ap.add_argument("--check", action="store_true",
                    help="check the hand-written losses and the warp against known values and MONAI, then exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--env-only", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.warmup, opts.min_runs, opts.min_time, opts.max_runs = 0, 1, 0.0, 1
    for flag in ("threads", "min_runs", "max_runs"):
        if getattr(opts, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1")
    if opts.warmup < 0 or opts.min_time < 0:
        ap.error("--warmup and --min-time must not be negative")
    return opts


def selected(only):
    """The workload names --only asks for (all when absent), or exit with the unknown ones named."""
    if not only:
        return list(REGISTRY)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        sys.exit(f"bench_peer.py: unknown workload(s) {', '.join(unknown)} in --only; known: "
                 f"{', '.join(REGISTRY)}")
    return names


def run_in_fresh_process(name, extra_args, opts):
    """Runs this script on one job in a new interpreter; returns its JSON lines, or one error line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(opts.threads), MKL_NUM_THREADS=str(opts.threads),
               PYTHONWARNINGS="ignore")
    timing = ["--threads", str(opts.threads), "--warmup", str(opts.warmup), "--min-runs", str(opts.min_runs),
              "--min-time", str(opts.min_time), "--max-runs", str(opts.max_runs)]
    done = subprocess.run([sys.executable, os.path.abspath(__file__)] + timing + extra_args, env=env,
                          capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        return lines, True
    failure = {"name": name, "error": f"exit status {done.returncode}", "stderr_tail": done.stderr[-2000:]}
    return [json.dumps(failure)], False


def main(argv=None):
    """Entry point; returns the exit status."""
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if opts.list:
        for w in REGISTRY.values():
            print(f"{w.name}: {w.description}")
        return 0
    if opts.check:
        import warnings

        import torch

        warnings.simplefilter("ignore")
        torch.set_num_threads(opts.threads)
        return run_self_checks()
    if opts.child:
        if opts.child not in REGISTRY:
            sys.exit(f"bench_peer.py: unknown workload {opts.child}")
        print(json.dumps(measure(REGISTRY[opts.child], opts)), flush=True)
        return 0
    if opts.env_only:
        print(json.dumps(environment(opts)), flush=True)
        return 0

    names = selected(opts.only)
    sink = open(opts.out, "a") if opts.out else None
    failed = []
    try:
        for name, job in [("_env", ["--env-only"])] + [(n, ["--child", n]) for n in names]:
            lines, ok = run_in_fresh_process(name, job, opts)
            if not ok:
                failed.append(name)
            for line in lines:
                print(line, flush=True)
                if sink:
                    sink.write(line + "\n")
                    sink.flush()
    finally:
        if sink:
            sink.close()
    if failed:
        print(f"bench_peer.py: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
