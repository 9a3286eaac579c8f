//! Loading batches on worker threads, ahead of the consumer.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::component::{ComponentError, DataLoader, Sample, SampleRef};

/// How samples become batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Samples per batch (≥ 1).
    pub batch_size: usize,
    /// Drop a last, smaller batch (DeepReg does in training).
    pub drop_remainder: bool,
    /// Loader threads; 0 means one per core (DeepReg's `num_parallel_calls: -1`).
    pub threads: usize,
    /// Batches loaded ahead of the consumer (≥ 1).
    pub prefetch: usize,
}

/// Batches of loaded samples, in order, loaded by a thread pool while the consumer works on
/// earlier ones. Iterating yields `Err` once, for the first sample that fails to load, and
/// then ends. Dropping the stream stops the loading.
pub struct BatchStream {
    receiver: Option<Receiver<Result<Vec<Sample>, ComponentError>>>,
    producer: Option<JoinHandle<()>>,
    remaining: usize,
    failed: bool,
}

impl BatchStream {
    /// Starts loading `samples` (in this order) with `loader`.
    pub fn start(
        loader: Arc<dyn DataLoader>,
        samples: Vec<SampleRef>,
        config: &PipelineConfig,
    ) -> Result<Self, ComponentError> {
        if config.batch_size == 0 {
            return Err(ComponentError::invalid(
                "data pipeline",
                "batch_size must be at least 1",
            ));
        }
        let mut batches: Vec<Vec<SampleRef>> = samples
            .chunks(config.batch_size)
            .map(<[SampleRef]>::to_vec)
            .collect();
        if config.drop_remainder && batches.last().is_some_and(|b| b.len() < config.batch_size) {
            batches.pop();
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("voxreg-loader-{i}"))
            .build()
            .map_err(|e| {
                ComponentError::invalid(
                    "data pipeline",
                    format!("cannot start loader threads: {e}"),
                )
            })?;
        let (sender, receiver) = sync_channel(config.prefetch.max(1));
        let remaining = batches.len();
        let producer = std::thread::Builder::new()
            .name("voxreg-batches".to_owned())
            .spawn(move || {
                for batch in batches {
                    let loaded: Result<Vec<Sample>, ComponentError> =
                        pool.install(|| batch.par_iter().map(|s| loader.load(s)).collect());
                    let failed = loaded.is_err();
                    if sender.send(loaded).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| {
                ComponentError::invalid(
                    "data pipeline",
                    format!("cannot start the batch thread: {e}"),
                )
            })?;
        Ok(BatchStream {
            receiver: Some(receiver),
            producer: Some(producer),
            remaining,
            failed: false,
        })
    }

    /// Batches not yet yielded.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Iterator for BatchStream {
    type Item = Result<Vec<Sample>, ComponentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.failed {
            return None;
        }
        let received = self.receiver.as_ref()?.recv();
        self.remaining -= 1;
        match received {
            Ok(Ok(batch)) => Some(Ok(batch)),
            Ok(Err(error)) => {
                self.failed = true;
                Some(Err(error))
            }
            Err(_) => {
                self.failed = true;
                Some(Err(ComponentError::invalid(
                    "data pipeline",
                    "the loading thread stopped unexpectedly (a loader panicked)",
                )))
            }
        }
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        // Closing the channel first unblocks a producer waiting to send.
        self.receiver.take();
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::ImageId;

    struct Counting {
        fail_at: Option<usize>,
    }

    impl DataLoader for Counting {
        fn epoch(&self, _epoch: u64, _seed: u64) -> Vec<SampleRef> {
            (0..10)
                .map(|i| SampleRef {
                    moving: i,
                    fixed: i,
                    label: None,
                })
                .collect()
        }

        fn load(&self, sample: &SampleRef) -> Result<Sample, ComponentError> {
            if Some(sample.moving) == self.fail_at {
                return Err(ComponentError::invalid(
                    "counting",
                    format!("sample {} is broken", sample.moving),
                ));
            }
            let id = ImageId {
                group: None,
                name: sample.moving.to_string(),
            };
            Ok(Sample {
                reference: sample.clone(),
                ids: (id.clone(), id),
                moving_image: vec![sample.moving as f32],
                fixed_image: vec![0.0],
                moving_label: None,
                fixed_label: None,
                fixed_affine: [[0.0; 4]; 4],
                extra: Vec::new(),
            })
        }
    }

    fn config(batch_size: usize, drop_remainder: bool) -> PipelineConfig {
        PipelineConfig {
            batch_size,
            drop_remainder,
            threads: 2,
            prefetch: 2,
        }
    }

    fn run(loader: Counting, config: &PipelineConfig) -> Vec<Result<Vec<usize>, String>> {
        let loader: Arc<dyn DataLoader> = Arc::new(loader);
        let samples = loader.epoch(0, 0);
        BatchStream::start(loader, samples, config)
            .unwrap()
            .map(|batch| {
                batch
                    .map(|b| b.iter().map(|s| s.reference.moving).collect())
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn batches_keep_the_order_and_the_remainder_rule() {
        let batches = run(Counting { fail_at: None }, &config(4, false));
        assert_eq!(
            batches,
            vec![Ok(vec![0, 1, 2, 3]), Ok(vec![4, 5, 6, 7]), Ok(vec![8, 9])]
        );
        let batches = run(Counting { fail_at: None }, &config(4, true));
        assert_eq!(batches.len(), 2);
    }

    #[test]
    fn a_loading_error_is_yielded_once_and_ends_the_stream() {
        let batches = run(Counting { fail_at: Some(5) }, &config(3, false));
        assert_eq!(batches.len(), 2);
        assert!(batches[0].is_ok());
        assert!(batches[1]
            .as_ref()
            .unwrap_err()
            .contains("sample 5 is broken"));
    }

    #[test]
    fn dropping_the_stream_early_stops_loading() {
        let loader: Arc<dyn DataLoader> = Arc::new(Counting { fail_at: None });
        let samples = loader.epoch(0, 0);
        let mut stream = BatchStream::start(loader, samples, &config(1, false)).unwrap();
        assert!(stream.next().unwrap().is_ok());
        assert_eq!(stream.remaining(), 9);
        drop(stream);
    }

    #[test]
    fn a_zero_batch_size_is_an_error() {
        let loader: Arc<dyn DataLoader> = Arc::new(Counting { fail_at: None });
        assert!(BatchStream::start(loader, Vec::new(), &config(0, false)).is_err());
    }
}
