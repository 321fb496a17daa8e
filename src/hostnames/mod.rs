//! Who owns a hostname: the one rule every controller applies before it renders a route,
//! a listener or a Certificate for a hostname.
//!
//! - **Under the base domain** a hostname belongs to the namespace that holds its *key*:
//!   the text before the first `--` of the label right under the base domain
//!   ([`scheme::authority`]). A Project holds a key (its name, or a namesake's fallback,
//!   see [`scheme::candidate_keys`]) through a [`HostnameClaim`] on `<key>.<base>`; its
//!   production, previews and branch aliases are generated from that key
//!   ([`scheme`]), so no name chosen in one namespace can equal a name generated for
//!   another. A Domain under the base domain is accepted only in the namespace whose live
//!   Project holds the key. The base domain itself, and labels no key can generate, are
//!   nobody's.
//! - **Outside the base domain** a hostname belongs to the namespace whose Domain proved
//!   it by DNS TXT first: that Domain creates the [`HostnameClaim`] on exactly the hostname.
//! - **Claims are sticky.** The apiserver allows one object per name, so one claim per
//!   hostname: the first create wins. A claim outlives its holder (the Project or Domain,
//!   Terminating included) by `--hostname-reservation`; in that time only the same
//!   namespace can take it up again (a GitOps delete-and-recreate keeps its hostnames),
//!   then the claim is deleted and the hostname is free ([`crate::controllers::hostname_claim`]).
//!
//! docs/domains.md ("How CloudDeck decides who owns a hostname") says the same for users.

pub mod registry;
pub mod scheme;

pub use registry::{
    Claimant, Standing, holder_gone, holds, key_holder, peek, standing, take, take_free,
};
pub use scheme::{Authority, KEY_NAME_MESSAGE, KEY_NAME_RULE, authority, claim_name};

pub use crate::api::hostname_claim::HostnameClaim;
