//! The `.npy` array format (NumPy's one-array file, the members of an `.npz` archive): a
//! magic string, a version, a header that is a Python dict literal
//! (`{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`), then the raw elements.
//!
//! Only plain numeric arrays are read: bool, signed and unsigned integers of 1 to 8 bytes,
//! float32 and float64, either byte order, C or Fortran order. Object arrays (`|O`, whose
//! elements are pickled Python objects) are refused: nothing is ever unpickled.

/// The `.npy` magic string.
const MAGIC: &[u8] = b"\x93NUMPY";

/// An array read from a `.npy` file, as f32 in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The array's shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The elements in C order.
    pub data: Vec<f32>,
}

/// The parsed header of a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    /// The element type.
    pub dtype: Dtype,
    /// Whether the elements are stored in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Where the elements start in the file.
    pub data_offset: usize,
}

/// A numeric element type with its byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtype {
    /// The kind of number.
    pub kind: DtypeKind,
    /// Bytes per element.
    pub size: usize,
    /// Whether multi-byte elements are big-endian.
    pub big_endian: bool,
}

/// The kinds of numbers `.npy` files hold that voxreg reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtypeKind {
    /// `b`: bool, one byte, 0 or 1.
    Bool,
    /// `i`: signed integer.
    Signed,
    /// `u`: unsigned integer.
    Unsigned,
    /// `f`: IEEE float.
    Float,
}

impl Dtype {
    /// Parses a NumPy type string such as `<f4`, `|u1`, `>i2`, `|b1`. Errors say why a type
    /// is not read (object arrays are pickled Python objects, never unpickled).
    pub fn parse(descr: &str) -> Result<Self, String> {
        let unsupported = || {
            format!(
                "unsupported dtype `{descr}`: voxreg reads bool, int8/16/32/64, uint8/16/32/64, float32 and float64"
            )
        };
        let mut chars = descr.chars();
        let order = chars.next().ok_or_else(unsupported)?;
        let big_endian = match order {
            '<' | '|' => false,
            '>' => true,
            '=' => cfg!(target_endian = "big"),
            _ => return Err(unsupported()),
        };
        let rest = chars.as_str();
        if rest.starts_with('O') {
            return Err(format!(
                "dtype `{descr}` is an object array (pickled Python objects); voxreg never unpickles: save the array with a numeric dtype"
            ));
        }
        let (code, size) = rest.split_at(rest.len().min(1));
        let size: usize = size.parse().map_err(|_| unsupported())?;
        let kind = match code {
            "b" | "?" if size == 1 => DtypeKind::Bool,
            "i" if matches!(size, 1 | 2 | 4 | 8) => DtypeKind::Signed,
            "u" if matches!(size, 1 | 2 | 4 | 8) => DtypeKind::Unsigned,
            "f" if matches!(size, 4 | 8) => DtypeKind::Float,
            _ => return Err(unsupported()),
        };
        Ok(Dtype {
            kind,
            size,
            big_endian,
        })
    }

    /// Element `bytes` (exactly `size` of them) as f32.
    fn value(&self, bytes: &[u8]) -> f32 {
        let mut buffer = [0u8; 8];
        buffer[..self.size].copy_from_slice(bytes);
        if self.big_endian {
            buffer[..self.size].reverse();
        }
        let unsigned = u64::from_le_bytes(buffer);
        match self.kind {
            DtypeKind::Bool => f32::from(u8::from(unsigned != 0)),
            DtypeKind::Unsigned => unsigned as f32,
            DtypeKind::Signed => {
                let shift = 64 - 8 * self.size as u32;
                (((unsigned << shift) as i64) >> shift) as f32
            }
            DtypeKind::Float if self.size == 4 => f32::from_bits(unsigned as u32),
            DtypeKind::Float => f64::from_bits(unsigned) as f32,
        }
    }
}

/// Reads the `.npy` file at `path` as a volume (f32, C order, identity affine: `.npy` files
/// carry no geometry). Errors name the file: unreadable, larger than the memory available,
/// not a plain numeric array, truncated, non-finite values.
pub fn read_npy(
    path: &std::path::Path,
) -> Result<voxreg_framework::prelude::Volume, voxreg_framework::prelude::ComponentError> {
    use voxreg_framework::memory;
    let length = std::fs::metadata(path)
        .map_err(|e| super::data_error(path, format!("cannot read: {e}")))?
        .len();
    // The file's bytes and the f32 copy of its elements (at most 4 per byte of a u8 array).
    memory::check_fits(
        memory::byte_count(length, 5),
        &format!("the .npy file ({length} bytes)"),
    )
    .map_err(|message| super::data_error(path, message))?;
    let bytes =
        std::fs::read(path).map_err(|e| super::data_error(path, format!("cannot read: {e}")))?;
    let array = parse_npy(&bytes).map_err(|message| super::data_error(path, message))?;
    let volume = voxreg_framework::prelude::Volume {
        shape: array.shape,
        data: array.data,
        affine: super::IDENTITY,
    };
    super::check_volume(path, "the array", &volume)?;
    Ok(volume)
}

/// Parses the header of a `.npy` file from its first bytes.
pub fn parse_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a .npy array (no \\x93NUMPY magic string)".to_owned());
    }
    let major = bytes[MAGIC.len()];
    let (length_bytes, start) = match major {
        1 => (2, MAGIC.len() + 4),
        2 | 3 => (4, MAGIC.len() + 6),
        other => return Err(format!(".npy format version {other} is not supported")),
    };
    if bytes.len() < start {
        return Err("truncated .npy header".to_owned());
    }
    let mut length = [0u8; 4];
    length[..length_bytes].copy_from_slice(&bytes[MAGIC.len() + 2..start]);
    let length = u32::from_le_bytes(length) as usize;
    let end = start
        .checked_add(length)
        .filter(|&end| end <= bytes.len())
        .ok_or("truncated .npy header")?;
    let text = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| "the .npy header is not text".to_owned())?;
    let dict = HeaderDict::parse(text)?;
    Ok(NpyHeader {
        dtype: Dtype::parse(&dict.descr)?,
        fortran_order: dict.fortran_order,
        shape: dict.shape,
        data_offset: end,
    })
}

/// Reads a whole `.npy` file held in `bytes`: its elements as f32 in C order.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, String> {
    let header = parse_header(bytes)?;
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or("the .npy shape overflows")?;
    let size = header.dtype.size;
    let data = &bytes[header.data_offset..];
    let needed = count.checked_mul(size).ok_or("the .npy shape overflows")?;
    if data.len() < needed {
        return Err(format!(
            "truncated .npy data: shape {:?} needs {needed} bytes, the file holds {}",
            header.shape,
            data.len()
        ));
    }
    let values: Vec<f32> = data[..needed]
        .chunks_exact(size)
        .map(|element| header.dtype.value(element))
        .collect();
    let data = if header.fortran_order && header.shape.len() > 1 {
        fortran_to_c(&values, &header.shape)
    } else {
        values
    };
    Ok(NpyArray {
        shape: header.shape,
        data,
    })
}

/// Reorders column-major `values` over `shape` into row-major order.
fn fortran_to_c(values: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    // Fortran strides: the first axis is contiguous.
    let mut strides = vec![1usize; shape.len()];
    for axis in 1..shape.len() {
        strides[axis] = strides[axis - 1] * shape[axis - 1];
    }
    let mut index = vec![0usize; shape.len()];
    for value in out.iter_mut() {
        let source: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        *value = values[source];
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// The three keys of a `.npy` header dict.
struct HeaderDict {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl HeaderDict {
    /// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` (any key order,
    /// either quote style, optional trailing commas and padding).
    fn parse(text: &str) -> Result<Self, String> {
        let mut cursor = Cursor::new(text.trim_end_matches(['\n', ' ', '\0']));
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        cursor.expect('{')?;
        loop {
            cursor.skip_space();
            if cursor.eat('}') {
                break;
            }
            let key = cursor.string()?;
            cursor.expect(':')?;
            match key.as_str() {
                "descr" => {
                    cursor.skip_space();
                    if cursor.peek() == Some('[') {
                        return Err(
                            "structured dtypes (records) are not supported: save a plain numeric array"
                                .to_owned(),
                        );
                    }
                    descr = Some(cursor.string()?);
                }
                "fortran_order" => fortran_order = Some(cursor.boolean()?),
                "shape" => shape = Some(cursor.tuple()?),
                other => return Err(format!("unexpected key `{other}` in the .npy header")),
            }
            cursor.skip_space();
            if !cursor.eat(',') {
                cursor.expect('}')?;
                break;
            }
        }
        let missing = |key: &str| format!("the .npy header has no `{key}`");
        Ok(HeaderDict {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }
}

/// A position in the header text.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { rest: text }
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "malformed .npy header: expected `{c}` at `{}`",
                self.rest.chars().take(20).collect::<String>()
            ))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_space();
        let quote = self
            .peek()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| "malformed .npy header: expected a quoted string".to_owned())?;
        let body = &self.rest[1..];
        let end = body
            .find(quote)
            .ok_or("malformed .npy header: unterminated string")?;
        let value = body[..end].to_owned();
        self.rest = &body[end + 1..];
        Ok(value)
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.skip_space();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(value);
            }
        }
        Err("malformed .npy header: `fortran_order` is not True or False".to_owned())
    }

    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect('(')?;
        let mut values = Vec::new();
        loop {
            self.skip_space();
            if self.eat(')') {
                return Ok(values);
            }
            let digits = self
                .rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(self.rest.len());
            if digits == 0 {
                return Err("malformed .npy header: `shape` is not a tuple of sizes".to_owned());
            }
            let value = self.rest[..digits]
                .parse()
                .map_err(|_| "malformed .npy header: a size in `shape` is too large")?;
            values.push(value);
            self.rest = &self.rest[digits..];
            if !self.eat(',') {
                self.expect(')')?;
                return Ok(values);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A version-1 `.npy` file with a padded header, as NumPy writes it.
    pub(crate) fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let shape_text = match shape {
            [one] => format!("({one},)"),
            _ => format!(
                "({})",
                shape
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let order = if fortran { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape_text}, }}");
        while !(MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn every_dtype_and_byte_order_reads_its_values() {
        let cases: Vec<(&str, Vec<u8>, Vec<f32>)> = vec![
            ("|u1", vec![0, 7, 255], vec![0.0, 7.0, 255.0]),
            ("|b1", vec![0, 1, 1], vec![0.0, 1.0, 1.0]),
            ("|i1", vec![0x80, 1, 0xff], vec![-128.0, 1.0, -1.0]),
            (
                "<i2",
                [-2i16, 300, 7]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![-2.0, 300.0, 7.0],
            ),
            (
                ">i2",
                [-2i16, 300, 7]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![-2.0, 300.0, 7.0],
            ),
            (
                "<u2",
                [65535u16, 1, 2]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![65535.0, 1.0, 2.0],
            ),
            (
                "<i4",
                [-70000i32, 0, 41]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![-70000.0, 0.0, 41.0],
            ),
            (
                ">i4",
                [-70000i32, 0, 41]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![-70000.0, 0.0, 41.0],
            ),
            (
                "<i8",
                [-3i64, 5, 1 << 40]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![-3.0, 5.0, (1u64 << 40) as f32],
            ),
            (
                "<f4",
                [0.5f32, -1.25, 3.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![0.5, -1.25, 3.0],
            ),
            (
                ">f4",
                [0.5f32, -1.25, 3.0]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![0.5, -1.25, 3.0],
            ),
            (
                "<f8",
                [0.5f64, -1.25, 3.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![0.5, -1.25, 3.0],
            ),
            (
                ">f8",
                [0.5f64, -1.25, 3.0]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect(),
                vec![0.5, -1.25, 3.0],
            ),
        ];
        for (descr, data, expected) in cases {
            let array = parse_npy(&npy_bytes(descr, false, &[3], &data))
                .unwrap_or_else(|e| panic!("{descr}: {e}"));
            assert_eq!(array.shape, [3], "{descr}");
            assert_eq!(array.data, expected, "{descr}");
        }
    }

    #[test]
    fn fortran_order_is_reordered_to_c_order() {
        // The C-order array [[0, 1, 2], [3, 4, 5]] stored column-major: 0 3 1 4 2 5.
        let data: Vec<u8> = [0u8, 3, 1, 4, 2, 5].to_vec();
        let array = parse_npy(&npy_bytes("|u1", true, &[2, 3], &data)).unwrap();
        assert_eq!(array.shape, [2, 3]);
        assert_eq!(array.data, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // Three axes, (2, 2, 2): element (i, j, k) is stored at i + 2j + 4k.
        let stored: Vec<u8> = (0..8u8)
            .map(|flat| {
                let (i, j, k) = (flat % 2, (flat / 2) % 2, flat / 4);
                i * 4 + j * 2 + k
            })
            .collect();
        let array = parse_npy(&npy_bytes("|u1", true, &[2, 2, 2], &stored)).unwrap();
        assert_eq!(array.data, (0..8).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn header_variants_parse() {
        let text = "{\"shape\": (4, 5, 6), \"fortran_order\": False, \"descr\": \"<f4\"}";
        let dict = HeaderDict::parse(text).unwrap();
        assert_eq!(dict.shape, [4, 5, 6]);
        assert_eq!(dict.descr, "<f4");
        assert!(!dict.fortran_order);
        let scalar =
            HeaderDict::parse("{'descr': '<f8', 'fortran_order': True, 'shape': (), }").unwrap();
        assert!(scalar.shape.is_empty());
        assert!(scalar.fortran_order);
    }

    #[test]
    fn bad_arrays_are_clear_errors() {
        let object = parse_npy(&npy_bytes("|O", false, &[1], &[0; 8])).unwrap_err();
        assert!(object.contains("never unpickles"), "{object}");
        let complex = parse_npy(&npy_bytes("<c8", false, &[1], &[0; 8])).unwrap_err();
        assert!(complex.contains("unsupported dtype `<c8`"), "{complex}");
        let half = parse_npy(&npy_bytes("<f2", false, &[1], &[0; 2])).unwrap_err();
        assert!(half.contains("unsupported dtype"), "{half}");
        let truncated = parse_npy(&npy_bytes("<f4", false, &[4], &[0; 8])).unwrap_err();
        assert!(truncated.contains("truncated .npy data"), "{truncated}");
        assert!(parse_npy(b"PK\x03\x04 not npy")
            .unwrap_err()
            .contains("magic"));
        let mut short = npy_bytes("<f4", false, &[1], &[0; 4]);
        short.truncate(12);
        assert!(parse_npy(&short).unwrap_err().contains("truncated"));
        let record =
            HeaderDict::parse("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}")
                .err()
                .unwrap();
        assert!(record.contains("structured"), "{record}");
        let no_shape = HeaderDict::parse("{'descr': '<f4', 'fortran_order': False}")
            .err()
            .unwrap();
        assert!(no_shape.contains("no `shape`"), "{no_shape}");
    }
}
