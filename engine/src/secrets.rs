//! Secrets at rest: the key that seals actuator secrets (passwords, private keys, kubeconfigs)
//! before they reach the database, and the file-mode helpers for the data directory.
//!
//! A sealed value is `enc:v1:` + base64(nonce ‖ ciphertext ‖ tag), AES-256-GCM with a random
//! 96-bit nonce per value and associated data naming the row and the field it belongs to, so
//! a ciphertext copied into another row or another field does not open. Only the secret fields
//! are sealed: names, tags and addresses stay readable and queryable.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use base64::Engine as _;
use std::fmt;
use std::path::Path;

/// Constant-time equality of two secrets or digests (keys, CSRF tokens, callback hashes).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The prefix of a sealed value (self-describing: scheme and version).
pub const SEALED_PREFIX: &str = "enc:v1:";

const NONCE_LEN: usize = 12;

/// Why a key or a sealed value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key must be 32 bytes, written as 64 hex digits or base64: {0}")]
    BadKey(String),
    #[error("sealed value is malformed: {0}")]
    Malformed(String),
    /// Wrong key, or the value was moved from another row or field, or altered.
    #[error("sealed value does not open with this secret key (another key, or the value was moved or altered)")]
    WrongKey,
    #[error("no secret key is configured, so sealed values cannot be read or written")]
    NoKey,
}

/// The actuator-secret key (AES-256-GCM). Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> SecretBox {
        SecretBox {
            cipher: Aes256Gcm::new(&(*key).into()),
        }
    }

    /// A key written as 64 hex digits or as base64 of 32 bytes (surrounding whitespace
    /// ignored).
    pub fn from_text(text: &str) -> Result<SecretBox, SecretError> {
        Ok(SecretBox::new(&parse_key(text)?))
    }

    /// A new random key as 64 hex digits (what `dataDir/secret-key` holds).
    pub fn generate_key_text() -> String {
        let key: [u8; 32] = rand::random();
        key.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals `plain` for the place `aad` names.
    pub fn seal(&self, plain: &str, aad: &str) -> Result<String, SecretError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: aad.as_bytes(),
        };
        // AES-GCM encryption fails only for messages beyond 64 GiB
        let ct = self
            .cipher
            .encrypt(&nonce.into(), payload)
            .map_err(|_| SecretError::Malformed("too long to seal".into()))?;
        let mut raw = Vec::with_capacity(NONCE_LEN + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }

    /// Opens a value [`SecretBox::seal`] made for the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, SecretError> {
        let b64 = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| {
            SecretError::Malformed(format!("it does not start with {SEALED_PREFIX}"))
        })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| SecretError::Malformed(e.to_string()))?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretError::Malformed("too short".into()));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| SecretError::Malformed("bad nonce".into()))?;
        let plain = self
            .cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| SecretError::Malformed("not UTF-8".into()))
    }
}

/// True when `s` is a sealed value (rather than a secret stored in clear by an older version).
pub fn is_sealed(s: &str) -> bool {
    s.starts_with(SEALED_PREFIX)
}

fn parse_key(text: &str) -> Result<[u8; 32], SecretError> {
    let t = text.trim();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            let pair = t.get(2 * i..2 * i + 2).unwrap_or("00");
            *k = u8::from_str_radix(pair, 16).map_err(|e| SecretError::BadKey(e.to_string()))?;
        }
        return Ok(key);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(t)
        .map_err(|_| {
            SecretError::BadKey(format!("{} characters, neither hex nor base64", t.len()))
        })?;
    raw.as_slice()
        .try_into()
        .map_err(|_| SecretError::BadKey(format!("base64 of {} bytes", raw.len())))
}

/// Sets `path`'s permission bits to `mode` if they grant more (a missing path is left alone).
/// Returns true when it changed them.
pub fn restrict_mode(path: &Path, mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Ok(false);
    }
    let current = meta.permissions().mode() & 0o7777;
    if current & !mode == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seal_open_round_trip_and_bindings() {
        let k = SecretBox::from_text(&SecretBox::generate_key_text()).unwrap();
        let s = k.seal("S3cr3t-pw", "actuator 1 os.password").unwrap();
        assert!(is_sealed(&s) && !s.contains("S3cr3t"));
        assert_eq!(k.open(&s, "actuator 1 os.password").unwrap(), "S3cr3t-pw");
        // another row, another field, another key: none opens
        assert_eq!(
            k.open(&s, "actuator 2 os.password"),
            Err(SecretError::WrongKey)
        );
        assert_eq!(
            k.open(&s, "actuator 1 os.privateKey"),
            Err(SecretError::WrongKey)
        );
        let other = SecretBox::from_text(&SecretBox::generate_key_text()).unwrap();
        assert_eq!(
            other.open(&s, "actuator 1 os.password"),
            Err(SecretError::WrongKey)
        );
        // a fresh nonce each time
        assert_ne!(s, k.seal("S3cr3t-pw", "actuator 1 os.password").unwrap());
        assert!(matches!(
            k.open("enc:v1:!!", "x"),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn keys_in_hex_or_base64() {
        let hex = "00".repeat(31) + "ff";
        assert!(SecretBox::from_text(&hex).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(SecretBox::from_text(&b64).is_ok());
        assert!(matches!(
            SecretBox::from_text("short"),
            Err(SecretError::BadKey(_))
        ));
        let b64_16 = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(matches!(
            SecretBox::from_text(&b64_16),
            Err(SecretError::BadKey(_))
        ));
    }

    #[test]
    fn restrict_mode_only_takes_bits_away() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(restrict_mode(&f, 0o600).unwrap());
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!restrict_mode(&f, 0o600).unwrap());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(!restrict_mode(&f, 0o600).unwrap());
        assert!(!restrict_mode(&d.path().join("missing"), 0o600).unwrap());
    }
}
