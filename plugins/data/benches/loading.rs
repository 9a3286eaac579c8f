//! Data loading speed: a batch of two 64³ pairs with labels, read from `.nii.gz`, resized
//! from 96³, normalised, on 2 loader threads, stacked into tensors and augmented by DeepReg's
//! default random affine transform (issue 4's workload).
//!
//! `cargo bench -p voxreg-data --bench loading`
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use voxreg_data::synthetic::{build_paired_dataset, TemplateDataset};
use voxreg_data::{read_nifti, AffineAugmentation, NiftiFormat, PairedLoader};
use voxreg_framework::candle::Device;
use voxreg_framework::data::{to_batch, BatchStream, PipelineConfig};
use voxreg_framework::prelude::*;

fn mni(name: &str) -> Volume {
    read_nifti(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../assets/mni152/{name}.nii.gz")),
    )
    .expect("the MNI crop bundled in assets/mni152")
}

fn loading(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let options = TemplateDataset {
        template: mni("t1"),
        labels: vec![mni("gm"), mni("wm")],
        crop: Some((vec![0, 4, 0], vec![80, 80, 80])),
        shape: vec![96, 96, 96],
        pairs: [4, 0, 0],
        field_strength: 2.0,
        low_res_size: vec![4, 4, 4],
        seed: 1,
        write_fields: false,
    };
    let summary = build_paired_dataset(dir.path(), &options).unwrap();
    let config = PairedLoader {
        moving_image_shape: vec![64, 64, 64],
        fixed_image_shape: vec![64, 64, 64],
        sample_label: None,
        seed: None,
    };
    let dirs = [summary.split_dirs[0].clone()];
    let loader: Arc<dyn DataLoader> = Arc::from(
        config
            .build(&SplitSource {
                split: Split::Train,
                dirs: &dirs,
                format: &NiftiFormat {},
                labeled: true,
            })
            .unwrap(),
    );
    let pipeline = PipelineConfig {
        batch_size: 2,
        drop_remainder: true,
        threads: 2,
        prefetch: 1,
    };
    let shapes = config.image_shapes();
    let augmentation = AffineAugmentation { scale: 0.1 }.build(&shapes).unwrap();
    let mut group = c.benchmark_group("loading");
    group.sample_size(10);
    group.bench_function("batch_2_pairs_64_labels_nifti_gz", |b| {
        b.iter(|| {
            let samples = loader.epoch(0, 0)[..2].to_vec();
            let batches: Vec<_> = BatchStream::start(Arc::clone(&loader), samples, &pipeline)
                .unwrap()
                .collect();
            assert_eq!(batches.len(), 1);
            batches
        })
    });
    group.bench_function(
        "batch_2_pairs_64_labels_nifti_gz_tensors_affine_augmented",
        |b| {
            let mut seed = 0;
            b.iter(|| {
                seed += 1;
                let samples = loader.epoch(0, 0)[..2].to_vec();
                let mut stream =
                    BatchStream::start(Arc::clone(&loader), samples, &pipeline).unwrap();
                let loaded = stream.next().unwrap().unwrap();
                let (batch, _) = to_batch(&loaded, &shapes, &Device::Cpu).unwrap();
                augmentation.apply(&batch, seed).unwrap()
            })
        },
    );
    group.finish();
}

criterion_group! {
    name = benches;
    // Measure what the `voxreg` binary runs: its allocation policy (`VOXREG_SYSTEM_MALLOC=1`
    // measures glibc's default instead).
    config = {
        voxreg_framework::allocator::apply();
        Criterion::default()
    };
    targets = loading
}
criterion_main!(benches);
