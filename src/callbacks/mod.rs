//! Calling agents back: Standard Webhooks signatures, the SSRF guard, the signing secrets'
//! source, and delivery.

pub mod secrets;
pub mod signature;
pub mod ssrf;
