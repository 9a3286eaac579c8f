//! File loaders on generated files in DeepReg's layouts, on broken files, and on the shipped
//! MNI template.

use std::fs;
use std::path::Path;

use voxreg_framework::prelude::*;

use super::{read_nifti, write_h5, write_nifti, H5Format, NiftiFormat, IDENTITY};

fn volume(shape: &[usize], offset: f32) -> Volume {
    let count: usize = shape.iter().product();
    Volume {
        data: (0..count).map(|i| i as f32 * 0.5 + offset).collect(),
        shape: shape.to_vec(),
        affine: [
            [0.0, -2.0, 0.0, 10.0],
            [1.5, 0.0, 0.0, -20.0],
            [0.0, 0.0, 3.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
    }
}

#[test]
fn nifti_round_trips_data_shape_and_affine() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.nii.gz", "b.nii"] {
        let path = dir.path().join(name);
        let original = volume(&[3, 4, 5], 1.0);
        write_nifti(&path, &original).unwrap();
        assert_eq!(read_nifti(&path).unwrap(), original, "{name}");
    }
    let labels = volume(&[3, 4, 5, 2], 0.0);
    let path = dir.path().join("labels.nii.gz");
    write_nifti(&path, &labels).unwrap();
    assert_eq!(read_nifti(&path).unwrap().shape, vec![3, 4, 5, 2]);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn nifti_integer_types_are_scaled_by_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaled.nii");
    let array = ndarray::ArrayD::from_shape_vec(vec![2, 2, 1], vec![0u8, 1, 2, 255]).unwrap();
    nifti::writer::WriterOptions::new(&path)
        .write_nifti(&array)
        .unwrap();
    // The writer always stores slope 1 and intercept 0: patch the header (NIfTI-1 offsets 112
    // and 116, little-endian f32) to slope 2, intercept -1.
    let mut bytes = fs::read(&path).unwrap();
    bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
    bytes[116..120].copy_from_slice(&(-1.0f32).to_le_bytes());
    fs::write(&path, bytes).unwrap();
    let read = read_nifti(&path).unwrap();
    assert_eq!(read.data, vec![-1.0, 1.0, 3.0, 509.0]);
    let array = ndarray::ArrayD::from_shape_vec(vec![2, 1, 1], vec![-300i16, 7]).unwrap();
    let path = dir.path().join("int16.nii.gz");
    nifti::writer::WriterOptions::new(&path)
        .write_nifti(&array)
        .unwrap();
    assert_eq!(read_nifti(&path).unwrap().data, vec![-300.0, 7.0]);
}

#[test]
fn broken_nifti_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.nii.gz");
    write_nifti(&good, &volume(&[8, 8, 8], 0.0)).unwrap();
    let bytes = fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.nii.gz");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.nii");
    fs::write(&garbage, vec![7u8; 400]).unwrap();
    let missing = read_nifti(&dir.path().join("missing.nii"))
        .unwrap_err()
        .to_string();
    assert!(missing.ends_with("missing.nii: no such file"), "{missing}");
    for path in [&truncated, &garbage] {
        let error = read_nifti(path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("cannot read NIfTI"), "{error}");
        assert!(!error.contains("Io("), "{error}");
    }
    let error = read_nifti(&truncated).unwrap_err().to_string();
    assert!(error.contains("it is truncated or damaged"), "{error}");
    let mut bad = volume(&[2, 2, 2], 0.0);
    bad.data[5] = f32::NAN;
    let nan = dir.path().join("nan.nii");
    write_nifti(&nan, &bad).unwrap();
    let error = read_nifti(&nan).unwrap_err().to_string();
    assert!(
        error.contains("non-finite value NaN at flat index 5"),
        "{error}"
    );
}

fn write_layout(root: &Path, kind: &str, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let path = root.join(kind).join(format!("{name}.nii.gz"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_nifti(&path, &volume(&[2, 3, 4], i as f32)).unwrap();
    }
}

#[test]
fn nifti_folders_follow_deepregs_layouts() {
    let dir = tempfile::tempdir().unwrap();
    write_layout(
        dir.path(),
        "moving_images",
        &["case2", "case1", "sub/case3"],
    );
    let files = NiftiFormat {}
        .open(dir.path(), "moving_images", false)
        .unwrap();
    let names: Vec<&str> = files.ids().iter().map(|id| id.name.as_str()).collect();
    assert_eq!(names, ["case1", "case2", "sub/case3"]);
    assert_eq!(
        files.load(2).unwrap().data[0],
        2.0,
        "sub/case3 was written third"
    );

    write_layout(dir.path(), "images", &["g1/a", "g1/b", "g2/a"]);
    let grouped = NiftiFormat {}.open(dir.path(), "images", true).unwrap();
    let ids: Vec<String> = grouped.ids().iter().map(ToString::to_string).collect();
    assert_eq!(ids, ["g1/a", "g1/b", "g2/a"]);

    let error = NiftiFormat {}
        .open(dir.path(), "moving_images", true)
        .err()
        .unwrap();
    assert!(error.to_string().contains("group folder"), "{error}");
    let error = NiftiFormat {}
        .open(dir.path(), "fixed_images", false)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("fixed_images: missing folder"),
        "{error}"
    );
    fs::create_dir_all(dir.path().join("labels")).unwrap();
    let error = NiftiFormat {}
        .open(dir.path(), "labels", false)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("no .nii or .nii.gz files"),
        "{error}"
    );
}

#[test]
fn h5_files_follow_deepregs_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        ("case_b".to_owned(), volume(&[2, 3, 4], 1.0)),
        ("case_a".to_owned(), volume(&[2, 3, 4, 3], 2.0)),
    ];
    write_h5(&dir.path().join("moving_images.h5"), &entries).unwrap();
    let files = H5Format {}
        .open(dir.path(), "moving_images", false)
        .unwrap();
    let names: Vec<&str> = files.ids().iter().map(|id| id.name.as_str()).collect();
    assert_eq!(names, ["case_a", "case_b"]);
    let loaded = files.load(0).unwrap();
    assert_eq!(loaded.shape, vec![2, 3, 4, 3]);
    assert_eq!(loaded.data, entries[1].1.data);
    assert_eq!(loaded.affine, IDENTITY);

    let grouped = vec![
        ("group-1-0".to_owned(), volume(&[2, 2, 2], 0.0)),
        ("group-1-1".to_owned(), volume(&[2, 2, 2], 0.0)),
        ("group-heart-2".to_owned(), volume(&[2, 2, 2], 0.0)),
    ];
    write_h5(&dir.path().join("images.h5"), &grouped).unwrap();
    let files = H5Format {}.open(dir.path(), "images", true).unwrap();
    let ids: Vec<String> = files.ids().iter().map(ToString::to_string).collect();
    assert_eq!(ids, ["1/0", "1/1", "heart/2"]);

    write_h5(
        &dir.path().join("labels.h5"),
        &[("case_a".to_owned(), volume(&[2, 2, 2], 0.0))],
    )
    .unwrap();
    let error = H5Format {}.open(dir.path(), "labels", true).err().unwrap();
    assert!(
        error
            .to_string()
            .contains("`case_a` does not read `group-<group>-<index>`"),
        "{error}"
    );
    let error = H5Format {}
        .open(dir.path(), "fixed_images", false)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("fixed_images.h5: missing file"),
        "{error}"
    );
}

#[test]
fn h5_integer_datasets_read_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("images.h5");
    let file = hdf5::File::create(&path).unwrap();
    let array = ndarray::ArrayD::from_shape_vec(vec![2, 2], vec![1i16, -2, 300, 4]).unwrap();
    file.new_dataset_builder()
        .with_data(&array)
        .create("x")
        .unwrap();
    drop(file);
    let files = H5Format {}.open(dir.path(), "images", false).unwrap();
    assert_eq!(files.load(0).unwrap().data, vec![1.0, -2.0, 300.0, 4.0]);
}

/// The MNI ICBM152 crop bundled in `assets/mni152` (see its README): real data, a real
/// header.
#[test]
fn reads_the_mni_template() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/mni152/t1.nii.gz");
    let t1 = read_nifti(&path).unwrap();
    assert_eq!(t1.shape, vec![80, 88, 80]);
    assert_eq!(
        [t1.affine[0][3], t1.affine[1][3], t1.affine[2][3]],
        [-79.5, -107.5, -59.5]
    );
    assert_eq!(
        [t1.affine[0][0], t1.affine[1][1], t1.affine[2][2]],
        [2.0, 2.0, 2.0]
    );
    let max = t1.data.iter().copied().fold(f32::MIN, f32::max);
    let min = t1.data.iter().copied().fold(f32::MAX, f32::min);
    assert!(
        min >= 0.0 && max <= 255.0 && max > 100.0,
        "range {min}..{max}"
    );
}

#[test]
fn impossible_nifti_dimensions_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dims.nii");
    write_nifti(&path, &volume(&[2, 2, 2], 0.0)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    // dim[0] (the rank) is the i16 at offset 40 of the NIfTI-1 header.
    bytes[40..42].copy_from_slice(&9i16.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let error = read_nifti(&path).unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    bytes[40..42].copy_from_slice(&3i16.to_le_bytes());
    bytes[42..44].copy_from_slice(&0i16.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let error = read_nifti(&path).unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
}

#[test]
fn nifti_voxels_are_read_from_vox_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.nii");
    let original = volume(&[2, 3, 2], 1.5);
    write_nifti(&path, &original).unwrap();
    let bytes = fs::read(&path).unwrap();
    // vox_offset is the f32 at byte 108; the voxels start at byte 352 in what we write.
    let mut padded = bytes[..352].to_vec();
    padded[108..112].copy_from_slice(&400f32.to_le_bytes());
    padded.resize(400, 0xAB);
    padded.extend_from_slice(&bytes[352..]);
    fs::write(&path, &padded).unwrap();
    assert_eq!(read_nifti(&path).unwrap().data, original.data);

    let mut inside = bytes.clone();
    inside[108..112].copy_from_slice(&100f32.to_le_bytes());
    fs::write(&path, &inside).unwrap();
    let error = read_nifti(&path).unwrap_err().to_string();
    assert!(error.contains("inside the 352-byte header"), "{error}");
    assert!(error.contains("offset.nii"), "{error}");
}

#[test]
fn a_small_h5_file_declaring_a_huge_dataset_is_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("images.h5");
    {
        let file = hdf5::File::create(&path).unwrap();
        file.new_dataset::<f32>()
            .shape([100_000, 100_000, 100_000])
            .chunk([8, 8, 8])
            .create("big")
            .unwrap();
    }
    assert!(fs::metadata(&path).unwrap().len() < 1 << 20, "a small file");
    let loader = H5Format::default()
        .open(dir.path(), "images", false)
        .unwrap();
    for error in [
        loader.shape(0).unwrap_err().to_string(),
        loader.load(0).unwrap_err().to_string(),
    ] {
        assert!(error.contains("dataset `big`"), "{error}");
        assert!(error.contains("memory"), "{error}");
        assert!(error.contains("images.h5"), "{error}");
    }
}

#[cfg(unix)]
#[test]
fn a_nifti_file_whose_name_is_not_utf8_is_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fs::create_dir(&images).unwrap();
    write_nifti(&images.join("case_1.nii.gz"), &volume(&[2, 2, 2], 0.0)).unwrap();
    let odd = images.join(std::ffi::OsStr::from_bytes(b"case_\xff.nii.gz"));
    write_nifti(&odd, &volume(&[2, 2, 2], 0.0)).unwrap();
    let loader = NiftiFormat::default()
        .open(dir.path(), "images", false)
        .unwrap();
    let names: Vec<&str> = loader.ids().iter().map(|id| id.name.as_str()).collect();
    assert_eq!(names, ["case_1"]);
}
