//! The topic broker behind `pubsub/publish` and `pubsub/subscribe`, and the `pubsub` section of
//! the node's dynamic configuration ([`PubSubPolicy`]): who may publish and subscribe where.
//!
//! Each subscription has a bounded queue. Publishing never waits: a subscription whose queue is
//! full is ended with `OVERLOADED` (its queued items are dropped), so one slow subscriber never
//! holds up the publisher or the other subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alknet_core::config::{ConfigError, ConfigSection};
use alknet_core::Identity;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::topic::{matches, validate_pattern};

/// Who may publish and subscribe (the `pubsub` section of the dynamic configuration). By default
/// an identity is required for both and any identified caller may use any topic; the first rule
/// whose pattern matches a concrete topic decides instead.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PubSubPolicy {
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<TopicRule>,
}

/// A rule for the topics matching `pattern` (`*` one segment, `>` one or more trailing segments).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// Topic pattern.
    pub pattern: String,
    /// Who may publish: `None` = any identity, `Some([])` = nobody, else any of these scopes.
    #[serde(default)]
    pub publish: Option<Vec<String>>,
    /// Who may receive: same meaning as `publish`.
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
    /// Callers without an identity are allowed too (where the scope lists are `None`).
    #[serde(default)]
    pub anonymous: bool,
}

impl ConfigSection for PubSubPolicy {
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.rules.iter().enumerate() {
            validate_pattern(&rule.pattern).map_err(|reason| ConfigError::Invalid {
                entry: format!("topic rule {i}"),
                reason,
            })?;
        }
        Ok(())
    }
}

struct Subscriber {
    pattern: String,
    identity: Option<Identity>,
    queue: mpsc::Sender<Value>,
    overflow: CancellationToken,
}

/// Routes published messages to matching subscriptions.
#[derive(Clone, Default)]
pub struct Broker {
    subscribers: Arc<Mutex<HashMap<u64, Subscriber>>>,
    next: Arc<AtomicU64>,
}

/// A live subscription; dropping it unsubscribes.
pub struct BrokerSubscription {
    /// Items `{ topic, data }`.
    pub items: mpsc::Receiver<Value>,
    /// Cancelled when the queue overflowed and the subscription was dropped by the broker.
    pub overflow: CancellationToken,
    id: u64,
    broker: Broker,
}

impl Drop for BrokerSubscription {
    fn drop(&mut self) {
        if let Ok(mut subs) = self.broker.subscribers.lock() {
            subs.remove(&self.id);
        }
    }
}

/// Whether `identity` passes a rule's scope list (`None` = any identity, or anyone when the rule
/// allows anonymous callers; `Some(list)` = any of these scopes).
fn allowed(
    rule_scopes: Option<&Vec<String>>,
    anonymous: bool,
    identity: Option<&Identity>,
) -> bool {
    match (rule_scopes, identity) {
        (None, Some(_)) => true,
        (None, None) => anonymous,
        (Some(scopes), Some(id)) => scopes.iter().any(|s| id.has_scope(s)),
        (Some(_), None) => false,
    }
}

fn rule_for<'a>(policy: &'a PubSubPolicy, topic: &str) -> Option<&'a TopicRule> {
    policy.rules.iter().find(|r| matches(&r.pattern, topic))
}

/// Whether `identity` may publish to the concrete `topic`.
pub fn may_publish(policy: &PubSubPolicy, topic: &str, identity: Option<&Identity>) -> bool {
    match rule_for(policy, topic) {
        Some(rule) => allowed(rule.publish.as_ref(), rule.anonymous, identity),
        None => identity.is_some(),
    }
}

/// Whether `identity` may receive messages of the concrete `topic`.
pub fn may_receive(policy: &PubSubPolicy, topic: &str, identity: Option<&Identity>) -> bool {
    match rule_for(policy, topic) {
        Some(rule) => allowed(rule.subscribe.as_ref(), rule.anonymous, identity),
        None => identity.is_some(),
    }
}

/// Whether `identity` may open a subscription at all (some rule could let it receive something).
pub fn may_subscribe(policy: &PubSubPolicy, identity: Option<&Identity>) -> bool {
    identity.is_some()
        || policy
            .rules
            .iter()
            .any(|r| r.anonymous && r.subscribe.is_none())
}

impl Broker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to `pattern` with a queue of `depth` items.
    pub fn subscribe(
        &self,
        pattern: &str,
        identity: Option<Identity>,
        depth: usize,
    ) -> BrokerSubscription {
        let (queue, items) = mpsc::channel(depth.max(1));
        let overflow = CancellationToken::new();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.insert(
                id,
                Subscriber {
                    pattern: pattern.to_string(),
                    identity,
                    queue,
                    overflow: overflow.clone(),
                },
            );
        }
        BrokerSubscription {
            items,
            overflow,
            id,
            broker: self.clone(),
        }
    }

    /// Queues `data` for every matching subscription whose identity may receive `topic`; returns
    /// how many it was queued for.
    pub fn publish(&self, policy: &PubSubPolicy, topic: &str, data: &Value) -> usize {
        let Ok(mut subs) = self.subscribers.lock() else {
            return 0;
        };
        let item = serde_json::json!({ "topic": topic, "data": data });
        let mut delivered = 0;
        subs.retain(|_, sub| {
            if !matches(&sub.pattern, topic) || !may_receive(policy, topic, sub.identity.as_ref()) {
                return true;
            }
            match sub.queue.try_send(item.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.overflow.cancel();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        delivered
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.subscribers.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn someone() -> Option<Identity> {
        Some(Identity {
            id: "a".into(),
            ..Default::default()
        })
    }

    #[test]
    fn publish_reaches_matching_subscriptions_only() {
        let broker = Broker::new();
        let policy = PubSubPolicy::default();
        let mut news = broker.subscribe("news/>", someone(), 8);
        let mut other = broker.subscribe("sport/*", someone(), 8);
        assert_eq!(broker.publish(&policy, "news/tech/ai", &json!(1)), 1);
        assert_eq!(
            news.items.try_recv().unwrap(),
            json!({"topic": "news/tech/ai", "data": 1})
        );
        assert!(other.items.try_recv().is_err());
    }

    #[test]
    fn full_queue_ends_the_subscription_and_spares_the_others() {
        let broker = Broker::new();
        let policy = PubSubPolicy::default();
        let slow = broker.subscribe("t", someone(), 1);
        let mut fast = broker.subscribe("t", someone(), 8);
        assert_eq!(broker.publish(&policy, "t", &json!(1)), 2);
        fast.items.try_recv().unwrap();
        assert_eq!(broker.publish(&policy, "t", &json!(2)), 1);
        assert!(slow.overflow.is_cancelled());
        assert_eq!(fast.items.try_recv().unwrap()["data"], 2);
        assert_eq!(broker.len(), 1);
    }

    #[test]
    fn anonymous_callers_need_a_rule_that_allows_them() {
        let mut policy = PubSubPolicy::default();
        assert!(!may_publish(&policy, "a/b", None));
        assert!(may_publish(&policy, "a/b", someone().as_ref()));
        policy.rules.push(TopicRule {
            pattern: "public/>".into(),
            publish: None,
            subscribe: None,
            anonymous: true,
        });
        policy.rules.push(TopicRule {
            pattern: "admin/>".into(),
            publish: Some(vec!["admin".into()]),
            subscribe: Some(vec![]),
            anonymous: false,
        });
        assert!(may_publish(&policy, "public/x", None));
        assert!(!may_publish(&policy, "admin/x", someone().as_ref()));
        assert!(!may_receive(&policy, "admin/x", someone().as_ref()));
    }
}
