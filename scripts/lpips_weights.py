#!/usr/bin/env python3
"""Writes the weights of voxreg's `perceptual` image loss (LPIPS) as one safetensors file.

LPIPS (Zhang et al. 2018) measures the distance of two images on ImageNet-trained VGG16 or
AlexNet features, weighted by linear layers learned on human judgements. voxreg cannot
download them at run time; run this once, where PyTorch is installed:

    pip install torch torchvision lpips safetensors
    python scripts/lpips_weights.py --net vgg --out lpips_vgg.safetensors
    python scripts/lpips_weights.py --net alex --out lpips_alex.safetensors

It builds the `lpips` package's `LPIPS(net=..., version="0.1")`: torchvision's ImageNet
weights for the trunk (torchvision downloads them on first use) and the package's own v0.1
linear weights (shipped in its wheel), and saves its state dict under the package's names
(`net.slice<k>.<i>.weight` / `.bias`, `lin<k>.model.1.weight`, `scaling_layer.shift` /
`.scale`), which is what voxreg reads. Then, in a config:

    loss:
      image: {name: perceptual, weights: lpips_vgg.safetensors, net: vgg, model: net-lin}

The weights keep the licences of their sources: torchvision's model weights (BSD-3-Clause
code; ImageNet-trained) and the lpips package (BSD-2-Clause). This script only re-packages
them on the user's machine; the repository ships no weights.
"""

import argparse
import pathlib


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", choices=["vgg", "alex"], required=True, help="the feature network")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the safetensors file to write")
    args = parser.parse_args()

    import lpips
    from safetensors.torch import save_file

    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new file name")
    model = lpips.LPIPS(pretrained=True, net=args.net, version="0.1", verbose=False).eval()
    # `lins.<k>` repeats `lin<k>` (the same storage, which safetensors refuses): keep one.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if not k.startswith("lins.")}
    partial = args.out.with_name(args.out.name + ".partial")
    save_file(state, str(partial))
    partial.rename(args.out)
    count = sum(v.numel() for v in state.values())
    print(f"wrote {args.out}: {len(state)} tensors, {count} values (LPIPS v0.1, {args.net})")


if __name__ == "__main__":
    main()
