//! The data pipeline between a [`DataLoader`](crate::component::DataLoader) and the model:
//! epoch samples → shuffle buffer → batches → loaded on worker threads ahead of the consumer
//! → tensors.

mod batch;
mod pipeline;
mod shuffle;

pub use batch::{to_batch, BatchInfo};
pub use pipeline::{BatchStream, PipelineConfig};
pub use shuffle::shuffle_buffer;
