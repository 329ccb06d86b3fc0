//! The topic broker behind `pubsub/publish` and `pubsub/subscribe`, and the `pubsub` section of
//! the node's dynamic configuration ([`PubSubPolicy`]): who may publish and subscribe where.
//!
//! A published message is encoded once, as the JSON item `{ "topic", "data" }`, and that one buffer
//! is shared by every subscription it is queued for and by the writers that send it: a publish
//! costs its size once, not once per subscriber.
//!
//! Each subscription's queue is bounded in items and in **bytes** (counted from the publish until
//! the item is written to the subscriber's transport), and so is the sum over one connection's
//! subscriptions. Publishing never waits: a subscription that would go over either budget is
//! ended with `OVERLOADED` (its queued items are dropped), so one slow subscriber never holds up
//! the publisher, the other subscribers, or the node's memory.
//!
//! Publishers read the subscription list without a lock (a copy-on-write snapshot); only
//! subscribing and unsubscribing take one, briefly.
//!
//! A [`Backplane`] (the NATS one is in `alknet-nats`) carries publishes between the brokers of
//! several nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use alknet_core::config::{ConfigError, ConfigSection, Snapshot};
use alknet_core::Identity;
use arc_swap::ArcSwap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::context::LiveIdentity;
use crate::topic::{matches, validate_pattern, validate_topic};

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

/// A byte budget shared by queued items: one per subscription, one per connection.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `len` bytes unless that goes over the budget. An empty budget takes any one item, so
    /// a message larger than the budget is still delivered to a subscriber that keeps up.
    fn take(&self, len: usize) -> bool {
        let before = self.used.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max {
            self.used.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// Bytes charged to budgets while an item waits; given back when it is dropped (written,
/// discarded, or its subscription ended).
#[derive(Debug)]
pub struct Charge {
    budgets: [Option<Arc<ByteBudget>>; 2],
    len: usize,
}

impl Charge {
    fn take(budgets: [Option<&Arc<ByteBudget>>; 2], len: usize) -> Option<Self> {
        let mut charge = Charge {
            budgets: [None, None],
            len,
        };
        for (slot, budget) in charge.budgets.iter_mut().zip(budgets) {
            if let Some(budget) = budget {
                if !budget.take(len) {
                    return None; // `charge` gives back what was taken
                }
                *slot = Some(budget.clone());
            }
        }
        Some(charge)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        for budget in self.budgets.iter().flatten() {
            budget.used.fetch_sub(self.len, Ordering::AcqRel);
        }
    }
}

/// One published message: the encoded item `{ "topic": …, "data": … }`, shared by every
/// subscription it is queued for.
#[derive(Clone, Debug)]
pub struct Published {
    topic: Arc<str>,
    json: Bytes,
}

#[derive(Serialize)]
struct ItemRef<'a, D: ?Sized> {
    topic: &'a str,
    data: &'a D,
}

#[derive(Deserialize)]
struct ItemIn<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[allow(dead_code)] // checked to be present and to decode
    data: Decodes,
}

/// A JSON value read through as a subscriber's decoder will read it (into a `serde_json::Value`):
/// every string unescaped, so a lone surrogate escape (`"\ud83d"`) is refused, numbers in range,
/// and nesting within serde_json's limit of 128. A `RawValue` checks only the syntax, and one item
/// that passes it but not this would close every subscriber's connection that reads it (a
/// protocol violation on a shared stream). Nothing is kept.
struct Decodes;

impl<'de> Deserialize<'de> for Decodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Decodes)
    }
}

impl<'de> serde::de::Visitor<'de> for Decodes {
    type Value = Decodes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Decodes, E> {
        Ok(Decodes)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Decodes, E> {
        Ok(Decodes)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Decodes, E> {
        Ok(Decodes)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Decodes, E> {
        Ok(Decodes)
    }

    fn visit_str<E>(self, _: &str) -> Result<Decodes, E> {
        Ok(Decodes)
    }

    fn visit_unit<E>(self) -> Result<Decodes, E> {
        Ok(Decodes)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Decodes, A::Error> {
        while seq.next_element::<Decodes>()?.is_some() {}
        Ok(Decodes)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Decodes, A::Error> {
        while map.next_entry::<Decodes, Decodes>()?.is_some() {}
        Ok(Decodes)
    }
}

/// Checks `data` as [`Decodes`] does: what passes, every subscriber can decode.
pub(crate) fn check_data(data: &RawValue) -> Result<(), String> {
    serde_json::from_str::<Decodes>(data.get())
        .map(drop)
        .map_err(|e| format!("data a subscriber could not decode: {e}"))
}

impl Published {
    /// Encodes `data` published to `topic` (a valid concrete topic).
    pub fn new(topic: &str, data: &Value) -> Self {
        Self::encode(topic, data)
    }

    /// Like [`new`](Self::new) with `data` already encoded: it goes into the item as it is, with
    /// no `Value` built and written again (the node's own publishes from JS).
    pub fn raw(topic: &str, data: &RawValue) -> Self {
        Self::encode(topic, data)
    }

    fn encode<D: Serialize + ?Sized>(topic: &str, data: &D) -> Self {
        let json = serde_json::to_vec(&ItemRef { topic, data })
            .expect("JSON data and a string always serialize");
        Self {
            topic: topic.into(),
            json: json.into(),
        }
    }

    /// Takes an item encoded by another node (through a backplane): it must be a JSON object
    /// with a valid concrete `topic` and a `data` member.
    pub fn decode(json: Bytes) -> Result<Self, String> {
        let topic = Self::checked_topic(&json)?.as_ref().into();
        Ok(Self { topic, json })
    }

    /// The valid concrete topic of an encoded item, which must also have a `data` member.
    fn checked_topic(json: &[u8]) -> Result<std::borrow::Cow<'_, str>, String> {
        // An object only: serde's derived struct would also read `[topic, data]`.
        let item: ItemIn<'_> = crate::envelope::object(json)
            .and_then(serde_json::from_slice)
            .map_err(|e| format!("not a pub/sub item ({{\"topic\", \"data\"}}): {e}"))?;
        validate_topic(&item.topic)?;
        Ok(item.topic)
    }

    /// Takes a JSON array of items `{ "topic", "data" }` (the node's own publishes from JS, in
    /// one call): each is checked as [`decode`](Self::decode) checks one and keeps its text as it
    /// is, sharing `json`'s buffer (no item is encoded again), and consecutive items to one
    /// topic share its name. The error names the message.
    pub fn decode_many(json: impl Into<Bytes>) -> Result<Vec<Self>, String> {
        let whole = json.into();
        let text = std::str::from_utf8(&whole).map_err(|e| format!("not UTF-8: {e}"))?;
        let items: Vec<&RawValue> = serde_json::from_str(text)
            .map_err(|e| format!("not a JSON array of pub/sub items: {e}"))?;
        let mut decoded: Vec<Self> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let json = whole.slice_ref(item.get().as_bytes());
            let topic = {
                let topic = Self::checked_topic(&json).map_err(|e| format!("message {i}: {e}"))?;
                match decoded.last() {
                    Some(last) if *last.topic == *topic => last.topic.clone(),
                    _ => topic.as_ref().into(),
                }
            };
            decoded.push(Self { topic, json });
        }
        Ok(decoded)
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The encoded item.
    pub fn json(&self) -> &Bytes {
        &self.json
    }
}

/// A queued item: the shared encoding and the bytes it holds of its subscription's budgets.
#[derive(Debug)]
pub struct Queued {
    /// The encoded item `{ "topic", "data" }`.
    pub json: Bytes,
    /// Keep it until the item is written: dropping it gives the bytes back.
    pub charge: Charge,
}

/// Carries publishes between the brokers of several nodes. Calls must not wait: an
/// implementation hands work to its own task.
pub trait Backplane: Send + Sync + 'static {
    /// A message published on this node (its access checks passed) for the other nodes.
    fn publish(&self, item: &Published);
    /// This node began (`true`) or stopped (`false`) having subscriptions to `pattern`.
    fn interest(&self, pattern: &str, on: bool);
}

struct Subscriber {
    id: u64,
    pattern: Arc<str>,
    /// Who subscribed, resolved in the configuration each delivery reads (scopes follow a
    /// reload).
    identity: Arc<LiveIdentity>,
    queue: mpsc::Sender<Queued>,
    budget: Arc<ByteBudget>,
    connection: Option<Arc<ByteBudget>>,
    overflow: CancellationToken,
}

impl Subscriber {
    /// Queues `item` unless the subscription is over a budget (then it is ended) or gone.
    fn offer(&self, item: &Published) -> bool {
        if self.overflow.is_cancelled() {
            return false;
        }
        let charge = Charge::take(
            [Some(&self.budget), self.connection.as_ref()],
            item.json.len(),
        );
        let Some(charge) = charge else {
            self.overflow.cancel();
            return false;
        };
        let queued = Queued {
            json: item.json.clone(),
            charge,
        };
        match self.queue.try_send(queued) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Read by publishers without a lock; replaced whole under `edit`.
    subscribers: ArcSwap<Vec<Arc<Subscriber>>>,
    /// Serializes changes to `subscribers`; counts subscriptions per pattern.
    edit: Mutex<HashMap<Arc<str>, usize>>,
    next: AtomicU64,
    backplane: OnceLock<Arc<dyn Backplane>>,
}

/// Routes published messages to matching subscriptions.
#[derive(Clone, Default)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// How much a subscription may hold (see [`Broker::subscribe`]).
#[derive(Clone, Debug)]
pub struct QueueLimits {
    /// Items queued at most.
    pub items: usize,
    /// Bytes queued at most (one item of any size is always taken).
    pub bytes: usize,
    /// The budget shared by the subscriber's connection, if any.
    pub connection: Option<Arc<ByteBudget>>,
}

/// A live subscription; dropping it unsubscribes.
pub struct BrokerSubscription {
    /// Items, in publish order.
    pub items: mpsc::Receiver<Queued>,
    /// Cancelled when the subscription went over its queue limits and was ended by the broker.
    pub overflow: CancellationToken,
    id: u64,
    broker: Broker,
}

impl Drop for BrokerSubscription {
    fn drop(&mut self) {
        self.broker.remove(self.id);
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

    /// Connects this broker to other nodes' brokers; the first backplane set stays.
    pub fn set_backplane(&self, backplane: Arc<dyn Backplane>) -> Result<(), &'static str> {
        self.inner
            .backplane
            .set(backplane.clone())
            .map_err(|_| "this broker already has a backplane")?;
        // Tell it what is already subscribed.
        let edit = self.inner.edit.lock().unwrap_or_else(|e| e.into_inner());
        for pattern in edit.keys() {
            backplane.interest(pattern, true);
        }
        Ok(())
    }

    /// Subscribes to `pattern` (a valid pattern) within `limits`, as `identity`.
    pub fn subscribe(
        &self,
        pattern: &str,
        identity: Option<Identity>,
        limits: QueueLimits,
    ) -> BrokerSubscription {
        self.subscribe_live(pattern, LiveIdentity::fixed(identity), limits)
    }

    /// Subscribes to `pattern` within `limits`; each message's topic rule is checked against
    /// `identity` as it is in the configuration snapshot the delivery reads (rules and identity
    /// from the same reload), so a reload that takes scopes away stops the topics they opened.
    pub fn subscribe_live(
        &self,
        pattern: &str,
        identity: Arc<LiveIdentity>,
        limits: QueueLimits,
    ) -> BrokerSubscription {
        let (queue, items) = mpsc::channel(limits.items.max(1));
        let overflow = CancellationToken::new();
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let pattern: Arc<str> = pattern.into();
        let subscriber = Arc::new(Subscriber {
            id,
            pattern: pattern.clone(),
            identity,
            queue,
            budget: ByteBudget::new(limits.bytes),
            connection: limits.connection,
            overflow: overflow.clone(),
        });
        let mut edit = self.inner.edit.lock().unwrap_or_else(|e| e.into_inner());
        // The backplane hears of a new pattern before the subscription is visible: whoever sees
        // the subscription (`len`, a delivery) can rely on the backplane knowing its pattern.
        let count = edit.entry(pattern.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            if let Some(backplane) = self.inner.backplane.get() {
                backplane.interest(&pattern, true);
            }
        }
        let mut list = Vec::clone(&self.inner.subscribers.load());
        list.push(subscriber);
        self.inner.subscribers.store(Arc::new(list));
        BrokerSubscription {
            items,
            overflow,
            id,
            broker: self.clone(),
        }
    }

    fn remove(&self, id: u64) {
        let mut edit = self.inner.edit.lock().unwrap_or_else(|e| e.into_inner());
        let mut list = Vec::clone(&self.inner.subscribers.load());
        let Some(at) = list.iter().position(|s| s.id == id) else {
            return;
        };
        let gone = list.swap_remove(at);
        self.inner.subscribers.store(Arc::new(list));
        if let Some(count) = edit.get_mut(&gone.pattern) {
            *count -= 1;
            if *count == 0 {
                edit.remove(&gone.pattern);
                if let Some(backplane) = self.inner.backplane.get() {
                    backplane.interest(&gone.pattern, false);
                }
            }
        }
    }

    /// Queues `data` for every matching subscription whose identity may receive `topic`, both
    /// as they are in `config` (its `pubsub` rules, each subscriber's identity resolved in its
    /// `auth`), and hands it to the backplane; returns how many local subscriptions it was
    /// queued for.
    pub fn publish(&self, config: &Snapshot, topic: &str, data: &Value) -> usize {
        self.publish_item(config, Published::new(topic, data))
    }

    /// [`publish`](Self::publish) for an item already encoded ([`Published::raw`]).
    pub fn publish_item(&self, config: &Snapshot, item: Published) -> usize {
        self.publish_ref(config, &item)
    }

    /// [`publish_item`](Self::publish_item) for several items, in order, all under `config`;
    /// returns how many local subscriptions each was queued for.
    pub fn publish_items(&self, config: &Snapshot, items: &[Published]) -> Vec<usize> {
        items
            .iter()
            .map(|item| self.publish_ref(config, item))
            .collect()
    }

    fn publish_ref(&self, config: &Snapshot, item: &Published) -> usize {
        let delivered = self.deliver(config, item, None);
        if let Some(backplane) = self.inner.backplane.get() {
            backplane.publish(item);
        }
        delivered
    }

    /// Queues an item that arrived through the backplane for the local subscriptions to
    /// `pattern` (the backplane's subscription it came through) that may receive it in `config`.
    pub fn deliver_remote(&self, config: &Snapshot, item: &Published, pattern: &str) -> usize {
        self.deliver(config, item, Some(pattern))
    }

    fn deliver(&self, config: &Snapshot, item: &Published, only: Option<&str>) -> usize {
        let topic = item.topic();
        let policy = config.get::<PubSubPolicy>();
        self.inner
            .subscribers
            .load()
            .iter()
            .filter(|sub| match only {
                Some(pattern) => *sub.pattern == *pattern,
                None => matches(&sub.pattern, topic),
            })
            .filter(|sub| {
                sub.identity
                    .with_at(config, |identity| may_receive(&policy, topic, identity))
            })
            .filter(|sub| sub.offer(item))
            .count()
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.inner.subscribers.load().len()
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

    fn limits(items: usize) -> QueueLimits {
        QueueLimits {
            items,
            bytes: 1 << 20,
            connection: None,
        }
    }

    fn next(sub: &mut BrokerSubscription) -> Value {
        serde_json::from_slice(&sub.items.try_recv().unwrap().json).unwrap()
    }

    #[test]
    fn an_item_encoded_from_raw_json_is_the_item_encoded_from_its_value() {
        let data = json!({"n": 1, "s": "a\"b", "list": [true, null, 2.5]});
        let raw = RawValue::from_string(data.to_string()).unwrap();
        let item = Published::raw("a/b", &raw);
        assert_eq!(item.json(), Published::new("a/b", &data).json());
        assert_eq!(
            Published::decode(item.json().clone()).unwrap().topic(),
            "a/b"
        );
    }

    #[test]
    fn data_a_subscriber_could_not_decode_is_refused_everywhere_it_enters() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for bad in [r#""\ud83d""#, r#"{"\udc00": 1}"#, "1e400", deep.as_str()] {
            // What a subscriber's decoder does with it: refused.
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
            let raw = RawValue::from_string(bad.to_owned()).unwrap();
            assert!(check_data(&raw).is_err(), "{bad}");
            let item = format!(r#"{{"topic":"a/b","data":{bad}}}"#);
            assert!(Published::decode(item.clone().into()).is_err(), "{bad}");
            let many = format!(r#"[{{"topic":"a/b","data":1}},{item}]"#);
            let refused = Published::decode_many(many.into_bytes()).unwrap_err();
            assert!(refused.starts_with("message 1: "), "{refused}");
        }
        for good in [
            r#""\ud83d\ude00""#,
            r#"{"k":[1,-2,2.5,true,null,"\n"]}"#,
            "[[[[1]]]]",
        ] {
            let raw = RawValue::from_string(good.to_owned()).unwrap();
            assert!(check_data(&raw).is_ok(), "{good}");
            let item = format!(r#"{{"topic":"a/b","data":{good}}}"#);
            assert!(Published::decode(item.into()).is_ok(), "{good}");
        }
        // An array laid out like an item is not one.
        assert!(Published::decode(r#"["a/b", 1]"#.into()).is_err());
        assert!(Published::decode(r#" ["a/b", {"x": 1}]"#.into()).is_err());
    }

    #[test]
    fn items_published_together_arrive_in_order_with_a_count_each() {
        let broker = Broker::new();
        let policy = Snapshot::default();
        let mut news = broker.subscribe("news/>", someone(), limits(8));
        let mut tech = broker.subscribe("news/tech", someone(), limits(8));
        let json = r#"[{"topic":"news/tech","data":1}, {"topic":"sport/x","data":2},
            {"data":{"s":"\u00e9"},"topic":"news/a"}]"#;
        let items = Published::decode_many(json.as_bytes().to_vec()).unwrap();
        assert_eq!(broker.publish_items(&policy, &items), [2, 0, 1]);
        assert_eq!(next(&mut news), json!({"topic": "news/tech", "data": 1}));
        assert_eq!(
            next(&mut news),
            json!({"topic": "news/a", "data": {"s": "é"}})
        );
        assert_eq!(next(&mut tech), json!({"topic": "news/tech", "data": 1}));
        assert!(news.items.try_recv().is_err());
    }

    #[test]
    fn a_batch_with_a_bad_item_is_refused_naming_it() {
        for (json, named) in [
            (
                r#"[{"topic":"a","data":1},{"topic":"a/*","data":2}]"#,
                "message 1:",
            ),
            (r#"[{"topic":"a","data":1},{"topic":"a"}]"#, "message 1:"),
            (r#"[{"topic":"a","data":1},7]"#, "message 1:"),
            (r#"{"topic":"a","data":1}"#, "not a JSON array"),
            (r#"[{"topic":"a","data":1}"#, "not a JSON array"),
        ] {
            let e = Published::decode_many(json.as_bytes().to_vec()).err();
            assert!(
                e.as_deref().is_some_and(|e| e.starts_with(named)),
                "{json}: {e:?}"
            );
        }
        assert!(Published::decode_many(b"[]".to_vec()).unwrap().is_empty());
    }

    #[test]
    fn a_batch_shares_its_buffer_and_the_name_of_a_repeated_topic() {
        let json = br#"[{"topic":"a/b","data":1},{"topic":"a/b","data":2}]"#.to_vec();
        let items = Published::decode_many(json).unwrap();
        assert_eq!(&items[1].json()[..], br#"{"topic":"a/b","data":2}"#);
        assert_eq!(items[0].topic().as_ptr(), items[1].topic().as_ptr());
        assert_eq!(
            items[0]
                .json()
                .as_ptr()
                .wrapping_add(items[0].json().len() + 1),
            items[1].json().as_ptr()
        );
    }

    #[test]
    fn publish_reaches_matching_subscriptions_only() {
        let broker = Broker::new();
        let policy = Snapshot::default();
        let mut news = broker.subscribe("news/>", someone(), limits(8));
        let mut other = broker.subscribe("sport/*", someone(), limits(8));
        assert_eq!(broker.publish(&policy, "news/tech/ai", &json!(1)), 1);
        assert_eq!(next(&mut news), json!({"topic": "news/tech/ai", "data": 1}));
        assert!(other.items.try_recv().is_err());
    }

    #[test]
    fn one_encoding_is_shared_by_every_subscription() {
        let broker = Broker::new();
        let policy = Snapshot::default();
        let mut subs: Vec<_> = (0..3)
            .map(|_| broker.subscribe("t", someone(), limits(8)))
            .collect();
        broker.publish(&policy, "t", &json!("x".repeat(1000)));
        let items: Vec<_> = subs
            .iter_mut()
            .map(|s| s.items.try_recv().unwrap())
            .collect();
        assert!(items
            .windows(2)
            .all(|w| w[0].json.as_ptr() == w[1].json.as_ptr()));
    }

    #[test]
    fn full_queue_ends_the_subscription_and_spares_the_others() {
        let broker = Broker::new();
        let policy = Snapshot::default();
        let slow = broker.subscribe("t", someone(), limits(1));
        let mut fast = broker.subscribe("t", someone(), limits(8));
        assert_eq!(broker.publish(&policy, "t", &json!(1)), 2);
        fast.items.try_recv().unwrap();
        assert_eq!(broker.publish(&policy, "t", &json!(2)), 1);
        assert!(slow.overflow.is_cancelled());
        assert_eq!(next(&mut fast)["data"], 2);
        drop(slow);
        assert_eq!(broker.len(), 1);
    }

    #[test]
    fn byte_budget_bounds_what_a_subscription_holds_until_written() {
        let broker = Broker::new();
        let policy = Snapshot::default();
        let big = json!("x".repeat(600));
        let budget = QueueLimits {
            items: 100,
            bytes: 1000,
            connection: None,
        };
        let mut sub = broker.subscribe("t", someone(), budget);
        // One item of any size is taken on an empty budget.
        assert_eq!(broker.publish(&policy, "t", &big), 1);
        let held = sub.items.try_recv().unwrap();
        // Still charged while the writer holds it: the next one does not fit.
        assert_eq!(broker.publish(&policy, "t", &big), 0);
        assert!(sub.overflow.is_cancelled());
        drop(held);
    }

    #[test]
    fn connection_budget_is_shared_by_its_subscriptions_and_given_back() {
        let broker = Broker::new();
        let policy = Snapshot::default();
        let connection = ByteBudget::new(1000);
        let limits = || QueueLimits {
            items: 100,
            bytes: 1 << 20,
            connection: Some(connection.clone()),
        };
        let mut a = broker.subscribe("t", someone(), limits());
        let b = broker.subscribe("t", someone(), limits());
        let item = json!("x".repeat(600));
        // a takes it on the empty budget; b would go over the connection's budget.
        assert_eq!(broker.publish(&policy, "t", &item), 1);
        assert!(b.overflow.is_cancelled() && !a.overflow.is_cancelled());
        let used = connection.used();
        assert!(used > 600, "{used}");
        drop(a.items.try_recv().unwrap());
        assert_eq!(connection.used(), 0);
        drop((a, b));
    }

    #[test]
    fn remote_items_are_checked_and_reach_only_their_pattern() {
        let broker = Broker::new();
        let policy = Snapshot::default();
        let mut wide = broker.subscribe("a/>", someone(), limits(8));
        let mut exact = broker.subscribe("a/b", someone(), limits(8));
        let item = Published::decode(Bytes::from_static(br#"{"topic":"a/b","data":[1]}"#)).unwrap();
        assert_eq!(broker.deliver_remote(&policy, &item, "a/b"), 1);
        assert!(wide.items.try_recv().is_err());
        assert_eq!(next(&mut exact)["data"], json!([1]));
        for bad in [
            &b"{}"[..],
            b"[1]",
            br#"{"topic":"a/*","data":1}"#,
            br#"{"topic":"a"}"#,
            b"nope",
        ] {
            assert!(Published::decode(Bytes::from(bad.to_vec())).is_err());
        }
    }

    #[test]
    fn interest_follows_the_first_and_last_subscription_of_a_pattern() {
        #[derive(Default)]
        struct Log(Mutex<Vec<(String, bool)>>);
        impl Backplane for Log {
            fn publish(&self, item: &Published) {
                self.0.lock().unwrap().push((item.topic().into(), true));
            }
            fn interest(&self, pattern: &str, on: bool) {
                self.0.lock().unwrap().push((pattern.into(), on));
            }
        }
        let broker = Broker::new();
        let early = broker.subscribe("x", someone(), limits(8));
        let log = Arc::new(Log::default());
        broker.set_backplane(log.clone()).unwrap();
        let a = broker.subscribe("a/*", someone(), limits(8));
        let b = broker.subscribe("a/*", someone(), limits(8));
        drop(a);
        drop(b);
        drop(early);
        broker.publish(&Snapshot::default(), "a/z", &json!(1));
        let log = log.0.lock().unwrap().clone();
        let want: Vec<(String, bool)> = [
            ("x", true),
            ("a/*", true),
            ("a/*", false),
            ("x", false),
            ("a/z", true),
        ]
        .iter()
        .map(|(p, on)| (p.to_string(), *on))
        .collect();
        assert_eq!(log, want);
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
