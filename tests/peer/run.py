#!/usr/bin/env python3
"""Peer comparison: voxreg's losses, ops and metrics against MONAI, PyTorch and DeepReg's
formulas, on identical inputs, values and gradients, 2D and 3D, f64 and f32.

    python tests/peer/run.py [--markdown FILE] [--keep DIR]

1. writes deterministic inputs (`.npy`, every value exactly representable in f32) and a
   manifest of cases into a temporary folder;
2. runs `cargo run -p voxreg-losses --example peer_eval -- DIR`, which evaluates voxreg on each
   case in f64 and in f32 and writes values and gradients back;
3. evaluates the peers (`peers.py`) in f64 (the reference) and in f32, and prints two tables:
   the cases that must agree, with relative errors, and the documented convention differences,
   with their size by distance from the image border.

Errors are max-norm relative: `max |a − b| / max |b|` over the tensor (the per-sample loss
values, an op's output, or a gradient). The gradient is that of `Σ out · c` for a fixed random
cotangent `c` of the output's shape, with respect to every differentiable input. Exit status 1
if a case that must agree does not (f64: 1e-12; f32: 1e-6, or 4 times the peer's own f32 error
where the formula is ill-conditioned).
"""

import argparse
import datetime
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch

import peers

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED = 23
F64_TOLERANCE = 1e-12
F32_TOLERANCE = 1e-6


def exact_f32(x):
    """Rounds to f32 and back, so the f64 and f32 runs see the same numbers."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


class Inputs:
    """Deterministic input arrays, written once each to the case folder."""

    def __init__(self, folder):
        self.folder = folder
        self.rng = np.random.default_rng(SEED)
        self.arrays = {}

    def add(self, name, array):
        array = exact_f32(array)
        self.arrays[name] = array
        np.save(self.folder / f"{name}.npy", array)
        return name

    def uniform(self, name, shape, lo=0.0, hi=1.0):
        return self.add(name, self.rng.uniform(lo, hi, size=shape))

    def smooth_field(self, name, shape, amplitude):
        """A smooth displacement-like field: low-frequency sinusoids with random phases."""
        n, ndim, *sizes = shape
        grids = np.meshgrid(*[np.arange(s) / s for s in sizes], indexing="ij")
        field = np.zeros(shape)
        for b in range(n):
            for c in range(ndim):
                phase = self.rng.uniform(0, 2 * np.pi, size=ndim)
                wave = np.ones(sizes)
                for a in range(ndim):
                    wave = wave * np.cos(2 * np.pi * grids[a] + phase[a])
                field[b, c] = amplitude * wave
        return self.add(name, field)


class Case:
    """One comparison: a voxreg component or op, its inputs, and the peers it is held to."""

    def __init__(self, cid, kind, dims, inputs, wrt, agree, differ=(), **spec):
        self.id = cid
        self.kind = kind
        self.dims = dims
        self.inputs = list(inputs)  # [(argument name, input file stem)]
        self.wrt = list(wrt)
        self.agree = list(agree)  # [(peer label, fn(**tensors) → tensor)]
        self.differ = list(differ)  # documented differences, same form
        self.spec = spec
        self.dtypes = spec.pop("dtypes", ["f64", "f32"])

    def manifest(self):
        entry = {
            "id": self.id,
            "kind": self.kind,
            "dims": self.dims,
            "inputs": [[name, f"{stem}.npy"] for name, stem in self.inputs],
            "wrt": self.wrt,
            "dtypes": self.dtypes,
        }
        entry.update(self.spec)
        return entry


def loss_fn(f):
    return lambda fixed, moving: f(fixed, moving)


def build_cases(inputs):
    cases = []
    shapes = {
        2: dict(image=(2, 1, 12, 14), label=(2, 2, 12, 14), ddf=(2, 2, 12, 14)),
        3: dict(image=(2, 1, 10, 9, 11), label=(2, 2, 8, 9, 7), ddf=(2, 3, 9, 10, 8)),
    }
    for d in (2, 3):
        s = shapes[d]
        fixed = inputs.uniform(f"fixed{d}", s["image"])
        noise = inputs.rng.uniform(0, 1, size=s["image"])
        moving = inputs.add(f"moving{d}", 0.6 * inputs.arrays[fixed] + 0.4 * noise)
        independent = inputs.uniform(f"independent{d}", s["image"])
        flat = np.where(np.arange(s["image"][-1]) < s["image"][-1] // 2, 0.25, inputs.arrays[fixed])
        flat_fixed = inputs.add(f"flat_fixed{d}", flat)
        flat_moving = inputs.add(f"flat_moving{d}", np.where(flat == 0.25, 0.75, inputs.arrays[moving]))
        pair = [("fixed", fixed), ("moving", moving)]
        image = lambda cid, config, agree, differ=(), pair=pair: cases.append(
            Case(f"{cid}_{d}d", "image_loss", d, pair, ["moving"], agree, differ, config=config)
        )
        image("lncc_rectangular_9", {"name": "lncc"}, [("DeepReg", loss_fn(peers.deepreg_lncc()))])
        image(
            "lncc_triangular_5",
            {"name": "lncc", "kernel_size": 5, "kernel_type": "triangular"},
            [("DeepReg", loss_fn(peers.deepreg_lncc(5, "triangular")))],
        )
        image(
            "lncc_gaussian_7",
            {"name": "lncc", "kernel_size": 7, "kernel_type": "gaussian"},
            [("DeepReg", loss_fn(peers.deepreg_lncc(7, "gaussian")))],
        )
        for kernel, size in (("rectangular", 5), ("triangular", 5), ("triangular", 9), ("gaussian", 7)):
            config = {"name": "lncc", "kernel_size": size, "kernel_type": kernel, "smooth_nr": 0.0, "smooth_dr": 1e-12}
            image(
                f"lncc_{kernel}_{size}_unsmoothed",
                config,
                [
                    ("DeepReg", loss_fn(peers.deepreg_lncc(size, kernel, 0.0, 1e-12))),
                    # MONAI samples its Gaussian kernel in f32 (f64 agreement ~1e-8) and orders LNCC differently.
                    ("MONAI", loss_fn(peers.monai_lncc(size, kernel, 0.0, 1e-12)), 1e-6 if kernel == "gaussian" else 1e-11),
                ],
            )
        image(
            "lncc_triangular_7_unsmoothed",
            {"name": "lncc", "kernel_size": 7, "kernel_type": "triangular", "smooth_nr": 0.0, "smooth_dr": 1e-12},
            [("DeepReg", loss_fn(peers.deepreg_lncc(7, "triangular", 0.0, 1e-12)))],
            [("MONAI (its triangular kernel for 7 is [0, 1, 2, 3, 2, 1, 0])", loss_fn(peers.monai_lncc(7, "triangular", 0.0, 1e-12)))],
        )
        image(
            "lncc_flat_regions",
            {"name": "lncc", "kernel_size": 5},
            [("DeepReg", loss_fn(peers.deepreg_lncc(5)))],
            [("MONAI defaults (smooth_nr 0, var ≥ smooth_dr)", loss_fn(peers.monai_lncc(5, "rectangular", 0.0, 1e-5)))],
            pair=[("fixed", flat_fixed), ("moving", flat_moving)],
        )
        image("ssd", {"name": "ssd"}, [("DeepReg", loss_fn(peers.deepreg_ssd()))])
        image(
            "ssd_scales_gaussian",
            {"name": "ssd", "scales": [0, 1, 2]},
            [("DeepReg", loss_fn(peers.deepreg_ssd([0, 1, 2])))],
        )
        image(
            "ssd_scales_cauchy",
            {"name": "ssd", "scales": 1, "kernel": "cauchy"},
            [("DeepReg", loss_fn(peers.deepreg_ssd(1, "cauchy")))],
        )
        gmi = [("DeepReg", loss_fn(peers.deepreg_gmi())), ("MONAI", loss_fn(peers.monai_gmi()))]
        image("gmi", {"name": "gmi"}, gmi)
        image("gmi_small_mi", {"name": "gmi"}, gmi, pair=[("fixed", fixed), ("moving", independent)])
        image("gncc", {"name": "gncc"}, [("DeepReg", loss_fn(peers.deepreg_gncc()))])
        image("pearson", {"name": "pearson"}, [("atlalign cross_correlation (per sample)", loss_fn(peers.atlalign_pearson()))])
        image("psnr", {"name": "psnr"}, [("atlalign psnr", loss_fn(peers.atlalign_psnr()))])
        if d == 2:
            image("ssim", {"name": "ssim"}, [("atlalign ssim (tf.image.ssim)", loss_fn(peers.atlalign_ssim()))])
            big = [("fixed", inputs.uniform("lpips_fixed", (2, 1, 64, 64))), ("moving", inputs.uniform("lpips_moving", (2, 1, 64, 64)))]
            for net, lin, seed in (("vgg", True, 31), ("alex", True, 32), ("alex", False, 33)):
                made = peers.lpips_case(inputs.folder, net, lin, seed)
                if made is None:
                    continue
                path, peer = made
                model = "net-lin" if lin else "net"
                image(
                    f"perceptual_{model}_{net}",
                    {"name": "perceptual", "weights": str(path), "net": net, "model": model},
                    [(f"lpips {model} {net} (random weights)", loss_fn(peer))],
                    pair=big,
                )
        image("vxm_mse", {"name": "vxm_mse", "image_sigma": 0.05}, [("VoxelMorph", loss_fn(peers.vxm_mse(0.05)))])
        image("vxm_ncc", {"name": "vxm_ncc"}, [("VoxelMorph (torch)", loss_fn(peers.vxm_ncc()))])
        image("vxm_ncc_5", {"name": "vxm_ncc", "win": 5}, [("VoxelMorph (torch)", loss_fn(peers.vxm_ncc(5)))])
        image(
            "vxm_ncc_clamp",
            {"name": "vxm_ncc", "win": 5, "clamp": True},
            [("VoxelMorph (TF)", loss_fn(peers.vxm_ncc(5, clamp=True)))],
        )

        t = inputs.uniform(f"label_fixed{d}", s["label"])
        p = inputs.uniform(f"label_moving{d}", s["label"])
        hard = inputs.add(f"label_hard{d}", inputs.rng.uniform(size=s["label"]) < 0.4)
        near_one = 1 - 10 ** inputs.rng.uniform(-7, -2, size=s["label"])
        near_one[..., 0] = 1.0
        near = inputs.add(f"label_near_one{d}", near_one)
        labels = [("fixed", t), ("moving", p)]
        label = lambda cid, config, agree, pair=labels, wrt=("moving",): cases.append(
            Case(f"{cid}_{d}d", "label_loss", d, pair, wrt, agree, config=config)
        )
        monai_dice = ("MONAI DiceLoss − 1", loss_fn(peers.monai_dice()))
        monai_jaccard = ("MONAI DiceLoss(jaccard) − 1", loss_fn(peers.monai_dice(jaccard=True)))
        label("dice", {"name": "dice"}, [("DeepReg", loss_fn(peers.deepreg_dice())), monai_dice])
        label("vxm_dice", {"name": "vxm_dice"}, [("VoxelMorph", loss_fn(peers.vxm_dice()))])
        label(
            "dice_background_0.2",
            {"name": "dice", "background_weight": 0.2},
            [("DeepReg", loss_fn(peers.deepreg_dice(background_weight=0.2)))],
        )
        label(
            "jaccard",
            {"name": "jaccard"},
            [("DeepReg", loss_fn(peers.deepreg_dice(jaccard=True))), monai_jaccard],
        )
        label(
            "jaccard_background_0.3",
            {"name": "jaccard", "background_weight": 0.3},
            [("DeepReg", loss_fn(peers.deepreg_dice(background_weight=0.3, jaccard=True)))],
        )
        label(
            "dice_binary",
            {"name": "dice", "binary": True},
            [("DeepReg", loss_fn(peers.deepreg_dice(binary=True)))],
            wrt=(),
        )
        label(
            "dice_scales",
            {"name": "dice", "scales": [0, 1]},
            [("DeepReg", loss_fn(peers.multi_scale(peers.deepreg_dice(), [0, 1], "gaussian")))],
        )
        label("cross_entropy", {"name": "cross-entropy"}, [("DeepReg", loss_fn(peers.deepreg_cross_entropy()))])
        label(
            "cross_entropy_background_0.3",
            {"name": "cross-entropy", "background_weight": 0.3},
            [("DeepReg", loss_fn(peers.deepreg_cross_entropy(background_weight=0.3)))],
        )
        label(
            "cross_entropy_near_one",
            {"name": "cross-entropy", "background_weight": 0.3},
            [("DeepReg", loss_fn(peers.deepreg_cross_entropy(background_weight=0.3)))],
            pair=[("fixed", hard), ("moving", near)],
        )
        label("label_ssd", {"name": "ssd"}, [("DeepReg", loss_fn(peers.deepreg_ssd()))])

        ddf = inputs.uniform(f"ddf{d}", s["ddf"], -1.5, 1.5)
        field = [("ddf", ddf)]
        reg = lambda cid, config, agree: cases.append(
            Case(f"{cid}_{d}d", "regularization", d, field, ["ddf"], agree, config=config)
        )
        on_ddf = lambda f: (lambda ddf: f(ddf))
        reg(
            "bending",
            {"name": "bending"},
            [("DeepReg", on_ddf(peers.deepreg_bending()))],
        )
        cases[-1].differ.append(("MONAI (3-point second differences, crop 1)", on_ddf(peers.monai_bending())))
        reg(
            "gradient_l2",
            {"name": "gradient"},
            [("DeepReg", on_ddf(peers.deepreg_gradient())), ("MONAI DiffusionLoss", on_ddf(peers.monai_diffusion()))],
        )
        reg("gradient_l1", {"name": "gradient", "l1": True}, [("DeepReg", on_ddf(peers.deepreg_gradient(l1=True)))])
        reg("vxm_grad_l1", {"name": "vxm_grad"}, [("VoxelMorph", on_ddf(peers.vxm_grad()))])
        reg(
            "vxm_grad_l2_mult",
            {"name": "vxm_grad", "penalty": "l2", "loss_mult": 2.0},
            [("VoxelMorph", on_ddf(peers.vxm_grad("l2", 2.0)))],
        )

        if d == 2:
            truth = inputs.uniform("true_ddf2", s["ddf"], -3.0, 3.0)
            fields = [("true", truth), ("pred", ddf)]
            on_fields = lambda f: (lambda true, pred: f(true, pred))
            field = lambda cid, config, agree: cases.append(
                Case(f"{cid}_{d}d", "field_loss", d, fields, ["pred"], agree, config=config)
            )
            field("vector_distance", {"name": "vector_distance"}, [("atlalign", on_fields(peers.atlalign_vector_distance()))])
            field(
                "vdclip2",
                {"name": "vdclip", "power": 2.0},
                [("atlalign vdclip2 (per sample)", on_fields(peers.atlalign_vdclip(20.0, 2.0)))],
            )
            field(
                "vdclip_threshold_2",
                {"name": "vdclip", "threshold": 2.0, "power": 3.0},
                [("atlalign VDClipper(2, 3) (per sample)", on_fields(peers.atlalign_vdclip(2.0, 3.0)))],
            )
            field("mse_po", {"name": "mse_po"}, [("atlalign", on_fields(peers.atlalign_mse_po()))])
            field(
                "dvf2img_psnr",
                {"name": "dvf2img", "loss": "psnr"},
                [("atlalign DVF2IMG(psnr)", on_fields(peers.atlalign_dvf2img(peers.atlalign_psnr())))],
            )
            field(
                "jacobian_distance",
                {"name": "jacobian_distance"},
                [("atlalign jacobian_distance, as intended", on_fields(peers.atlalign_jacobian_distance()))],
            )

        img = inputs.uniform(f"warp_image{d}", (2, 2) + s["ddf"][2:])
        shift = inputs.uniform(f"warp_ddf{d}", s["ddf"], -3.0, 3.0)
        zero = inputs.add(f"zero_ddf{d}", np.zeros(s["ddf"]))
        warp = [("image", img), ("ddf", shift)]
        at_integers = [("image", img), ("ddf", zero)]
        op = lambda cid, inputs_, wrt, agree, differ=(), **spec: cases.append(
            Case(f"{cid}_{d}d", "op", d, inputs_, wrt, agree, differ, **spec)
        )
        op(
            "warp_linear_zeros",
            warp,
            ["image", "ddf"],
            [("PyTorch grid_sample", lambda image, ddf: peers.torch_warp(image, ddf))],
            [("DeepReg Warping (zero_boundary)", lambda image, ddf: peers.deepreg_warp(image, ddf))],
            op="warp",
            interp="linear",
            padding="zeros",
        )
        op(
            "warp_linear_border",
            warp,
            ["image", "ddf"],
            [("PyTorch grid_sample", lambda image, ddf: peers.torch_warp(image, ddf, padding="border"))],
            op="warp",
            interp="linear",
            padding="border",
        )
        op(
            "warp_nearest_zeros",
            warp,
            ["image"],
            [("PyTorch grid_sample", lambda image, ddf: peers.torch_warp(image, ddf, mode="nearest"))],
            op="warp",
            interp="nearest",
            padding="zeros",
        )
        op(
            "warp_linear_zeros_integer_coordinates",
            at_integers,
            ["image", "ddf"],
            [("PyTorch grid_sample", lambda image, ddf: peers.torch_warp(image, ddf))],
            [("DeepReg Warping (zero_boundary)", lambda image, ddf: peers.deepreg_warp(image, ddf))],
            op="warp",
            interp="linear",
            padding="zeros",
        )
        op(
            "warp_linear_border_integer_coordinates",
            at_integers,
            ["image", "ddf"],
            [],
            [("PyTorch grid_sample", lambda image, ddf: peers.torch_warp(image, ddf, padding="border"))],
            op="warp",
            interp="linear",
            padding="border",
        )
        dvf = inputs.smooth_field(f"dvf{d}", s["ddf"], 2.0)
        op(
            "dvf_to_ddf_7",
            [("dvf", dvf)],
            ["dvf"],
            [("MONAI DVF2DDF(border)", lambda dvf: peers.monai_dvf2ddf(7, "border")(dvf))],
            [
                ("MONAI DVF2DDF (default: zeros)", lambda dvf: peers.monai_dvf2ddf(7, "zeros")(dvf)),
                ("DeepReg IntDVF", lambda dvf: peers.deepreg_int_dvf(dvf, 7)),
            ],
            op="dvf_to_ddf",
            steps=7,
        )

        metric = lambda cid, inputs_, agree, **spec: cases.append(
            Case(f"{cid}_{d}d", "metric", d, inputs_, [], agree, dtypes=["f32"], **spec)
        )
        metric(
            "metric_binary_dice",
            [("fixed", t), ("moving", p)],
            [("DeepReg DiceScore(binary)", lambda fixed, moving: -peers.deepreg_dice(binary=True)(fixed.flatten()[None, None], moving.flatten()[None, None]))],
            metric="binary_dice",
        )
        metric(
            "metric_image_ssd",
            pair,
            [("DeepReg", lambda fixed, moving: peers.deepreg_ssd()(fixed.flatten()[None, None], moving.flatten()[None, None]))],
            metric="image_ssd",
        )
    return cases


def evaluate(fn, case, arrays, dtype, cotangent=None):
    """A peer's output and its gradients (of `Σ out · cotangent`) in `dtype`."""
    tensors = {}
    for name, stem in case.inputs:
        t = torch.tensor(arrays[stem], dtype=dtype)
        if name in case.wrt:
            t.requires_grad_(True)
        tensors[name] = t
    out = fn(**tensors)
    grads = {}
    if case.wrt and cotangent is not None:
        (out * torch.tensor(cotangent, dtype=dtype)).sum().backward()
        for name in case.wrt:
            g = tensors[name].grad
            grads[name] = np.zeros(tensors[name].shape) if g is None else g.double().numpy()
    return out.detach().double().numpy(), grads


def relative(a, b):
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if b.size else 0.0
    return diff / scale if scale > 0 else diff


def gradient_error(a, b):
    return max((relative(a[k], b[k]) for k in b), default=None)


def border_profile(a, b, spatial):
    """Max |a − b| / max |b| at each distance from the nearest border face: 0, 1, 2, ≥ 3."""
    if a.ndim < 2 + spatial:
        return None
    sizes = a.shape[-spatial:]
    grids = np.meshgrid(*[np.minimum(np.arange(n), n - 1 - np.arange(n)) for n in sizes], indexing="ij")
    distance = np.minimum.reduce(grids)
    scale = max(np.max(np.abs(b)), 1e-300)
    diff = np.abs(a - b).reshape(-1, *sizes).max(axis=0)
    return [float(diff[np.minimum(distance, 3) == k].max(initial=0.0)) / scale for k in range(4)]


def fmt(x):
    if x is None:
        return "—"
    return "0" if x == 0 else f"{x:.1e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the tables to this file")
    parser.add_argument("--keep", type=pathlib.Path, help="write inputs and outputs here and keep them")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(SEED)

    with tempfile.TemporaryDirectory(prefix="voxreg-peer-") as tmp:
        folder = args.keep or pathlib.Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        inputs = Inputs(folder)
        cases = build_cases(inputs)
        # Cotangents: one per case, of the reference output's shape.
        for case in cases:
            peer = (case.agree or case.differ)[0][1]
            out, _ = evaluate(peer, case, inputs.arrays, torch.float64)
            inputs.add(f"{case.id}.cotangent", inputs.rng.uniform(-1, 1, size=out.shape))
            case.inputs.append(("cotangent", f"{case.id}.cotangent"))
        (folder / "manifest.json").write_text(json.dumps({"cases": [c.manifest() for c in cases]}, indent=1))
        command = ["cargo", "run", "--quiet", "-p", "voxreg-losses", "--example", "peer_eval", "--", str(folder)]
        print("$", " ".join(command[:-1]), "DIR", file=sys.stderr)
        subprocess.run(command, cwd=ROOT, check=True)

        rows, differences, failures = [], [], []
        for case in cases:
            cot = inputs.arrays[f"{case.id}.cotangent"]
            case.inputs.pop()  # the cotangent is not a peer argument
            voxreg = {}
            for dtype in case.dtypes:
                value = np.load(folder / f"{case.id}.{dtype}.value.npy")
                grads = {k: np.load(folder / f"{case.id}.{dtype}.grad.{k}.npy") for k in case.wrt}
                voxreg[dtype] = (value.reshape(-1) if case.kind == "metric" else value, grads)
            for peer in case.agree:
                label, fn = peer[:2]
                limit64 = peer[2] if len(peer) > 2 else F64_TOLERANCE
                ref, ref_grads = evaluate(fn, case, inputs.arrays, torch.float64, cot)
                ref = ref.reshape(-1) if case.kind == "metric" else ref
                row = {"case": case.id, "peer": label}
                for dtype in case.dtypes:
                    value, grads = voxreg[dtype]
                    row[f"{dtype} value"] = relative(value, ref)
                    row[f"{dtype} grad"] = gradient_error(grads, ref_grads)
                own, own_grads = evaluate(fn, case, inputs.arrays, torch.float32, cot)
                own = own.reshape(-1) if case.kind == "metric" else own
                row["peer f32 value"] = relative(own, ref)
                row["peer f32 grad"] = gradient_error(own_grads, ref_grads)
                limit32 = lambda k: max(F32_TOLERANCE, 4 * (row[f"peer f32 {k}"] or 0.0))
                ok = all((row.get(f"f64 {k}") or 0.0) <= limit64 for k in ("value", "grad"))
                ok = ok and all((row.get(f"f32 {k}") or 0.0) <= limit32(k) for k in ("value", "grad"))
                row["ok"] = "yes" if ok else "NO"
                if not ok:
                    failures.append(f"{case.id} vs {label}")
                rows.append(row)
            for label, fn in case.differ:
                ref, ref_grads = evaluate(fn, case, inputs.arrays, torch.float64, cot)
                value, grads = voxreg["f64"]
                entry = {"case": case.id, "peer": label, "value": relative(value, ref)}
                entry["value by border distance"] = border_profile(value, ref, case.dims)
                for k in case.wrt:
                    entry[f"grad {k}"] = relative(grads[k], ref_grads[k])
                    entry[f"grad {k} by border distance"] = border_profile(grads[k], ref_grads[k], case.dims)
                differences.append(entry)

    lines = [
        f"Peer comparison, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"`python tests/peer/run.py` (torch {torch.__version__}, MONAI {monai_version()}, "
        f"numpy {np.__version__}, {platform.machine()}).",
        "",
        "Cases that must agree (max-norm relative error against the peer in f64; "
        "`peer f32`: the peer's own f32 evaluation against its f64 one):",
        "",
        "| case | peer | f64 value | f64 grad | f32 value | f32 grad | peer f32 value | peer f32 grad | ok |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = [r["case"], r["peer"]] + [
            fmt(r.get(k)) for k in ("f64 value", "f64 grad", "f32 value", "f32 grad", "peer f32 value", "peer f32 grad")
        ]
        lines.append("| " + " | ".join(cells + [r["ok"]]) + " |")
    lines += [
        "",
        "Documented differences (f64; max |voxreg − peer| / max |peer|, overall and at distance "
        "0 / 1 / 2 / ≥ 3 voxels from the nearest border face):",
        "",
        "| case | peer | output | by border distance | gradients (by border distance) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in differences:
        profile = lambda p: "—" if p is None else " / ".join(fmt(x) for x in p)
        grads = "; ".join(
            f"{k[5:]}: {fmt(e[k])} ({profile(e[k + ' by border distance'])})"
            for k in e
            if k.startswith("grad ") and not k.endswith("distance")
        )
        lines.append(f"| {e['case']} | {e['peer']} | {fmt(e['value'])} | {profile(e['value by border distance'])} | {grads or '—'} |")
    lines += ["", f"{len(rows) - len(failures)} of {len(rows)} comparisons agree."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if failures:
        print("disagreeing: " + ", ".join(failures), file=sys.stderr)
        sys.exit(1)


def monai_version():
    import monai

    return monai.__version__


if __name__ == "__main__":
    main()
