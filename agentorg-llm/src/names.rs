//! Tool names providers accept: ours are `server.tool`; most providers
//! allow only letters, digits, `_` and `-` (and at most 64 characters).

use std::collections::BTreeMap;

/// A two-way map between our tool names and names providers accept: each
/// character outside `[A-Za-z0-9_-]` becomes `_`, a `.` becomes `__`, names
/// are cut to 64 characters, and a clash gets a numbered suffix, so every
/// name maps to one provider name and back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNames {
    to_provider: BTreeMap<String, String>,
    to_ours: BTreeMap<String, String>,
}

/// The longest tool name providers take.
const MAX: usize = 64;

impl ToolNames {
    /// The map of `names` (ours).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut map = Self::default();
        for name in names {
            if map.to_provider.contains_key(name) {
                continue;
            }
            let base: String = name
                .replace('.', "__")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(MAX)
                .collect();
            let mut safe = base.clone();
            let mut n = 2u32;
            while map.to_ours.contains_key(&safe) {
                let suffix = format!("_{n}");
                let keep = MAX.saturating_sub(suffix.len()).min(base.len());
                safe = format!("{}{suffix}", &base[..keep]);
                n += 1;
            }
            map.to_provider.insert(name.to_owned(), safe.clone());
            map.to_ours.insert(safe, name.to_owned());
        }
        map
    }

    /// The provider's name of our tool `name`.
    pub fn to_provider(&self, name: &str) -> Option<&str> {
        self.to_provider.get(name).map(String::as_str)
    }

    /// Our name of the provider's tool `name` (a name it made up: `None`).
    pub fn to_ours(&self, name: &str) -> Option<&str> {
        self.to_ours.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_map_both_ways() {
        let names = ToolNames::new(["time.get_current_time", "git.log", "git__log"]);
        assert_eq!(
            names.to_provider("time.get_current_time"),
            Some("time__get_current_time")
        );
        assert_eq!(
            names.to_ours("time__get_current_time"),
            Some("time.get_current_time")
        );
        // A clash gets a suffix; both come back.
        assert_eq!(names.to_provider("git.log"), Some("git__log"));
        assert_eq!(names.to_provider("git__log"), Some("git__log_2"));
        assert_eq!(names.to_ours("git__log_2"), Some("git__log"));
        assert_eq!(names.to_ours("made_up"), None);
    }

    #[test]
    fn long_and_odd_names_fit() {
        let long = format!("s.{}", "x".repeat(100));
        let names = ToolNames::new([long.as_str(), "a b/c"]);
        let safe = names.to_provider(&long).unwrap();
        assert!(safe.len() <= 64 && safe.starts_with("s__x"));
        assert_eq!(names.to_provider("a b/c"), Some("a_b_c"));
        assert_eq!(names.to_ours(safe), Some(long.as_str()));
    }
}
