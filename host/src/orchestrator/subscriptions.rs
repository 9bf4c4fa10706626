//! Subscriptions (docs/subscriptions.md): storing them, reading their dead letters, redrive,
//! and keeping each one's delivery worker in step with what is stored.

use serde::Serialize;

use super::{Orchestrator, OrchestratorError};
use crate::delivery::StatusView;
use crate::domain::subscription::{DeadLetter, Subscription, Target, cursor_name, parse_subscription};

/// Dead letters marked for redrive in one write.
const REDRIVE_PAGE: usize = 500;

/// A subscription with where its delivery stands.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// The `seq` of the last event of the log it has dealt with (delivered or dead-lettered).
    pub cursor: u64,
    /// Its worker's counts since the host started (absent while no worker runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusView>,
}

impl Orchestrator {
    /// Stores subscription `name` from its JSON document (checking that its signing secret is
    /// stored) and (re)starts its delivery: the subscription, and whether it is new.
    pub async fn put_subscription(&self, name: &str, body: &[u8]) -> Result<(Subscription, bool), OrchestratorError> {
        let (sub, start) = parse_subscription(name, body, self.now_ms())?;
        if let Target::Webhook { signing_secret: Some(secret), .. } = &sub.target
            && !self.secrets.exists(secret).await?
        {
            let problem = format!("webhook.signing_secret: no secret {secret:?} is stored (PUT /v1/secrets/{secret})");
            return Err(crate::domain::subscription::SubscriptionError::Invalid(vec![problem]).into());
        }
        let _change = self.deliveries.changes.lock().await;
        let created = self.store.subscription_put(sub.clone(), start).await?;
        self.deliveries.run(sub.clone());
        tracing::info!(subscription = %sub.name, target = sub.target.kind(), created, "subscription stored");
        Ok((sub, created))
    }

    /// Removes subscription `name`, its cursor and its dead letters.
    pub async fn delete_subscription(&self, name: &str) -> Result<(), OrchestratorError> {
        let _change = self.deliveries.changes.lock().await;
        let deleted = self.store.subscription_delete(name).await?;
        // After the delete: a failed delete leaves the worker running; a write the worker had
        // in flight is refused by the store once the subscription is gone.
        self.deliveries.stop(name);
        if deleted { Ok(()) } else { Err(OrchestratorError::UnknownSubscription(name.to_owned())) }
    }

    /// Every subscription with its cursor and status, by name.
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionView>, OrchestratorError> {
        let mut out = Vec::new();
        for mut subscription in self.store.subscriptions().await? {
            subscription.target = subscription.target.redacted();
            let cursor = self.store.cursor(&cursor_name(&subscription.name)).await?;
            let status = self.deliveries.status(&subscription.name);
            out.push(SubscriptionView { subscription, cursor, status });
        }
        Ok(out)
    }

    /// Subscription `name` with its cursor and status.
    pub async fn subscription(&self, name: &str) -> Result<SubscriptionView, OrchestratorError> {
        self.subscriptions()
            .await?
            .into_iter()
            .find(|s| s.subscription.name == name)
            .ok_or_else(|| OrchestratorError::UnknownSubscription(name.to_owned()))
    }

    /// Up to `limit` dead letters of `name` after `seq` `after`, in log order.
    pub async fn dead_letters(
        &self,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, OrchestratorError> {
        self.subscription(name).await?;
        Ok(self.store.dead_letters(name, after, limit).await?)
    }

    /// Marks every dead letter of `name` for redrive and has its worker try each once more:
    /// how many were marked.
    pub async fn redrive(&self, name: &str) -> Result<usize, OrchestratorError> {
        self.subscription(name).await?;
        let (mut after, mut marked) = (0, 0);
        loop {
            let letters = self.store.dead_letters(name, after, REDRIVE_PAGE).await?;
            let Some(last) = letters.last() else { break };
            after = last.seq;
            let updates: Vec<_> = letters
                .into_iter()
                .filter(|l| !l.redrive)
                .map(|l| (l.seq, Some(DeadLetter { redrive: true, ..l })))
                .collect();
            marked += updates.len();
            self.store.dead_letters_write(name, updates, None).await?;
        }
        self.deliveries.redrive(name);
        Ok(marked)
    }
}
