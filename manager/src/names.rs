//! Names that reach file paths and argument vectors (DESIGN.md §4, safety rule 7).
//!
//! Containers, stores, nodes, snapshots, DRBD resources and backup targets all
//! become path components or arguments of external programs, so they must
//! match `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}` and never contain `..`. This module
//! only checks names; it never builds paths or commands from them.

use thiserror::Error;

/// Longest name accepted, in characters (the regular expression's 1 + 62).
pub const MAX_LEN: usize = 63;

/// Why a name was refused. Every message names the kind of thing and the
/// name itself (quoted and escaped with `{:?}`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: String },
    #[error("{kind} name {name:?} is too long ({len} characters, max 63)")]
    TooLong {
        kind: String,
        name: String,
        len: usize,
    },
    #[error("{kind} name {name:?} contains \"..\"")]
    DotDot { kind: String, name: String },
    #[error("{kind} name {name:?} must start with a letter or a digit, not {first:?}")]
    BadFirstChar {
        kind: String,
        name: String,
        first: char,
    },
    #[error(
        "{kind} name {name:?} contains bad character {bad:?} (allowed: letters, digits, '_', '.', '-')"
    )]
    BadChar {
        kind: String,
        name: String,
        bad: char,
    },
}

/// Checks `name` against safety rule 7. `kind` says what is being named
/// ("container", "store", ...) and only shapes the error message.
pub fn validate(kind: &str, name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err(NameError::Empty {
            kind: kind.to_owned(),
        });
    };
    let len = name.chars().count();
    if len > MAX_LEN {
        return Err(NameError::TooLong {
            kind: kind.to_owned(),
            name: name.to_owned(),
            len,
        });
    }
    // Checked before the characters so that "../x" is reported for what it is.
    if name.contains("..") {
        return Err(NameError::DotDot {
            kind: kind.to_owned(),
            name: name.to_owned(),
        });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadFirstChar {
            kind: kind.to_owned(),
            name: name.to_owned(),
            first,
        });
    }
    if let Some(bad) = chars.find(|c| !is_name_char(*c)) {
        return Err(NameError::BadChar {
            kind: kind.to_owned(),
            name: name.to_owned(),
            bad,
        });
    }
    Ok(())
}

/// True when `name` passes [`validate`].
pub fn is_valid(name: &str) -> bool {
    validate("", name).is_ok()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "mysql",
            "store1",
            "node-2",
            "r0",
            "a",
            "0",
            "web_01.prod",
            "A.b-c_d",
        ] {
            assert_eq!(validate("container", name), Ok(()), "{name}");
        }
    }

    #[test]
    fn sixty_three_characters_is_the_limit() {
        let ok = "a".repeat(63);
        assert_eq!(validate("store", &ok), Ok(()));
        let long = "a".repeat(64);
        let err = validate("store", &long).unwrap_err();
        assert_eq!(
            err,
            NameError::TooLong {
                kind: "store".into(),
                name: long.clone(),
                len: 64
            }
        );
        assert!(err.to_string().contains("too long (64 characters, max 63)"));
    }

    #[test]
    fn empty_is_refused() {
        let err = validate("node", "").unwrap_err();
        assert_eq!(err.to_string(), "node name is empty");
    }

    #[test]
    fn path_traversal_is_refused() {
        let err = validate("container", "../x").unwrap_err();
        assert!(matches!(err, NameError::DotDot { .. }));
        assert_eq!(err.to_string(), r#"container name "../x" contains "..""#);
        assert!(matches!(
            validate("snapshot", "a..b"),
            Err(NameError::DotDot { .. })
        ));
        assert!(matches!(
            validate("snapshot", "x.."),
            Err(NameError::DotDot { .. })
        ));
        // A slash alone is a bad character too.
        assert_eq!(
            validate("container", "a/b"),
            Err(NameError::BadChar {
                kind: "container".into(),
                name: "a/b".into(),
                bad: '/'
            })
        );
    }

    #[test]
    fn space_is_a_bad_character() {
        let err = validate("container", "a b").unwrap_err();
        assert_eq!(
            err,
            NameError::BadChar {
                kind: "container".into(),
                name: "a b".into(),
                bad: ' '
            }
        );
        assert_eq!(
            err.to_string(),
            r#"container name "a b" contains bad character ' ' (allowed: letters, digits, '_', '.', '-')"#
        );
    }

    #[test]
    fn leading_dash_or_dot_is_refused() {
        let err = validate("node", "-x").unwrap_err();
        assert_eq!(
            err,
            NameError::BadFirstChar {
                kind: "node".into(),
                name: "-x".into(),
                first: '-'
            }
        );
        assert!(err
            .to_string()
            .contains("must start with a letter or a digit, not '-'"));
        assert!(matches!(
            validate("node", ".hidden"),
            Err(NameError::BadFirstChar { first: '.', .. })
        ));
        assert!(matches!(
            validate("node", "_x"),
            Err(NameError::BadFirstChar { first: '_', .. })
        ));
    }

    #[test]
    fn unicode_is_refused_and_escaped() {
        assert_eq!(
            validate("store", "café"),
            Err(NameError::BadChar {
                kind: "store".into(),
                name: "café".into(),
                bad: 'é'
            })
        );
        assert!(matches!(
            validate("store", "ñandu"),
            Err(NameError::BadFirstChar { first: 'ñ', .. })
        ));
        // Control characters are shown escaped, never raw.
        let err = validate("container", "a\nb").unwrap_err();
        assert!(err.to_string().contains(r#""a\nb""#), "{err}");
        // 63 multi-byte characters count as 63, not as their byte length.
        let wide = "é".repeat(63);
        assert!(matches!(
            validate("store", &wide),
            Err(NameError::BadFirstChar { .. })
        ));
    }

    #[test]
    fn other_punctuation_is_refused() {
        for (name, bad) in [
            ("a;b", ';'),
            ("a$b", '$'),
            ("a*", '*'),
            ("a:b", ':'),
            ("a\0", '\0'),
        ] {
            assert!(
                matches!(validate("target", name), Err(NameError::BadChar { bad: b, .. }) if b == bad),
                "{name:?}"
            );
        }
        assert!(!is_valid("a b"));
        assert!(is_valid("ab"));
    }
}
