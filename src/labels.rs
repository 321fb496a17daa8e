//! The labels and annotations CloudDeck puts on the objects it writes, and the ones users
//! set on CloudDeck objects. One place for every controller and the delivery code.

/// Label on every object CloudDeck creates: `app.kubernetes.io/managed-by: clouddeck`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "clouddeck";
/// Selector of the children CloudDeck manages: only those are watched.
pub const MANAGED: &str = "app.kubernetes.io/managed-by=clouddeck";

/// Label: the Project a child (or a WebhookDelivery) belongs to.
pub const PROJECT_LABEL: &str = "clouddeck.io/project";
/// Label: the Deployment a child belongs to.
pub const DEPLOYMENT_LABEL: &str = "clouddeck.io/deployment";
/// Label: which part of a Deployment a child is (`build`, `web`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Annotation the Project controller sets on a Deployment a newer one supersedes.
pub const SUPERSEDED_BY: &str = "clouddeck.io/superseded-by";
/// Annotation the Project controller sets (`"true"`) on a retained production Deployment
/// beyond `spec.keepWarm`: its workload is scaled to zero until it serves again.
pub const STANDBY: &str = "clouddeck.io/standby";
/// Annotation a user sets (`"true"`) to cancel a Deployment that is not Ready yet.
pub const CANCEL: &str = "clouddeck.io/cancel";
