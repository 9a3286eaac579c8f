//! The `image` format on generated PNG and TIFF files: bit depths, colour to grey, multi-page
//! TIFF, the folder layout, voxel size, and unsupported or broken files.

use std::fs;
use std::path::Path;

use tiff::encoder::{colortype, TiffEncoder};
use voxreg_framework::prelude::*;

use super::{read_image, RasterFormat, LUMA};

fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    bytes: &[u8],
) {
    let file = fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(color);
    encoder.set_depth(depth);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(bytes).unwrap();
}

fn grey8_png(path: &Path, width: u32, height: u32, pixels: &[u8]) {
    write_png(
        path,
        width,
        height,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        pixels,
    );
}

#[test]
fn grey_png_keeps_rows_then_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.png");
    // 3 wide, 2 high.
    grey8_png(&path, 3, 2, &[0, 1, 2, 10, 11, 255]);
    let volume = read_image(&path, None).unwrap();
    assert_eq!(volume.shape, vec![2, 3]);
    assert_eq!(volume.data, vec![0.0, 1.0, 2.0, 10.0, 11.0, 255.0]);
    assert_eq!(volume.affine, super::IDENTITY);
}

#[test]
fn sixteen_bit_png_keeps_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.png");
    let values: [u16; 2] = [1, 65535];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    write_png(
        &path,
        2,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &bytes,
    );
    assert_eq!(read_image(&path, None).unwrap().data, vec![1.0, 65535.0]);
}

#[test]
fn colour_png_becomes_bt601_luma_and_drops_alpha() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = dir.path().join("rgb.png");
    write_png(
        &rgb,
        2,
        1,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        &[100, 50, 200, 0, 0, 0],
    );
    let expected = 0.299 * 100.0 + 0.587 * 50.0 + 0.114 * 200.0;
    let data = read_image(&rgb, None).unwrap().data;
    assert!((data[0] - expected).abs() < 1e-4, "{data:?}");
    assert_eq!(data[1], 0.0);
    let rgba = dir.path().join("rgba.png");
    write_png(
        &rgba,
        1,
        1,
        png::ColorType::Rgba,
        png::BitDepth::Eight,
        &[10, 20, 30, 7],
    );
    let luma = LUMA[0] * 10.0 + LUMA[1] * 20.0 + LUMA[2] * 30.0;
    assert!((read_image(&rgba, None).unwrap().data[0] - luma).abs() < 1e-4);
    let grey_alpha = dir.path().join("ga.png");
    write_png(
        &grey_alpha,
        1,
        1,
        png::ColorType::GrayscaleAlpha,
        png::BitDepth::Eight,
        &[42, 0],
    );
    assert_eq!(read_image(&grey_alpha, None).unwrap().data, vec![42.0]);
}

#[test]
fn tiff_reads_8_and_16_bit_grey_and_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let grey8 = dir.path().join("g8.tif");
    let mut encoder = TiffEncoder::new(fs::File::create(&grey8).unwrap()).unwrap();
    encoder
        .write_image::<colortype::Gray8>(2, 2, &[1, 2, 3, 4])
        .unwrap();
    let volume = read_image(&grey8, None).unwrap();
    assert_eq!(
        (volume.shape, volume.data),
        (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])
    );

    let grey16 = dir.path().join("g16.tiff");
    let mut encoder = TiffEncoder::new(fs::File::create(&grey16).unwrap()).unwrap();
    encoder
        .write_image::<colortype::Gray16>(3, 1, &[0, 1000, 65535])
        .unwrap();
    assert_eq!(
        read_image(&grey16, None).unwrap().data,
        vec![0.0, 1000.0, 65535.0]
    );

    let rgb = dir.path().join("rgb.TIF");
    let mut encoder = TiffEncoder::new(fs::File::create(&rgb).unwrap()).unwrap();
    encoder
        .write_image::<colortype::RGB8>(1, 1, &[255, 0, 0])
        .unwrap();
    assert!((read_image(&rgb, None).unwrap().data[0] - 0.299 * 255.0).abs() < 1e-3);
}

#[test]
fn multi_page_tiff_is_height_width_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.tif");
    let mut encoder = TiffEncoder::new(fs::File::create(&path).unwrap()).unwrap();
    // Two pages of 2 wide × 1 high.
    encoder
        .write_image::<colortype::Gray8>(2, 1, &[1, 2])
        .unwrap();
    encoder
        .write_image::<colortype::Gray8>(2, 1, &[3, 4])
        .unwrap();
    drop(encoder);
    let volume = read_image(&path, None).unwrap();
    assert_eq!(volume.shape, vec![1, 2, 2]);
    // [row 0, column 0, page 0], [0, 0, 1], [0, 1, 0], [0, 1, 1].
    assert_eq!(volume.data, vec![1.0, 3.0, 2.0, 4.0]);
    let format = RasterFormat::default();
    fs::create_dir(dir.path().join("images")).unwrap();
    fs::rename(&path, dir.path().join("images/stack.tif")).unwrap();
    let loader = format.open(dir.path(), "images", false).unwrap();
    assert_eq!(loader.shape(0).unwrap(), vec![1, 2, 2]);
}

#[test]
fn pages_of_different_sizes_are_an_error_naming_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.tif");
    let mut encoder = TiffEncoder::new(fs::File::create(&path).unwrap()).unwrap();
    encoder
        .write_image::<colortype::Gray8>(2, 1, &[1, 2])
        .unwrap();
    encoder.write_image::<colortype::Gray8>(1, 1, &[3]).unwrap();
    drop(encoder);
    let message = read_image(&path, None).unwrap_err().to_string();
    assert!(
        message.contains("bad.tif") && message.contains("page 1"),
        "{message}"
    );
}

#[test]
fn unsupported_tiff_kinds_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cmyk.tif");
    let mut encoder = TiffEncoder::new(fs::File::create(&path).unwrap()).unwrap();
    encoder
        .write_image::<colortype::CMYK8>(1, 1, &[1, 2, 3, 4])
        .unwrap();
    drop(encoder);
    let message = read_image(&path, None).unwrap_err().to_string();
    assert!(
        message.contains("cmyk.tif") && message.contains("CMYK"),
        "{message}"
    );
    let signed = dir.path().join("signed.tif");
    let mut encoder = TiffEncoder::new(fs::File::create(&signed).unwrap()).unwrap();
    encoder
        .write_image::<colortype::GrayI16>(1, 1, &[-3])
        .unwrap();
    drop(encoder);
    let message = read_image(&signed, None).unwrap_err().to_string();
    assert!(message.contains("signed"), "{message}");
}

#[test]
fn broken_and_misnamed_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("broken.png");
    fs::write(&png, b"not a png at all").unwrap();
    let message = read_image(&png, None).unwrap_err().to_string();
    assert!(
        message.contains("broken.png") && message.contains("PNG"),
        "{message}"
    );
    let tif = dir.path().join("broken.tif");
    fs::write(&tif, b"II*\0garbage").unwrap();
    assert!(read_image(&tif, None)
        .unwrap_err()
        .to_string()
        .contains("broken.tif"));
    let other = dir.path().join("a.jpg");
    fs::write(&other, b"").unwrap();
    assert!(read_image(&other, None).is_err());
}

#[test]
fn the_format_reads_deepreg_folders_with_ids_and_voxel_size() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("moving_images");
    fs::create_dir_all(images.join("sub")).unwrap();
    grey8_png(&images.join("b.png"), 2, 1, &[1, 2]);
    grey8_png(&images.join("sub/a.PNG"), 2, 1, &[3, 4]);
    fs::write(images.join("notes.txt"), "ignored").unwrap();
    let mut encoder = TiffEncoder::new(fs::File::create(images.join("c.tiff")).unwrap()).unwrap();
    encoder
        .write_image::<colortype::Gray8>(2, 1, &[5, 6])
        .unwrap();
    let format = RasterFormat {
        voxel_size: Some(vec![0.5, 2.0]),
    };
    let loader = format.open(dir.path(), "moving_images", false).unwrap();
    let names: Vec<String> = loader.ids().iter().map(ToString::to_string).collect();
    assert_eq!(names, vec!["b", "c", "sub/a"]);
    let volume = loader.load(2).unwrap();
    assert_eq!(volume.data, vec![3.0, 4.0]);
    assert_eq!(volume.affine[0][0], 0.5);
    assert_eq!(volume.affine[1][1], 2.0);
    assert_eq!(loader.shape(0).unwrap(), vec![1, 2]);
    assert!(format.has(dir.path(), "moving_images"));
    assert!(!format.has(dir.path(), "moving_labels"));

    let empty = dir.path().join("fixed_images");
    fs::create_dir(&empty).unwrap();
    let message = format
        .open(dir.path(), "fixed_images", false)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("no .png"), "{message}");
    let bad = RasterFormat {
        voxel_size: Some(vec![0.0, 1.0]),
    };
    let message = bad
        .open(dir.path(), "moving_images", false)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("voxel_size"), "{message}");
    let three = RasterFormat {
        voxel_size: Some(vec![1.0, 1.0, 1.0]),
    };
    let loader = three.open(dir.path(), "moving_images", false).unwrap();
    let message = loader.load(0).unwrap_err().to_string();
    assert!(
        message.contains("voxel_size") && message.contains("b.png"),
        "{message}"
    );
}
