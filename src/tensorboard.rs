//! TensorBoard event files: the scalars of a training run, as TensorBoard (and DeepReg's
//! Keras callback, whose `train/` and `validation/` folders DeepReg users watch) reads them.
//!
//! An event file is a sequence of TFRecords, each `length` (u64, little endian),
//! `masked_crc32c(length)` (u32), `data`, `masked_crc32c(data)` (u32), where
//! `masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8` (wrapping) with `c` the CRC-32C
//! of `x`. Each `data` is a protobuf `tensorflow.Event`: the first carries
//! `file_version = "brain.Event:2"`, the others a `Summary` of scalar values
//! (`simple_value`) under a tag at a step.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

/// An event file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum EventFileError {
    /// Creating, writing or reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (or folder).
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record is truncated or its checksum does not match.
    #[error("{}: {problem} at byte {offset}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// A record holds no valid `Event`.
    #[error("{}: the event at byte {offset}: {source}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: usize,
        /// The cause.
        source: prost::DecodeError,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EventFileError + '_ {
    move |source| EventFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `tensorflow.Event`, the fields voxreg writes (the `what` one-of as optional fields: at most
/// one is set, so the encoding is the one-of's).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// `brain.Event:2` in a file's first event.
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    /// Summary values.
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a scalar (`simple_value`) or an image (the `value`
/// one-of: at most one is set).
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    /// The series' name, e.g. `epoch_loss`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The scalar.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    /// The image.
    #[prost(message, optional, tag = "4")]
    pub image: Option<SummaryImage>,
}

/// `tensorflow.Summary.Image`: an encoded (PNG) image and its size.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryImage {
    /// Rows.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// Columns.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grey, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// The PNG file's bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// TensorFlow's masked CRC-32C of a record's parts.
fn masked_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
fn record(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// Seconds since the Unix epoch, with microseconds.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes one event file, flushing after every batch of scalars so TensorBoard sees them
/// while training runs.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `<dir>/events.out.tfevents.<seconds>.voxreg.<pid>.v2` (and `dir`) and writes
    /// the file-version event.
    pub fn create(dir: &Path) -> Result<Self, EventFileError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let wall_time = now();
        let path = dir.join(format!(
            "events.out.tfevents.{}.voxreg.{}.v2",
            wall_time as u64,
            std::process::id()
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let mut writer = Self {
            path,
            file: BufWriter::new(file),
        };
        writer.write_event(&Event {
            wall_time,
            step: 0,
            file_version: Some("brain.Event:2".to_owned()),
            summary: None,
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_event(&mut self, event: &Event) -> Result<(), EventFileError> {
        self.file
            .write_all(&record(&event.encode_to_vec()))
            .map_err(io_error(&self.path))
    }

    /// Writes `scalars` (tag, value) as one event at `step`.
    pub fn scalars<'a>(
        &mut self,
        step: usize,
        scalars: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<(), EventFileError> {
        let value: Vec<SummaryValue> = scalars
            .into_iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.to_owned(),
                simple_value: Some(v as f32),
                image: None,
            })
            .collect();
        self.write_event(&Event {
            wall_time: now(),
            step: step as i64,
            file_version: None,
            summary: Some(Summary { value }),
        })
    }

    /// Writes grey `images` (tag, height, width, row-major intensities) as one event at
    /// `step`, each scaled from its own minimum (black) to maximum (white) and PNG-encoded.
    pub fn images<'a>(
        &mut self,
        step: usize,
        images: impl IntoIterator<Item = (&'a str, usize, usize, &'a [f32])>,
    ) -> Result<(), EventFileError> {
        let mut value = Vec::new();
        for (tag, height, width, values) in images {
            let encoded = grey_png(width, height, values).map_err(|e| EventFileError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!("encoding the image `{tag}`: {e}")),
            })?;
            value.push(SummaryValue {
                tag: tag.to_owned(),
                simple_value: None,
                image: Some(SummaryImage {
                    height: height as i32,
                    width: width as i32,
                    colorspace: 1,
                    encoded_image_string: encoded,
                }),
            });
        }
        self.write_event(&Event {
            wall_time: now(),
            step: step as i64,
            file_version: None,
            summary: Some(Summary { value }),
        })
    }

    /// Flushes what was written to the file.
    pub fn flush(&mut self) -> Result<(), EventFileError> {
        self.file.flush().map_err(io_error(&self.path))
    }
}

/// An 8-bit grey PNG of `values` (`height × width`, rows first), scaled from their minimum
/// to their maximum (a flat image is black).
fn grey_png(width: usize, height: usize, values: &[f32]) -> Result<Vec<u8>, png::EncodingError> {
    let (lo, hi) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let pixels: Vec<u8> = values
        .iter()
        .map(|&v| {
            if v.is_finite() && lo.is_finite() {
                ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect();
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

/// Reads every event of an event file, checking each record's two checksums.
pub fn read_events(path: &Path) -> Result<Vec<Event>, EventFileError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_error(path))?;
    let mut events = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let corrupt = |problem| EventFileError::Corrupt {
            path: path.to_owned(),
            offset,
            problem,
        };
        let (header, after) = rest
            .split_at_checked(12)
            .ok_or_else(|| corrupt("a truncated record"))?;
        let (length, crc) = header.split_at(8);
        if masked_crc(length).to_le_bytes() != crc {
            return Err(corrupt("bad length checksum"));
        }
        let mut length_bytes = [0u8; 8];
        length_bytes.copy_from_slice(length);
        let length = usize::try_from(u64::from_le_bytes(length_bytes))
            .map_err(|_| corrupt("an impossible record length"))?;
        let (data, after) = after
            .split_at_checked(length)
            .ok_or_else(|| corrupt("a truncated record"))?;
        let (crc, after) = after
            .split_at_checked(4)
            .ok_or_else(|| corrupt("a truncated record"))?;
        if masked_crc(data).to_le_bytes() != crc {
            return Err(corrupt("bad data checksum"));
        }
        events.push(
            Event::decode(data).map_err(|source| EventFileError::Decode {
                path: path.to_owned(),
                offset,
                source,
            })?,
        );
        rest = after;
    }
    Ok(events)
}

/// The scalars of `events` as `(tag, step, value)`, in file order.
pub fn scalars(events: &[Event]) -> Vec<(String, i64, f32)> {
    events
        .iter()
        .filter_map(|e| e.summary.as_ref().map(|s| (e.step, s)))
        .flat_map(|(step, summary)| {
            summary
                .value
                .iter()
                .filter_map(move |v| v.simple_value.map(|x| (v.tag.clone(), step, x)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_of_known_values() {
        // CRC-32C("123456789") = 0xe3069283 (RFC 3720's check value); rotated right by 15
        // bits 0x2507c60d, plus 0xa282ead8 (mod 2³²) is 0xc78ab0e5.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    /// Two events as the `tensorboard` Python package (2.21, its `RecordWriter` and
    /// `event_pb2`) writes them: `Event(wall_time=1.5, file_version="brain.Event:2")` and
    /// `Event(wall_time=2.25, step=3, summary=Summary(value=[Value(tag="epoch_loss",
    /// simple_value=0.5), Value(tag="epoch_label_binary_dice", simple_value=0.25)]))`.
    const WRITTEN_BY_TENSORBOARD: &str = "1800000000000000a37f4b2209000000000000f83f1a0d62\
        7261696e2e4576656e743a322a28646c40000000000000002817f495090000000000000240100\
        32a330a110a0a65706f63685f6c6f7373150000003f0a1e0a1765706f63685f6c6162656c5f62\
        696e6172795f64696365150000803e0feaa6b2";

    fn unhex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn tensorboards_events() -> [Event; 2] {
        let value = |tag: &str, v: f32| SummaryValue {
            tag: tag.to_owned(),
            simple_value: Some(v),
            image: None,
        };
        [
            Event {
                wall_time: 1.5,
                step: 0,
                file_version: Some("brain.Event:2".to_owned()),
                summary: None,
            },
            Event {
                wall_time: 2.25,
                step: 3,
                file_version: None,
                summary: Some(Summary {
                    value: vec![
                        value("epoch_loss", 0.5),
                        value("epoch_label_binary_dice", 0.25),
                    ],
                }),
            },
        ]
    }

    #[test]
    fn records_are_byte_for_byte_tensorboards() {
        let expected = unhex(WRITTEN_BY_TENSORBOARD);
        let ours: Vec<u8> = tensorboards_events()
            .iter()
            .flat_map(|e| record(&e.encode_to_vec()))
            .collect();
        assert_eq!(ours, expected);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.1.python.1.v2");
        std::fs::write(&path, &expected).unwrap();
        assert_eq!(read_events(&path).unwrap(), tensorboards_events());
    }

    #[test]
    fn written_scalars_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(&dir.path().join("train")).unwrap();
        writer
            .scalars(3, [("epoch_loss", 0.5), ("epoch_label_binary_dice", 0.25)])
            .unwrap();
        writer.flush().unwrap();
        let name = writer.path().file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let events = read_events(writer.path()).unwrap();
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(
            scalars(&events),
            [
                ("epoch_loss".to_owned(), 3, 0.5),
                ("epoch_label_binary_dice".to_owned(), 3, 0.25)
            ]
        );
    }

    #[test]
    fn written_images_read_back_as_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path()).unwrap();
        let values: Vec<f32> = (0..6).map(|v| v as f32 * 0.2).collect();
        writer
            .images(4, [("fixed_image", 2, 3, &values[..])])
            .unwrap();
        writer.flush().unwrap();
        let events = read_events(writer.path()).unwrap();
        let image = events[1].summary.as_ref().unwrap().value[0].clone();
        assert_eq!((image.tag.as_str(), events[1].step), ("fixed_image", 4));
        let image = image.image.unwrap();
        assert_eq!((image.height, image.width, image.colorspace), (2, 3, 1));
        let decoder = png::Decoder::new(std::io::Cursor::new(image.encoded_image_string));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(pixels, [0, 51, 102, 153, 204, 255]);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path()).unwrap();
        writer.scalars(1, [("epoch_loss", 1.0)]).unwrap();
        writer.flush().unwrap();
        let path = writer.path().to_owned();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let error = read_events(&path).unwrap_err().to_string();
        assert!(error.contains("bad data checksum"), "{error}");
        assert!(error.contains("events.out.tfevents"), "{error}");
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let error = read_events(&path).unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
    }
}
