//! Secret bytes that cannot leak by accident.
//!
//! Defends against secrets ending up in logs, `check-config` output or error messages
//! (`Debug` and `Display` print `[redacted]`), and against timing-unsafe comparisons: the type
//! has no `PartialEq`, so nobody can write `secret == input`; reading the bytes takes an
//! explicit [`Secret::expose`] call, and comparisons go through the constant-time helpers in
//! [`crate::security::signature`].

use std::fmt;

/// A non-empty secret (HMAC key, shared token). Cloning copies the bytes.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

/// A secret was empty or consisted only of whitespace, which would make any signature or token
/// check trivially forgeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("secret is empty or whitespace only")]
pub struct EmptySecret;

impl Secret {
    /// Wraps `bytes` as they are; refuses empty and whitespace-only secrets.
    pub fn new(bytes: Vec<u8>) -> Result<Secret, EmptySecret> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(EmptySecret);
        }
        Ok(Secret(bytes.into_boxed_slice()))
    }

    /// Like [`Secret::new`] after stripping leading and trailing ASCII whitespace: the form to
    /// use for secrets read from files, which usually end in a newline.
    pub fn trimmed(bytes: &[u8]) -> Result<Secret, EmptySecret> {
        Secret::new(bytes.trim_ascii().to_vec())
    }

    /// The secret's bytes. Call sites should be few and obvious.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One or more secrets, for rotation: a verification passes when any one of them matches. The
/// first secret is the primary one, used for signing.
#[derive(Clone)]
pub struct SecretSet {
    primary: Secret,
    rest: Vec<Secret>,
}

/// A [`SecretSet`] needs at least one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no secret configured")]
pub struct NoSecrets;

impl SecretSet {
    /// A set of `secrets`; refuses an empty list.
    pub fn new(secrets: Vec<Secret>) -> Result<SecretSet, NoSecrets> {
        let mut secrets = secrets.into_iter();
        let primary = secrets.next().ok_or(NoSecrets)?;
        Ok(SecretSet {
            primary,
            rest: secrets.collect(),
        })
    }

    /// A set holding one secret.
    pub fn single(secret: Secret) -> SecretSet {
        SecretSet {
            primary: secret,
            rest: Vec::new(),
        }
    }

    /// The primary secret (the first one), used for signing.
    pub fn primary(&self) -> &Secret {
        &self.primary
    }

    /// All secrets, primary first.
    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.primary).chain(self.rest.iter())
    }

    /// Number of secrets.
    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Always false: a set holds at least one secret. Present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True when `check` accepts any secret. Every secret is tried, matched or not, so the time
    /// taken does not tell which secret matched.
    pub fn any(&self, mut check: impl FnMut(&Secret) -> bool) -> bool {
        self.iter().fold(false, |found, s| check(s) | found)
    }
}

impl From<Secret> for SecretSet {
    fn from(secret: Secret) -> SecretSet {
        SecretSet::single(secret)
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSet([redacted] x{})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_and_whitespace() {
        assert!(matches!(Secret::new(Vec::new()), Err(EmptySecret)));
        assert!(matches!(Secret::new(b" \t\r\n".to_vec()), Err(EmptySecret)));
        assert!(matches!(Secret::trimmed(b"\n"), Err(EmptySecret)));
        assert!(Secret::new(b" x ".to_vec()).is_ok());
    }

    #[test]
    fn trimmed_strips_file_newline() {
        let s = Secret::trimmed(b"s3cret\n").unwrap();
        assert_eq!(s.expose(), b"s3cret");
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new(b"hunter2".to_vec()).unwrap();
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        let set = SecretSet::new(vec![s.clone(), s]).unwrap();
        let shown = format!("{set:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn set_needs_one_and_tries_all() {
        assert!(matches!(SecretSet::new(Vec::new()), Err(NoSecrets)));
        let a = Secret::new(b"a".to_vec()).unwrap();
        let b = Secret::new(b"b".to_vec()).unwrap();
        let set = SecretSet::new(vec![a, b]).unwrap();
        assert_eq!(set.primary().expose(), b"a");
        let mut tried = 0;
        assert!(set.any(|s| {
            tried += 1;
            s.expose() == b"a"
        }));
        assert_eq!(tried, 2);
        assert!(!set.any(|s| s.expose() == b"c"));
    }
}
