//! The voxel-to-world affine of a NIfTI-1 header, as the standard defines it: the sform when
//! its code is set, else the qform (quaternion, offsets, voxel sizes, qfac), else the voxel
//! sizes alone.

/// The header fields the affine depends on.
pub(super) struct AffineFields {
    pub sform_code: i16,
    pub qform_code: i16,
    pub srow: [[f32; 4]; 3],
    pub quatern: [f32; 3],
    pub qoffset: [f32; 3],
    pub pixdim: [f32; 8],
}

/// The voxel-to-world (mm) affine.
pub(super) fn affine(fields: &AffineFields) -> [[f64; 4]; 4] {
    let spacing = |i: usize| {
        let d = f64::from(fields.pixdim[i]);
        if d > 0.0 && d.is_finite() {
            d
        } else {
            1.0
        }
    };
    if fields.sform_code > 0 {
        let row = |r: usize| fields.srow[r].map(f64::from);
        return [row(0), row(1), row(2), [0.0, 0.0, 0.0, 1.0]];
    }
    if fields.qform_code > 0 {
        let [b, c, d] = fields.quatern.map(f64::from);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let rotation = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - b * b - c * c,
            ],
        ];
        let qfac = if fields.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let scale = [spacing(1), spacing(2), spacing(3) * qfac];
        let mut out = [[0.0; 4]; 4];
        for (r, row) in rotation.iter().enumerate() {
            for (col, value) in row.iter().enumerate() {
                out[r][col] = value * scale[col];
            }
            out[r][3] = f64::from(fields.qoffset[r]);
        }
        out[3][3] = 1.0;
        return out;
    }
    [
        [spacing(1), 0.0, 0.0, 0.0],
        [0.0, spacing(2), 0.0, 0.0],
        [0.0, 0.0, spacing(3), 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AffineFields {
        AffineFields {
            sform_code: 0,
            qform_code: 0,
            srow: [[0.0; 4]; 3],
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            pixdim: [1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0],
        }
    }

    #[test]
    fn falls_back_to_voxel_sizes() {
        let m = affine(&fields());
        assert_eq!([m[0][0], m[1][1], m[2][2], m[3][3]], [2.0, 3.0, 4.0, 1.0]);
    }

    #[test]
    fn prefers_the_sform() {
        let mut f = fields();
        f.sform_code = 1;
        f.qform_code = 1;
        f.srow = [
            [1.0, 0.0, 0.0, -98.0],
            [0.0, 1.0, 0.0, -134.0],
            [0.0, 0.0, 1.0, -72.0],
        ];
        let m = affine(&f);
        assert_eq!(m[0], [1.0, 0.0, 0.0, -98.0]);
        assert_eq!(m[2], [0.0, 0.0, 1.0, -72.0]);
    }

    #[test]
    fn builds_the_qform_from_the_quaternion() {
        // A 90° rotation about z: (b, c, d) = (0, 0, sin 45°).
        let mut f = fields();
        f.qform_code = 1;
        f.quatern = [0.0, 0.0, std::f32::consts::FRAC_1_SQRT_2];
        f.qoffset = [10.0, 20.0, 30.0];
        f.pixdim[0] = -1.0;
        let m = affine(&f);
        let expected = [
            [0.0, -3.0, 0.0, 10.0],
            [2.0, 0.0, 0.0, 20.0],
            [0.0, 0.0, -4.0, 30.0],
        ];
        for (row, want) in m.iter().zip(expected) {
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{m:?}");
            }
        }
    }
}
