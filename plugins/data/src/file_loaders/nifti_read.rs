//! Reading a NIfTI-1 file defensively: a regular file only (a FIFO would block), the header
//! checked before any voxel is read (rank, dimensions, a supported datatype, a `vox_offset`
//! inside the file), the memory the voxels need checked against what is available, the
//! voxels read from `vox_offset` (the `nifti` crate starts them right after the header when a
//! file has no extensions), and any panic of the decoder caught and reported with the file.

use std::io::{BufReader, Read};
use std::path::Path;

use ::nifti::volume::InMemNiftiVolume;
use ::nifti::{IntoNdArray, NiftiHeader, NiftiType};
use voxreg_framework::memory;
use voxreg_framework::prelude::*;

use super::data_error;

/// The size of a NIfTI-1 header.
const HEADER_BYTES: u64 = 348;
/// Where a single-file NIfTI-1's voxels start when it has no extensions.
const FIRST_DATA_BYTE: u64 = 352;

/// A header read from a file, its datatype supported, and where its voxels are.
pub(super) struct Checked {
    pub header: NiftiHeader,
    pub datatype: NiftiType,
    /// `vox_offset` as a byte position.
    pub offset: u64,
    /// The voxels' size in bytes.
    pub data_bytes: u64,
    /// The array shape (`dim[1..=dim[0]]`).
    pub shape: Vec<usize>,
}

/// The file, decompressed when it starts with gzip's magic bytes (whatever its name).
fn open(path: &Path) -> Result<Box<dyn Read>, ComponentError> {
    if let Some(problem) = voxreg_framework::files::regular_file_problem(path) {
        return Err(data_error(path, problem));
    }
    let file = std::fs::File::open(path).map_err(|e| data_error(path, e.to_string()))?;
    let mut reader = BufReader::new(file);
    let magic =
        std::io::BufRead::fill_buf(&mut reader).map_err(|e| data_error(path, e.to_string()))?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// A datatype's name in the NIfTI standard, for the ones voxreg cannot read.
fn datatype_name(datatype: NiftiType) -> &'static str {
    match datatype {
        NiftiType::Complex64 => "complex64",
        NiftiType::Complex128 => "complex128",
        NiftiType::Complex256 => "complex256",
        NiftiType::Float128 => "float128",
        NiftiType::Rgb24 => "RGB24",
        NiftiType::Rgba32 => "RGBA32",
        _ => "this datatype",
    }
}

/// Reads and checks the header of `path` (see [`Checked`]); nothing beyond the header is
/// read.
pub(super) fn read_header(path: &Path) -> Result<(Checked, Box<dyn Read>), ComponentError> {
    let mut reader = open(path)?;
    let header = NiftiHeader::from_reader(&mut reader)
        .map_err(|e| data_error(path, format!("cannot read NIfTI header: {}", describe(&e))))?;
    let rank = usize::from(header.dim[0]);
    if !(1..=7).contains(&rank) {
        return Err(data_error(
            path,
            format!("impossible NIfTI rank dim[0] = {rank}"),
        ));
    }
    let shape: Vec<usize> = header.dim[1..=rank]
        .iter()
        .map(|&d| usize::from(d))
        .collect();
    if shape.contains(&0) {
        return Err(data_error(
            path,
            format!("a NIfTI dimension is 0: {shape:?}"),
        ));
    }
    let datatype = header.data_type().map_err(|_| {
        data_error(
            path,
            format!("unknown NIfTI datatype code {}", header.datatype),
        )
    })?;
    let supported = matches!(
        datatype,
        NiftiType::Uint8
            | NiftiType::Int8
            | NiftiType::Uint16
            | NiftiType::Int16
            | NiftiType::Uint32
            | NiftiType::Int32
            | NiftiType::Uint64
            | NiftiType::Int64
            | NiftiType::Float32
            | NiftiType::Float64
    );
    if !supported {
        return Err(data_error(
            path,
            format!(
                "NIfTI datatype {} (code {}) is not supported: voxreg reads integer and float32/float64 images; convert it to float32",
                datatype_name(datatype),
                header.datatype
            ),
        ));
    }
    if &header.magic != b"n+1\0" {
        return Err(data_error(
            path,
            "a NIfTI header/image pair (.hdr/.img) is not supported: give single-file NIfTI (.nii or .nii.gz)",
        ));
    }
    let vox_offset = header.vox_offset;
    if !vox_offset.is_finite() || vox_offset < 0.0 || vox_offset.fract() != 0.0 {
        return Err(data_error(
            path,
            format!("impossible NIfTI vox_offset {vox_offset}: it must be a byte position"),
        ));
    }
    // Writers that leave vox_offset at 0 mean the first byte after the header (as nibabel
    // reads it); 348..352 holds the extension flag, so any other offset below 352 would read
    // the header as voxels.
    if vox_offset > 0.0 && (vox_offset as u64) < FIRST_DATA_BYTE {
        return Err(data_error(
            path,
            format!(
                "impossible NIfTI vox_offset {vox_offset}: it points inside the {FIRST_DATA_BYTE}-byte header (single-file NIfTI keeps its voxels at byte {FIRST_DATA_BYTE} or later)"
            ),
        ));
    }
    let offset = (vox_offset as u64).max(FIRST_DATA_BYTE);
    let data_bytes = memory::element_count(&shape)
        .and_then(|n| memory::byte_count(n, datatype.size_of() as u64));
    // The voxels are read into bytes, then converted to f32 (a copy of 4 bytes each).
    let needed = data_bytes.and_then(|b| {
        memory::element_count(&shape)
            .and_then(|n| n.checked_mul(8))
            .and_then(|f| f.checked_add(b))
    });
    memory::check_fits(needed, &format!("{} (shape {shape:?})", path.display())).map_err(
        |message| ComponentError::Data {
            path: path.to_owned(),
            message: message.replacen(&format!("{} ", path.display()), "the image ", 1),
        },
    )?;
    let data_bytes = data_bytes.unwrap_or(u64::MAX);
    Ok((
        Checked {
            header,
            datatype,
            offset,
            data_bytes,
            shape,
        },
        reader,
    ))
}

/// Reads `path`'s voxels as f32 in NIfTI's (Fortran) order, with the header's scaling (a NaN
/// or infinite `scl_slope` means no scaling, as nibabel reads it), and its header.
pub(super) fn read_voxels(
    path: &Path,
) -> Result<(NiftiHeader, Vec<usize>, Vec<f32>), ComponentError> {
    let (checked, mut reader) = read_header(path)?;
    let skip = checked.offset - HEADER_BYTES;
    let skipped = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())
        .map_err(|e| data_error(path, format!("cannot read NIfTI: {}", describe_io(&e))))?;
    let ends_early = |at: u64| {
        data_error(
            path,
            format!(
                "the file ends at byte {at}, but its header places {} bytes of voxels at vox_offset {}: it is truncated, or vox_offset is wrong",
                checked.data_bytes, checked.offset
            ),
        )
    };
    if skipped < skip {
        return Err(ends_early(HEADER_BYTES + skipped));
    }
    // Read as the data arrives (no reservation up front): a small file that declares a huge
    // volume fails at its end instead of reserving the declared size.
    let mut raw = Vec::new();
    let read = (&mut reader)
        .take(checked.data_bytes)
        .read_to_end(&mut raw)
        .map_err(|e| data_error(path, format!("cannot read NIfTI: {}", describe_io(&e))))?;
    if (read as u64) < checked.data_bytes {
        return Err(ends_early(checked.offset + read as u64));
    }
    let header = checked.header;
    let (slope, inter) = match (header.scl_slope, header.scl_inter) {
        (slope, _) if !slope.is_finite() || slope == 0.0 => (0.0, 0.0),
        (slope, inter) if inter.is_nan() => (slope, 0.0),
        (_, inter) if inter.is_infinite() => {
            return Err(data_error(
                path,
                format!("impossible NIfTI scl_inter {inter}"),
            ))
        }
        scaling => scaling,
    };
    let decoded = std::panic::catch_unwind(move || {
        InMemNiftiVolume::from_raw_fields(
            header.dim,
            checked.datatype,
            slope,
            inter,
            raw,
            header.endianness,
        )
        .and_then(|volume| volume.into_ndarray::<f32>())
    });
    let array = match decoded {
        Ok(Ok(array)) => array,
        Ok(Err(e)) => return Err(data_error(path, format!("cannot decode NIfTI voxels: {e}"))),
        Err(_) => return Err(data_error(
            path,
            "the NIfTI decoder failed on this file (it panicked): the file is damaged or unusual",
        )),
    };
    Ok((header, checked.shape, array.iter().copied().collect()))
}

/// The reader's error in words: its I/O errors carry no message of their own (they would
/// print as `Io(Custom { … })`).
pub(super) fn describe(error: &::nifti::NiftiError) -> String {
    match error {
        ::nifti::NiftiError::Io(io) => describe_io(io),
        other => other.to_string(),
    }
}

fn describe_io(io: &std::io::Error) -> String {
    if io.kind() == std::io::ErrorKind::UnexpectedEof {
        format!("the file ends early ({io}): it is truncated or damaged")
    } else {
        io.to_string()
    }
}
