//! Webhook delivery: the machinery the Webhook and WebhookDelivery controllers share.
//!
//! - [`payload`]: the platform event and the two payload formats, deterministic delivery
//!   names and `webhook-id`s;
//! - [`signing`]: Standard Webhooks signatures (and their verification, for receivers);
//! - [`schedule`]: the retry schedule, jitter and `Retry-After`;
//! - [`egress`]: which destinations are allowed (SSRF protection);
//! - [`sender`]: one HTTP attempt;
//! - [`fairness`]: per-Webhook and per-namespace shares of the attempts in flight;
//! - [`fanout`]: per-namespace caps on the Webhooks that receive events and on the
//!   deliveries created per minute;
//! - [`origin`]: the seal that proves a delivery was written by this operator;
//! - [`publisher`]: turns a platform event into one WebhookDelivery per subscribed Webhook
//!   (the outbox), for any controller to call.

pub mod egress;
pub mod fairness;
pub mod fanout;
pub mod keys;
pub mod metrics;
pub mod origin;
pub mod payload;
pub mod publisher;
pub mod schedule;
pub mod sender;
pub mod signing;

pub use egress::EgressPolicy;
pub use origin::OriginKey;
pub use payload::PlatformEvent;
pub use publisher::Publisher;
pub use sender::Sender;

/// Labels every WebhookDelivery carries, for `kubectl get whd -l ...`.
pub const WEBHOOK_LABEL: &str = "clouddeck.io/webhook";
pub const EVENT_LABEL: &str = "clouddeck.io/event";
