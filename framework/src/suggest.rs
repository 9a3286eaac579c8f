//! "Did you mean …?" suggestions for misspelt names and keys.

/// The candidate closest to `wanted` by normalised Damerau–Levenshtein similarity, if any is
/// close enough (similarity ≥ 0.5) to be a plausible typo.
pub fn closest<'a, I>(wanted: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let wanted = wanted.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::normalized_damerau_levenshtein(&wanted, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Formats names as a comma-separated list of back-quoted items (`` `a`, `b` ``).
pub fn quoted_list<'a, I>(names: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    let items: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_and_ignores_strangers() {
        let names = ["unet", "local", "global"];
        assert_eq!(closest("unte", names), Some("unet"));
        assert_eq!(closest("Local", names), Some("local"));
        assert_eq!(closest("transformer", names), None);
    }

    #[test]
    fn quotes_lists() {
        assert_eq!(quoted_list(["a", "b"]), "`a`, `b`");
        assert_eq!(quoted_list([]), "(none)");
    }
}
