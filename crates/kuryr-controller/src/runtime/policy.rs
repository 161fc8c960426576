//! The shared error policy of every reconciler (`crate::runtime::policy`): count, log, requeue
//! with per-object back-off.

use crate::runtime::context::Context;
use crate::runtime::error::Error;
use kube::runtime::controller::Action;

/// The shared error policy: count, log, requeue with per-object back-off (none for "not the
/// leader": becoming leader re-reconciles everything).
pub fn error_action(controller: &'static str, ns: &str, name: &str, err: &Error, ctx: &Context) -> Action {
    ctx.metrics.reconcile_error(controller, err.metric_label());
    if matches!(err.inner(), Error::NotLeader) {
        return Action::await_change();
    }
    let delay = ctx.backoff.failed(&format!("{controller}/{ns}/{name}"), err.is_transient());
    tracing::warn!(controller, object = %format!("{ns}/{name}"), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
