//! Encryption of secrets at rest (OIDC client secrets, one-time values kept
//! for idempotent replays) with ChaCha20-Poly1305 and a 256-bit data key.
//!
//! The key lives in `<data-dir>/secret.key` (created with mode 0600 on first
//! start) unless a key file is given by configuration. Ciphertexts are bound
//! to a context string (e.g. the connection id) as associated data, so a
//! ciphertext copied onto another connection does not decrypt.

use std::fs;
use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use signpost_schema::log::v1::EncryptedSecret;

/// Why the data key could not be loaded or a secret opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read or written.
    #[error("data key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The key file does not hold 32 bytes (64 hex characters).
    #[error("data key file {0} must hold 64 hex characters")]
    Malformed(String),
    /// The ciphertext was made with another key or was altered.
    #[error("secret does not decrypt with data key {0}")]
    Undecryptable(String),
}

/// Seals and opens secrets with the data key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    key_id: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SecretBox {
    /// A box from raw key bytes.
    pub fn from_key(key: [u8; 32]) -> Self {
        let key_id = hex::encode(&Sha256::digest(key)[..8]);
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            key_id,
        }
    }

    /// Loads the key file, creating it (mode 0600) with a fresh random key when absent.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let io = |source| SecretError::Io {
            path: path.display().to_string(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|_| SecretError::Malformed(path.display().to_string()))?;
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| SecretError::Malformed(path.display().to_string()))?;
                Ok(Self::from_key(key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                write_private_file(path, hex::encode(key).as_bytes()).map_err(io)?;
                Ok(Self::from_key(key))
            }
            Err(error) => Err(io(error)),
        }
    }

    /// Which key this box uses (a fingerprint, not the key).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts `plaintext`, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> EncryptedSecret {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("chacha20poly1305 encryption cannot fail for in-memory buffers");
        EncryptedSecret {
            key_id: self.key_id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Decrypts a sealed secret made for `context`.
    pub fn open(&self, sealed: &EncryptedSecret, context: &str) -> Result<Vec<u8>, SecretError> {
        if sealed.nonce.len() != 12 {
            return Err(SecretError::Undecryptable(self.key_id.clone()));
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Undecryptable(self.key_id.clone()))
    }
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_in_its_context() {
        let secrets = SecretBox::from_key([9; 32]);
        let sealed = secrets.seal(b"s3cret", "connection-a");
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(secrets.open(&sealed, "connection-a").unwrap(), b"s3cret");
        assert!(secrets.open(&sealed, "connection-b").is_err());
        assert!(SecretBox::from_key([8; 32])
            .open(&sealed, "connection-a")
            .is_err());
    }

    #[test]
    fn the_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = SecretBox::load_or_create(&path).unwrap();
        let second = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
