//! TOTP secrets at rest: sealed with XChaCha20-Poly1305 under a key derived from `secret_key`,
//! bound to the reviewer they belong to (associated data), so a row copied onto another user
//! does not open.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::config::Secret;

const NONCE_BYTES: usize = 24;

#[derive(Clone)]
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(***)")
    }
}

impl Vault {
    pub fn new(secret_key: &Secret) -> Self {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"countersign totp vault v1\0")
            .chain_update(secret_key.expose().as_bytes())
            .finalize()
            .into();
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// `base64(nonce ‖ ciphertext)`.
    pub fn seal(&self, user: &str, secret: &[u8]) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: user.as_bytes(),
                },
            )
            .expect("encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        STANDARD.encode(out)
    }

    /// The secret, if the text was sealed by this key for this user.
    pub fn open(&self, user: &str, sealed: &str) -> Option<Vec<u8>> {
        let bytes = STANDARD.decode(sealed).ok()?;
        if bytes.len() <= NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: user.as_bytes(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let vault = Vault::new(&Secret::new("k".repeat(32)));
        let sealed = vault.seal("U1", b"twenty bytes secret!");
        assert!(!sealed.contains("twenty"));
        assert_eq!(
            vault.open("U1", &sealed).as_deref(),
            Some(&b"twenty bytes secret!"[..])
        );
        assert_eq!(vault.open("U2", &sealed), None, "bound to its user");
        assert_eq!(
            Vault::new(&Secret::new("j".repeat(32))).open("U1", &sealed),
            None
        );
        assert_ne!(
            sealed,
            vault.seal("U1", b"twenty bytes secret!"),
            "fresh nonce each time"
        );
    }
}
