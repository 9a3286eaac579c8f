#!/usr/bin/env python3
"""Makes the bundled 2 mm MNI crop (t1, gm, wm) from the 1 mm ICBM152 2009a files.

Standard library only. Crops the brain's bounding box (voxels [18, 178) x [26, 202) x
[12, 172) of the 197 x 233 x 189 template), averages 2 x 2 x 2 blocks (rounded to uint8) and
writes a NIfTI-1 file whose affine places every new voxel at the centre of its block.

    python3 assets/mni152/make_crop.py SOURCE_DIR assets/mni152

SOURCE_DIR holds `t1.nii.gz`, `gm.nii.gz`, `wm.nii.gz` (uint8, 1 mm, the affine of the
template: identity rotation, origin (-98, -134, -72) mm), e.g. from nilearn's
`datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz`.
"""
import gzip
import struct
import sys
from pathlib import Path

START = (18, 26, 12)
SIZE = (160, 176, 160)
FACTOR = 2


def read(path):
    raw = gzip.decompress(path.read_bytes())
    dims = struct.unpack_from("<8h", raw, 40)
    datatype = struct.unpack_from("<h", raw, 70)[0]
    offset = int(struct.unpack_from("<f", raw, 108)[0])
    srow = [struct.unpack_from("<4f", raw, 280 + 16 * i) for i in range(3)]
    if datatype != 2 or dims[0] != 3:
        sys.exit(f"{path}: expected a 3-D uint8 volume")
    shape = dims[1:4]
    return raw[:348], raw[offset : offset + shape[0] * shape[1] * shape[2]], shape, srow


def crop_downsample(data, shape):
    nx, ny, _ = shape
    out_shape = tuple(s // FACTOR for s in SIZE)
    out = bytearray(out_shape[0] * out_shape[1] * out_shape[2])
    blocks = FACTOR**3
    for k in range(out_shape[2]):
        for j in range(out_shape[1]):
            for i in range(out_shape[0]):
                total = 0
                for dk in range(FACTOR):
                    z = START[2] + FACTOR * k + dk
                    for dj in range(FACTOR):
                        y = START[1] + FACTOR * j + dj
                        base = (z * ny + y) * nx + START[0] + FACTOR * i
                        total += sum(data[base : base + FACTOR])
                out[(k * out_shape[1] + j) * out_shape[0] + i] = (total + blocks // 2) // blocks
    return bytes(out), out_shape


def write(path, header, data, shape, srow):
    header = bytearray(header)
    struct.pack_into("<8h", header, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into("<8f", header, 76, 1.0, FACTOR, FACTOR, FACTOR, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", header, 108, 352.0)
    shift = [(FACTOR - 1) / 2 + START[axis] for axis in range(3)]
    for row in range(3):
        linear = srow[row][:3]
        origin = srow[row][3] + sum(linear[a] * shift[a] for a in range(3))
        struct.pack_into("<4f", header, 280 + 16 * row, *(FACTOR * v for v in linear), origin)
    path.write_bytes(gzip.compress(bytes(header) + b"\0" * 4 + data, mtime=0))


def main():
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    for name in ("t1", "gm", "wm"):
        header, data, shape, srow = read(source / f"{name}.nii.gz")
        small, small_shape = crop_downsample(data, shape)
        write(target / f"{name}.nii.gz", header, small, small_shape, srow)
        print(f"{name}: {shape} -> {small_shape}")


if __name__ == "__main__":
    main()
