//! RFC 6238 one-time codes (HMAC-SHA1, 30-second steps, 6 digits) through totp-rs. Verification
//! answers *which* time step matched, so a used step can be refused when replayed.

use totp_rs::{Algorithm, TOTP};

pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;
/// Steps of clock drift accepted either way.
pub const DRIFT: i64 = 1;
/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

/// A reviewer's authenticator, rebuilt from its secret.
pub struct Authenticator(TOTP);

impl Authenticator {
    /// `account` labels the entry in the reviewer's app (their Slack name).
    pub fn new(secret: Vec<u8>, account: &str) -> Result<Self, String> {
        TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECONDS,
            secret,
            Some("countersign".into()),
            account.replace(':', "_"),
        )
        .map(Self)
        .map_err(|e| e.to_string())
    }

    /// A fresh random secret.
    pub fn generate_secret() -> Vec<u8> {
        rand::random::<[u8; SECRET_BYTES]>().to_vec()
    }

    /// The `otpauth://` URI authenticator apps import.
    pub fn uri(&self) -> String {
        self.0.get_url()
    }

    /// The URI as a QR code (PNG).
    pub fn qr_png(&self) -> Result<Vec<u8>, String> {
        self.0.get_qr_png()
    }

    /// The code for the step containing `unix` seconds.
    pub fn code_at(&self, unix: u64) -> String {
        self.0.generate(unix)
    }

    /// The time step `code` belongs to, if it is valid within [`DRIFT`] steps of `unix`.
    /// Compared in constant time.
    pub fn matching_step(&self, code: &str, unix: i64) -> Option<i64> {
        let code = code.trim().replace(' ', "");
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = unix.div_euclid(STEP_SECONDS as i64);
        (now - DRIFT..=now + DRIFT).find(|&step| {
            step >= 0 && {
                let expected = self.0.generate(step as u64 * STEP_SECONDS);
                subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B: the SHA-1 seed.
    const SEED: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_sha1_vectors() {
        let eight = |t: u64| {
            TOTP::new(Algorithm::SHA1, 8, 0, 30, SEED.to_vec(), None, "t".into())
                .unwrap()
                .generate(t)
        };
        assert_eq!(eight(59), "94287082");
        assert_eq!(eight(1_111_111_109), "07081804");
        assert_eq!(eight(1_111_111_111), "14050471");
        assert_eq!(eight(1_234_567_890), "89005924");
        assert_eq!(eight(2_000_000_000), "69279037");
        let six = Authenticator::new(SEED.to_vec(), "t").unwrap();
        assert_eq!(six.code_at(59), "287082");
    }

    #[test]
    fn a_code_matches_its_own_step_and_one_either_side_only() {
        let auth = Authenticator::new(SEED.to_vec(), "priya").unwrap();
        let t = 1_800_000_000_i64;
        let step = t / 30;
        let code = auth.code_at(t as u64);
        assert_eq!(auth.matching_step(&code, t), Some(step));
        assert_eq!(
            auth.matching_step(&code, t + 30),
            Some(step),
            "one step late"
        );
        assert_eq!(
            auth.matching_step(&code, t - 30),
            Some(step),
            "one step early"
        );
        assert_eq!(auth.matching_step(&code, t + 60), None, "two steps late");
        assert_eq!(auth.matching_step("12345", t), None);
        assert_eq!(auth.matching_step("abcdef", t), None);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(auth.matching_step(&spaced, t), Some(step));
    }

    #[test]
    fn enrollment_material_names_countersign() {
        let auth = Authenticator::new(Authenticator::generate_secret(), "priya").unwrap();
        assert!(
            auth.uri().starts_with("otpauth://totp/countersign:priya?"),
            "{}",
            auth.uri()
        );
        let png = auth.qr_png().unwrap();
        assert!(png.starts_with(b"\x89PNG"));
    }
}
