//! Calling agents back: Standard Webhooks signatures, the SSRF guard, and delivery.

pub mod signature;
pub mod ssrf;
