//! [`Rules`] as the server's [`Sharing`]: each request's [`Access`] evaluates the rules file for
//! the caller.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use fero_protocol::{Change, Subscription};

use crate::rules::{Principal, Rules, UserContext};
use crate::shared::{Access, CurrentRow, Refusal, Routed, Sharing};
use crate::user::UserId;

impl Sharing for Rules {
    fn is_shared(&self, collection: &str) -> bool {
        self.is_ruled(collection)
    }

    fn shared_collections(&self) -> Vec<String> {
        self.collections().map(|c| c.name().to_owned()).collect()
    }

    fn access(&self, user: &UserId, claims: &serde_json::Value) -> Arc<dyn Access> {
        Arc::new(RulesAccess {
            rules: self.clone(),
            user: user.clone(),
            claims: claims.clone(),
            context: Mutex::new(None),
        })
    }

    fn subscription_buckets(
        &self,
        collection: &str,
        user: &UserId,
        claims: &serde_json::Value,
        subscription: &Subscription,
    ) -> Result<BTreeSet<String>, String> {
        let Some(rules) = self.collection(collection) else {
            return Err(format!("collection {collection:?} has no rules"));
        };
        let principal = Principal {
            id: user.as_str(),
            claims,
        };
        rules
            .subscription_buckets(&subscription.name, &subscription.params, &principal)
            .map_err(|error| error.to_string())
    }
}

/// One caller's view of the rules.
#[derive(Debug)]
struct RulesAccess {
    rules: Rules,
    user: UserId,
    claims: serde_json::Value,
    /// The CEL `user` value, built once per request for the readable set it was built with
    /// (every change of a push shares it).
    context: Mutex<Option<(BTreeSet<String>, Arc<UserContext>)>>,
}

impl RulesAccess {
    fn principal(&self) -> Principal<'_> {
        Principal {
            id: self.user.as_str(),
            claims: &self.claims,
        }
    }

    fn context(&self, readable: &BTreeSet<String>) -> Arc<UserContext> {
        let mut cached = self.context.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((set, context)) = cached.as_ref() {
            if set == readable {
                return Arc::clone(context);
            }
        }
        let context = Arc::new(self.rules.user_context(&self.principal(), readable));
        *cached = Some((readable.clone(), Arc::clone(&context)));
        context
    }
}

impl Access for RulesAccess {
    fn user(&self) -> &UserId {
        &self.user
    }

    fn readable(&self, grants: &[String]) -> Result<BTreeSet<String>, Refusal> {
        self.rules
            .readable_buckets(&self.principal(), grants)
            .map_err(|error| Refusal::RuleFailed {
                message: error.to_string(),
            })
    }

    fn route(
        &self,
        collection: &str,
        readable: &BTreeSet<String>,
        change: &Change,
        current: Option<CurrentRow<'_>>,
    ) -> Result<Routed, Refusal> {
        let rules = self
            .rules
            .collection(collection)
            .ok_or_else(|| Refusal::RuleFailed {
                message: format!("collection {collection:?} has no rules"),
            })?;
        let forbidden = |what: &str| Refusal::Forbidden {
            message: format!(
                "the sync rules do not let {} {what} row {:?} of {collection:?}",
                self.user, change.id
            ),
        };
        let failed = |error: crate::rules::RuleError| Refusal::RuleFailed {
            message: error.to_string(),
        };
        // A stored row the caller may not read is refused before anything else is looked at,
        // so the answer tells nothing of it (not even its version).
        if let Some(current) = &current {
            if !readable.contains(current.bucket) {
                return Err(forbidden("write"));
            }
        }
        let stored;
        let data = match (&current, change.deleted) {
            (Some(current), true) => {
                stored = serde_json::from_str(current.data).unwrap_or(serde_json::Value::Null);
                &stored
            }
            _ => &change.data,
        };
        let user = self.context(readable);
        let bucket = match (&current, change.deleted) {
            (Some(current), true) => current.bucket.to_owned(),
            _ => rules
                .bucket_of(data, &user, &change.id, change.deleted)
                .map_err(failed)?,
        };
        let may = |bucket: &str| {
            rules
                .may_write(bucket, data, &user, &change.id, change.deleted)
                .map_err(failed)
        };
        if !may(&bucket)? {
            return Err(forbidden("write"));
        }
        if let Some(current) = &current {
            if current.bucket != bucket && !may(current.bucket)? {
                return Err(forbidden("move"));
            }
        }
        let grant = if change.deleted {
            None
        } else {
            self.rules.grant_of(collection, data).map_err(failed)?
        };
        Ok(Routed { bucket, grant })
    }

    fn is_membership(&self, collection: &str) -> bool {
        self.rules.membership_collection() == Some(collection)
    }
}
