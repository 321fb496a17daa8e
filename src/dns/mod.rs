//! DNS for custom domains: the canonical form of a hostname, and the TXT record that
//! proves whoever created a Domain controls the hostname's zone.

pub mod hostname;
pub mod verification;

pub use hostname::{InvalidHostname, is_under, normalize};
pub use verification::{TxtAnswer, TxtResolver, Verification, VerificationRecord, judge};
