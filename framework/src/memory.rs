//! Sizes that come from outside (a file's declared shape, a configured image shape, a flag)
//! checked before anything is allocated: counted with checked arithmetic and compared with
//! the memory the system has available, so an absurd size is refused with its source named
//! instead of aborting the process.

use std::fmt;

/// Bytes, printed in binary units (`12.0 GiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} bytes", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

/// The product of `dims`, `None` when it overflows `u64`.
pub fn element_count(dims: &[usize]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |n, &d| n.checked_mul(u64::try_from(d).ok()?))
}

/// `count × bytes_each`, `None` when it overflows.
pub fn byte_count(count: u64, bytes_each: u64) -> Option<u64> {
    count.checked_mul(bytes_each)
}

/// The memory the system can give this process now (`MemAvailable` of `/proc/meminfo`),
/// `None` where that is unknown.
pub fn available() -> Option<Bytes> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(Bytes(kib.saturating_mul(1024)))
}

/// Refuses a `bytes` allocation (`None`: a size that overflowed while counting) larger than
/// the memory available, with a message saying what needs it (`what`: `dataset `x` of
/// images.h5`, `dataset.fixed_image_shape`, …). Where the available memory is unknown only
/// overflow is refused.
pub fn check_fits(bytes: Option<u64>, what: &dyn fmt::Display) -> Result<(), String> {
    let Some(bytes) = bytes else {
        return Err(format!(
            "{what} declares a size too large to count (it overflows 64 bits)"
        ));
    };
    check_fits_in(bytes, available(), what)
}

fn check_fits_in(
    bytes: u64,
    available: Option<Bytes>,
    what: &dyn fmt::Display,
) -> Result<(), String> {
    match available {
        Some(available) if bytes > available.0 => Err(format!(
            "{what} needs {} of memory, more than the {available} available",
            Bytes(bytes)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_counted_without_overflow() {
        assert_eq!(element_count(&[2, 3, 4]), Some(24));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[usize::MAX, 2]), None);
        assert_eq!(byte_count(u64::MAX / 2, 4), None);
    }

    #[test]
    fn too_large_an_allocation_is_refused_with_its_source() {
        let what = "dataset.fixed_image_shape";
        let error = check_fits_in(5 << 30, Some(Bytes(4 << 30)), &what).unwrap_err();
        assert_eq!(
            error,
            "dataset.fixed_image_shape needs 5.0 GiB of memory, more than the 4.0 GiB available"
        );
        assert!(check_fits_in(1 << 30, Some(Bytes(4 << 30)), &what).is_ok());
        assert!(check_fits_in(u64::MAX, None, &what).is_ok());
        assert!(check_fits(None, &what).unwrap_err().contains("overflows"));
    }

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(Bytes(512).to_string(), "512 bytes");
        assert_eq!(Bytes(3 << 20).to_string(), "3.0 MiB");
    }
}
