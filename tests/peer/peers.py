"""The peers' definitions, evaluated in torch on channel-first tensors `(N, C, *spatial)`.

MONAI's components are called as MONAI ships them. DeepReg needs TensorFlow, so its formulas
(`deepreg/loss/*.py`, `deepreg/model/layer_util.py::resample`, `deepreg/model/layer.py::IntDVF`)
are re-expressed here in torch, operation for operation, in DeepReg's order of evaluation.
DeepReg's channel-last layout becomes channel-first; where DeepReg scores one label per sample,
each label channel is scored alone and the scores are averaged (voxreg's convention).
"""

import itertools
import math

import torch
import torch.nn.functional as F

EPS = 1.0e-5  # DeepReg's `deepreg.constant.EPS`


def flat(x):
    """`(N, ...)` → `(N, V)`."""
    return x.reshape(x.shape[0], -1)


def per_sample_mean(x):
    """Mean over every non-batch axis: `(N, ...)` → `(N,)`."""
    return flat(x).mean(dim=1)


def per_label(score):
    """Applies a one-label score to each channel of `(N, L, *spatial)` and averages."""

    def scored(t, p):
        n, labels = t.shape[:2]
        values = score(t.reshape(n * labels, *t.shape[2:]), p.reshape(n * labels, *p.shape[2:]))
        return values.reshape(n, labels).mean(dim=1)

    return scored


# --- DeepReg's kernels (deepreg/loss/kernel.py) ---------------------------------------------


def deepreg_rectangular(size):
    return torch.ones(size, dtype=torch.float64)


def deepreg_triangular(size):
    """Ones in the middle, smoothed by a box of `size − size // 2` ("SAME" padding)."""
    padding = size // 2
    base = [0.0] * math.ceil(padding / 2) + [1.0] * (size - padding) + [0.0] * math.floor(padding / 2)
    box = size - padding
    left = (box - 1) // 2  # TensorFlow's "SAME": the extra padding goes to the right
    out = []
    for i in range(size):
        out.append(sum(base[j] for j in range(i - left, i - left + box) if 0 <= j < size))
    return torch.tensor(out, dtype=torch.float64)


def deepreg_gaussian_sized(size):
    mean = (size - 1) / 2.0
    sigma = size / 3
    grid = torch.arange(size, dtype=torch.float64)
    return torch.exp(-((grid - mean) ** 2) / (2 * sigma**2))


def deepreg_gaussian_sigma(sigma):
    tail = int(sigma * 3)
    kernel = torch.tensor([math.exp(-0.5 * x**2 / sigma**2) for x in range(-tail, tail + 1)], dtype=torch.float64)
    return (kernel / kernel.sum()).to(torch.float64)


def deepreg_cauchy(sigma):
    tail = int(sigma * 5)
    kernel = torch.tensor([1.0 / ((x / sigma) ** 2 + 1) for x in range(-tail, tail + 1)], dtype=torch.float64)
    return (kernel / kernel.sum()).to(torch.float64)


LNCC_KERNELS = {
    "rectangular": deepreg_rectangular,
    "triangular": deepreg_triangular,
    "gaussian": deepreg_gaussian_sized,
}
SCALE_KERNELS = {"gaussian": deepreg_gaussian_sigma, "cauchy": deepreg_cauchy}


def separable_filter(x, kernel):
    """DeepReg's `separable_filter`: the 1D kernel along every spatial axis, zero "SAME" padding,
    each channel alone."""
    ndim = x.dim() - 2
    conv = F.conv2d if ndim == 2 else F.conv3d
    channels = x.shape[1]
    k = kernel.to(x)
    for axis in range(ndim):
        shape = [1] * ndim
        shape[axis] = k.numel()
        weight = k.reshape(1, 1, *shape).repeat(channels, 1, *([1] * ndim))
        padding = [0] * ndim
        padding[axis] = k.numel() // 2
        x = conv(x, weight, padding=tuple(padding), groups=channels)
    return x


def multi_scale(loss, scales, kernel):
    """DeepReg's `MultiScaleMixin`: the mean of the loss over smoothed copies (0: unsmoothed)."""
    if scales is None:
        return loss
    if not isinstance(scales, list):
        scales = [scales]

    def scaled(t, p):
        total = 0
        for s in scales:
            if s == 0:
                total = total + loss(t, p)
            else:
                k = SCALE_KERNELS[kernel](s)
                total = total + loss(separable_filter(t, k), separable_filter(p, k))
        return total / len(scales)

    return scaled


# --- DeepReg's image losses (deepreg/loss/image.py), negated ---------------------------------


def deepreg_lncc(kernel_size=9, kernel_type="rectangular", smooth_nr=EPS, smooth_dr=EPS):
    kernel = LNCC_KERNELS[kernel_type](kernel_size)

    def loss(t, p):
        ndim = t.dim() - 2
        volume = kernel.sum() ** ndim  # DeepReg's `kernel_vol`, in the image's dimension
        t2, p2, tp = t * t, p * p, t * p
        t_sum, p_sum = separable_filter(t, kernel), separable_filter(p, kernel)
        t2_sum, p2_sum = separable_filter(t2, kernel), separable_filter(p2, kernel)
        tp_sum = separable_filter(tp, kernel)
        t_avg, p_avg = t_sum / volume.to(t), p_sum / volume.to(t)
        cross = tp_sum - p_avg * t_sum
        t_var = torch.clamp_min(t2_sum - t_avg * t_sum, 0)
        p_var = torch.clamp_min(p2_sum - p_avg * p_sum, 0)
        ncc = (cross * cross + smooth_nr) / (t_var * p_var + smooth_dr)
        return -per_sample_mean(ncc)

    return loss


def deepreg_ssd(scales=None, kernel="gaussian"):
    return multi_scale(lambda t, p: per_sample_mean((t - p) ** 2), scales, kernel)


def deepreg_gmi(num_bins=23, sigma_ratio=0.5):
    def loss(t, p):
        t = torch.clamp(t, 0, 1)
        p = torch.clamp(p, 0, 1)
        centres = torch.linspace(0.0, 1.0, num_bins, dtype=t.dtype)[None, None, :]
        sigma = (centres[:, :, 1:] - centres[:, :, :-1]).mean() * sigma_ratio
        preterm = 1 / (2 * sigma**2)
        t = flat(t)[:, :, None]
        p = flat(p)[:, :, None]
        voxels = t.shape[1] * 1.0
        ia = torch.exp(-preterm * (t - centres) ** 2)
        ia = ia / ia.sum(-1, keepdim=True)
        ia = ia.transpose(1, 2)
        pa = ia.mean(-1, keepdim=True)
        ib = torch.exp(-preterm * (p - centres) ** 2)
        ib = ib / ib.sum(-1, keepdim=True)
        pb = ib.mean(1, keepdim=True)
        papb = pa @ pb
        pab = (ia @ ib) / voxels
        div = (pab + EPS) / (papb + EPS)
        return -(pab * torch.log(div + EPS)).sum(dim=(1, 2))

    return loss


def deepreg_gncc():
    def loss(t, p):
        t, p = flat(t), flat(p)
        mu_p, mu_t = p.mean(1, keepdim=True), t.mean(1, keepdim=True)
        var_p = p.var(1, unbiased=False)
        var_t = t.var(1, unbiased=False)
        numerator = torch.abs(((p - mu_p) * (t - mu_t)).mean(1))
        return -(numerator * numerator + EPS) / (var_p * var_t + EPS)

    return loss


# --- DeepReg's label losses (deepreg/loss/label.py), per label channel -----------------------


def deepreg_dice(binary=False, background_weight=0.0, smooth_nr=EPS, smooth_dr=EPS, jaccard=False):
    def score(t, p):
        if binary:
            t = (t >= 0.5).to(t.dtype)
            p = (p >= 0.5).to(p.dtype)
        t, p = flat(t), flat(p)
        prod = (t * p).sum(1)
        total = (t + p).sum(1)
        w = background_weight
        if w > 0:
            vol = torch.ones_like(t).sum(1)
            if jaccard:
                numerator = prod - w * total + w * vol
                denominator = (1 - w) * total - prod + w * vol
            else:
                numerator = 2 * (prod - w * total + w * vol)
                denominator = (1 - 2 * w) * total + 2 * w * vol
        elif jaccard:
            numerator, denominator = prod, total - prod
        else:
            numerator, denominator = 2 * prod, total
        return -(numerator + smooth_nr) / (denominator + smooth_dr)

    return per_label(score)


def deepreg_cross_entropy(binary=False, background_weight=0.0, smooth=EPS):
    def score(t, p):
        if binary:
            t = (t >= 0.5).to(t.dtype)
            p = (p >= 0.5).to(p.dtype)
        t, p = flat(t), flat(p)
        fg = -(t * torch.log(p + smooth)).mean(1)
        if background_weight > 0:
            bg = -((1 - t) * torch.log(1 - p + smooth)).mean(1)
            return (1 - background_weight) * fg + background_weight * bg
        return fg

    return per_label(score)


# --- DeepReg's regularisers (deepreg/loss/deform.py), in 2D and 3D ---------------------------


def central(u, axis):
    """DeepReg's `gradient_d{x,y,z}`: `(u[i+1] − u[i−1]) / 2` along spatial `axis`, every other
    spatial axis cropped by one voxel on each side."""
    ndim = u.dim() - 2
    hi = [slice(None), slice(None)] + [slice(1, -1)] * ndim
    lo = list(hi)
    hi[2 + axis] = slice(2, None)
    lo[2 + axis] = slice(None, -2)
    return (u[tuple(hi)] - u[tuple(lo)]) / 2


def deepreg_bending():
    def loss(u):
        ndim = u.dim() - 2
        first = [central(u, a) for a in range(ndim)]
        energy = 0
        for a in range(ndim):
            energy = energy + central(first[a], a) ** 2
        for a in range(ndim):
            for b in range(a + 1, ndim):
                energy = energy + 2 * central(first[a], b) ** 2
        return per_sample_mean(energy)

    return loss


def deepreg_gradient(l1=False):
    def loss(u):
        ndim = u.dim() - 2
        first = [central(u, a) for a in range(ndim)]
        norms = sum(torch.abs(d) if l1 else d**2 for d in first)
        return per_sample_mean(norms)

    return loss


# --- VoxelMorph's losses, re-expressed from voxelmorph/{tf,torch}/losses.py ------------------
# VoxelMorph averages over the batch as well; per-sample means here (the step takes the batch mean).


def _box_sum(x, win):
    """Sums over a window of `win` voxels per axis and over the channels, zero padding
    `win // 2` (odd windows: TensorFlow's 'SAME' and VoxelMorph's torch padding agree)."""
    ndim = x.dim() - 2
    conv = [None, None, torch.nn.functional.conv2d, torch.nn.functional.conv3d][ndim]
    weight = torch.ones((1, x.shape[1], *win), dtype=x.dtype)
    return conv(x, weight, padding=tuple(w // 2 for w in win))


def vxm_ncc(win=9, eps=1e-5, clamp=False):
    def loss(t, p):
        ndim = t.dim() - 2
        w = [win] * ndim if isinstance(win, int) else list(win)
        size = float(math.prod(w)) * t.shape[1]
        i_sum, j_sum = _box_sum(t, w), _box_sum(p, w)
        i2, j2, ij = _box_sum(t * t, w), _box_sum(p * p, w), _box_sum(t * p, w)
        u_i, u_j = i_sum / size, j_sum / size
        cross = ij - u_j * i_sum - u_i * j_sum + u_i * u_j * size
        i_var = i2 - 2 * u_i * i_sum + u_i * u_i * size
        j_var = j2 - 2 * u_j * j_sum + u_j * u_j * size
        if clamp:  # the TensorFlow version
            cross = torch.clamp(cross, min=eps)
            i_var = torch.clamp(i_var, min=eps)
            j_var = torch.clamp(j_var, min=eps)
            cc = (cross / i_var) * (cross / j_var)
        else:  # the PyTorch version (its 1e-5 is fixed)
            cc = cross * cross / (i_var * j_var + 1e-5)
        return -per_sample_mean(cc)

    return loss


def vxm_mse(image_sigma=1.0):
    return lambda t, p: per_sample_mean((t - p) ** 2) / image_sigma**2


def vxm_grad(penalty="l1", loss_mult=None):
    def loss(u):
        ndim = u.dim() - 2
        terms = []
        for a in range(ndim):
            d = torch.diff(u, dim=2 + a)
            terms.append(per_sample_mean(torch.abs(d) if penalty == "l1" else d * d))
        grad = sum(terms) / len(terms)
        return grad * loss_mult if loss_mult is not None else grad

    return loss


def vxm_dice():
    def loss(t, p):
        axes = tuple(range(2, t.dim()))
        top = 2 * (t * p).sum(axes)
        bottom = (t + p).sum(axes)
        ratio = torch.where(bottom == 0, torch.zeros_like(top), top / torch.where(bottom == 0, torch.ones_like(bottom), bottom))
        return -ratio.mean(1)

    return loss


# --- atlalign's field losses, re-expressed from atlalign/ml_utils/losses.py (0.6.2) -----------
# atlalign's fields are channel-last with x (the column displacement) first, (B, h, w, 2); its
# losses average over the batch as well: here each sample is scored as a batch of one.


def _atlalign_layout(u):
    """voxreg's `(N, 2, H, W)` (row component first) → atlalign's `(N, H, W, 2)`, x first."""
    return u.movedim(1, -1).flip(-1)


def atlalign_pearson():
    """atlalign's `cross_correlation` loss: 1 − r², r clipped to [−1, 1], each sample alone."""

    def loss(t, p):
        x, y = flat(t), flat(p)
        xc, yc = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
        r = (xc * yc).sum(1) / torch.sqrt((xc * xc).sum(1) * (yc * yc).sum(1))
        return 1 - torch.clamp(r, -1.0, 1.0) ** 2

    return loss


def atlalign_psnr():
    """atlalign's `psnr` loss, −tf.image.psnr(max_val=1) = 10·log10(mse), each sample alone."""
    return lambda t, p: 10 * torch.log10(per_sample_mean((t - p) ** 2))


def atlalign_ssim():
    """atlalign's `ssim` loss, −tf.image.ssim(max_val=1) with TF's defaults (`_ssim_helper`,
    compensation 1): an 11 × 11 Gaussian window (σ 1.5, `_fspecial_gauss`), VALID filtering."""

    def loss(t, p):
        coords = torch.arange(11, dtype=t.dtype) - 5.0
        g = -0.5 * (coords / 1.5) ** 2
        window = torch.softmax((g[None, :] + g[:, None]).flatten(), 0).reshape(1, 1, 11, 11)
        mean = lambda x: F.conv2d(x, window)  # noqa: E731
        c1, c2 = 0.01**2, 0.03**2
        m0, m1 = mean(t), mean(p)
        num0 = m0 * m1 * 2.0
        den0 = m0**2 + m1**2
        luminance = (num0 + c1) / (den0 + c1)
        num1 = mean(t * p) * 2.0
        den1 = mean(t**2 + p**2)
        cs = (num1 - num0 + c2) / (den1 - den0 + c2)
        return -flat(luminance * cs).mean(1)

    return loss


def lpips_case(folder, net, lin, seed):
    """The `lpips` package's LPIPS(net, lpips=lin) with random weights (`pnet_rand`), its
    state dict written to `folder/lpips_<net>_<lin>.safetensors` for voxreg's `perceptual`
    loss, and the peer: atlalign's PerceptualLoss (grey [0, 1] → [−1, 1], three channels).
    `None` without the `lpips` and `safetensors` packages (tests/peer/requirements.txt)."""
    try:
        import lpips
        from safetensors.torch import save_file
    except ImportError:
        return None
    torch.manual_seed(seed)
    model = lpips.LPIPS(pretrained=False, net=net, lpips=lin, pnet_rand=True, verbose=False).eval()
    path = folder / f"lpips_{net}_{'lin' if lin else 'net'}.safetensors"
    # `lins.<k>` repeats `lin<k>` (shared storage, which safetensors refuses): keep one.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if not k.startswith("lins.")}
    save_file(state, str(path))

    def loss(t, p):
        m = model.to(t.dtype)
        rgb = lambda x: (2 * x - 1).repeat(1, 3, 1, 1)  # noqa: E731
        return m(rgb(t), rgb(p)).reshape(t.shape[0])

    return path, loss


def atlalign_vector_distance():
    def loss(t, p):
        err = _atlalign_layout(t) - _atlalign_layout(p)
        return torch.sqrt(torch.abs((err * err).sum(-1) + 0.001)).reshape(t.shape[0], -1).mean(1)

    return loss


def atlalign_vdclip(value=20.0, power=3.0):
    return lambda t, p: (atlalign_vector_distance()(t, p) / value) ** power


def _atlalign_jacobian(field):
    """atlalign's interior Jacobian determinant of an (N, H, W, 2) x-first field."""
    dx, dy = field[..., 0], field[..., 1]
    ddx = lambda f: (f[:, 1:-1, 2:] - f[:, 1:-1, :-2]) / 2  # noqa: E731  along x (columns)
    ddy = lambda f: (f[:, 2:, 1:-1] - f[:, :-2, 1:-1]) / 2  # noqa: E731  along y (rows)
    a11, a12 = 1 + ddx(dx), ddy(dx)
    a21, a22 = ddx(dy), 1 + ddy(dy)
    return a11 * a22 - a12 * a21


def atlalign_jacobian_distance():
    """atlalign's jacobian_distance as intended (its code builds both from y_pred)."""

    def loss(t, p):
        gap = _atlalign_jacobian(_atlalign_layout(p)) - _atlalign_jacobian(_atlalign_layout(t))
        return (gap * gap).reshape(t.shape[0], -1).mean(1)

    return loss


def atlalign_dvf2img(image_loss, scale=10.0):
    """atlalign's DVF2IMG(image_loss, weights=(0.5, 0.5)): the image loss on each component
    (x then y) of the two fields divided by 10 (the components as (N, 1, H, W) images)."""

    def loss(t, p):
        a, b = _atlalign_layout(t), _atlalign_layout(p)
        return sum(0.5 * image_loss(a[None, ..., c].movedim(0, 1) / scale, b[None, ..., c].movedim(0, 1) / scale) for c in (0, 1))

    return loss


def atlalign_mse_po():
    def loss(t, p):
        err = _atlalign_layout(t) - _atlalign_layout(p)
        return (err[..., 0] ** 2 + err[..., 1] ** 2).reshape(t.shape[0], -1).mean(1)

    return loss


# --- MONAI's components, as shipped -----------------------------------------------------------


def monai_lncc(kernel_size, kernel_type, smooth_nr, smooth_dr):
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    def loss(t, p):
        module = LocalNormalizedCrossCorrelationLoss(
            spatial_dims=t.dim() - 2,
            kernel_size=kernel_size,
            kernel_type=kernel_type,
            reduction="none",
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
        )
        if kernel_type == "triangular":
            # MONAI builds its triangular kernel in f32; rebuilt by MONAI's formula in the dtype.
            fsize = (kernel_size + 1) // 2
            fsize -= 1 if fsize % 2 == 0 else 0
            box = torch.ones((1, 1, fsize), dtype=t.dtype) / fsize
            padding = (kernel_size - fsize) // 2 + fsize // 2
            module.kernel = F.conv1d(box, box, padding=padding).reshape(-1)
            module.kernel_vol = module.get_kernel_vol()
        return per_sample_mean(module(p, t))

    return loss


def monai_gmi(num_bins=23, sigma_ratio=0.5):
    """MONAI's `GlobalMutualInformationLoss` with DeepReg's ε. MONAI builds its bin centres and
    window constant in f32; for an f64 evaluation they are rebuilt in f64 (the same formula)."""
    from monai.losses import GlobalMutualInformationLoss

    def loss(t, p):
        module = GlobalMutualInformationLoss(
            num_bins=num_bins, sigma_ratio=sigma_ratio, reduction="none", smooth_nr=EPS, smooth_dr=EPS
        )
        centres = torch.linspace(0.0, 1.0, num_bins, dtype=t.dtype)
        sigma = (centres[1:] - centres[:-1]).mean() * sigma_ratio
        module.bin_centers = centres[None, None, :]
        module.preterm = 1 / (2 * sigma**2)
        return module(p, t)

    return loss


def monai_dice(jaccard=False):
    """MONAI's `DiceLoss` (soft, per channel, background included) minus 1, which is voxreg's
    convention `−score`. MONAI's Jaccard smooths `2·P / 2·(S − P)`, so DeepReg's ε becomes 2ε."""
    from monai.losses import DiceLoss

    smooth = 2 * EPS if jaccard else EPS

    def loss(t, p):
        module = DiceLoss(reduction="none", jaccard=jaccard, smooth_nr=smooth, smooth_dr=smooth)
        return flat(module(p, t)).mean(1) - 1

    return loss


def monai_bending():
    from monai.losses import BendingEnergyLoss

    return lambda u: per_sample_mean(BendingEnergyLoss(reduction="none")(u))


def monai_diffusion():
    from monai.losses import DiffusionLoss

    return lambda u: per_sample_mean(DiffusionLoss(reduction="none")(u))


# --- Warping: PyTorch / MONAI and DeepReg's resampler ------------------------------------------


def torch_warp(image, ddf, mode="bilinear", padding="zeros"):
    """`grid_sample(align_corners=True)` at `identity + ddf`, in voxel units (MONAI's `Warp`
    without its compiled extension, for any output grid)."""
    ndim = ddf.shape[1]
    sizes = ddf.shape[2:]
    axes = [torch.arange(n, dtype=ddf.dtype) for n in sizes]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)[None] + ddf
    normalised = [grid[:, a] * 2 / (image.shape[2 + a] - 1) - 1 for a in range(ndim)]
    grid = torch.stack(normalised[::-1], dim=-1)  # grid_sample wants (x, y[, z]) last
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding, align_corners=True)


def deepreg_resample(vol, loc, zero_boundary=True):
    """DeepReg's `layer_util.resample` (linear): `vol` `(N, C, *S)` sampled at voxel coordinates
    `loc` `(N, ndim, *S')`. Corners are `ceil(x) − 1` and `ceil(x)`, all clipped to the image;
    with `zero_boundary` a coordinate ≤ 0 or > n − 1 gets weight zero on both corners."""
    n, channels = vol.shape[:2]
    sizes = vol.shape[2:]
    ndim = len(sizes)
    corners, w_floor, w_ceil = [], [], []
    for a in range(ndim):
        x = loc[:, a]
        top = sizes[a] - 1
        ceil = torch.ceil(x).detach()
        floor = ceil - 1
        c_x = torch.clamp(x, 0, top)
        c_floor = torch.clamp(floor, 0, top)
        c_ceil = torch.clamp(ceil, 0, top)
        wf = c_ceil - c_x
        wc = c_x - c_floor if zero_boundary else 1 - wf
        corners.append((c_floor.long(), c_ceil.long()))
        w_floor.append(wf)
        w_ceil.append(wc)
    strides = [int(math.prod(sizes[a + 1 :])) for a in range(ndim)]
    source = vol.reshape(n, channels, -1)
    out = 0
    for bits in itertools.product([0, 1], repeat=ndim):
        index = sum(corners[a][b] * strides[a] for a, b in enumerate(bits))
        weight = math.prod(w_ceil[a] if b else w_floor[a] for a, b in enumerate(bits))
        gathered = torch.gather(source, 2, index.reshape(n, 1, -1).expand(n, channels, -1))
        out = out + gathered.reshape(n, channels, *loc.shape[2:]) * weight[:, None]
    return out


def deepreg_warp(image, ddf):
    """DeepReg's `Warping` layer: `resample(image, grid + ddf)` (zero boundary)."""
    sizes = ddf.shape[2:]
    axes = [torch.arange(s, dtype=ddf.dtype) for s in sizes]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)[None]
    return deepreg_resample(image, grid + ddf)


def deepreg_int_dvf(dvf, num_steps=7):
    """DeepReg's `IntDVF`: scaling and squaring through its `Warping` layer."""
    ddf = dvf / (2**num_steps)
    for _ in range(num_steps):
        ddf = ddf + deepreg_warp(ddf, ddf)
    return ddf


def monai_dvf2ddf(num_steps=7, padding="border"):
    from monai.networks.blocks import DVF2DDF

    return lambda dvf: DVF2DDF(num_steps=num_steps, mode="bilinear", padding_mode=padding)(dvf)
