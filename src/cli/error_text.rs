//! How an error reads at the command line: numbers a message printed in full (Rust prints
//! `f64::MAX` as 309 digits) are shown in scientific notation.

/// The most integer digits a number in a message keeps; longer ones are shown as
/// `1.7976931348623157e308`.
const MAX_DIGITS: usize = 17;

/// `text` with every number of more than [`MAX_DIGITS`] integer digits written in
/// scientific notation.
pub fn compact_long_numbers(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let starts_number =
            bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if !starts_number {
            let next = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + next]);
            i += next;
            continue;
        }
        let mut end = i;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        let integer_digits = end - i;
        if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
            end += 1;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
        }
        let number = &text[i..end];
        match number.parse::<f64>() {
            Ok(value) if integer_digits > MAX_DIGITS => out.push_str(&format!("{value:e}")),
            _ => out.push_str(number),
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_numbers_are_written_in_scientific_notation() {
        let message = format!("`beta_1` must be in [0, 1], got {}", f64::MAX);
        assert_eq!(
            compact_long_numbers(&message),
            "`beta_1` must be in [0, 1], got 1.7976931348623157e308"
        );
        assert_eq!(
            compact_long_numbers(&format!("got -{}.5 ≥ 3", 1e20)),
            "got -1e20 ≥ 3"
        );
    }

    #[test]
    fn other_text_is_kept() {
        for text in [
            "case_000123.nii.gz: 12345678901234567 voxels",
            "file:12:3: `train.epochs`: must be ≥ 1",
            "id a123456789012345678901234 stays",
        ] {
            assert_eq!(compact_long_numbers(text), text);
        }
    }
}
