//! Pub/sub topics: `/`-separated, non-empty segments. Subscription patterns may use `*` (exactly
//! one segment) and, as the last segment, `>` (one or more trailing segments).
//!
//! ```
//! use alknet_call::topic::matches;
//!
//! assert!(matches("news/*", "news/sport"));
//! assert!(matches("news/>", "news/sport/football"));
//! assert!(!matches("news/>", "news"));
//! ```

/// Checks a concrete topic (what `pubsub/publish` takes): non-empty segments and no `*` or `>`
/// anywhere. The error says what is wrong, for an `INVALID_INPUT` message.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.split('/').any(str::is_empty) {
        return Err(format!("topic {topic:?} has an empty segment"));
    }
    if topic.contains(['*', '>']) {
        return Err(format!(
            "topic {topic:?}: `*` and `>` are only allowed in subscription patterns"
        ));
    }
    Ok(())
}

/// Checks a subscription pattern: non-empty segments; `*` and `>` only as whole segments; `>` only
/// last. The same rules the node configuration's topic rules follow.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    let segments: Vec<&str> = pattern.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return Err(format!("topic {pattern:?} has an empty segment"));
        }
        if *segment == ">" && i + 1 != segments.len() {
            return Err(format!(
                "topic {pattern:?}: `>` may only be the last segment"
            ));
        }
        if segment.len() > 1 && (segment.contains('*') || segment.contains('>')) {
            return Err(format!(
                "topic {pattern:?}: `*` and `>` must be whole segments"
            ));
        }
    }
    Ok(())
}

/// Whether `topic` matches `pattern`: `*` matches exactly one segment, a final `>` one or more
/// segments, anything else itself.
///
/// Both are assumed valid (see [`validate_pattern`] and [`validate_topic`]); this runs for every
/// subscription on every publish, so it does not check them again. A `>` that is not the last
/// segment matches nothing.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut pattern = pattern.split('/');
    let mut topic = topic.split('/');
    loop {
        match (pattern.next(), topic.next()) {
            (Some(">"), Some(_)) => return pattern.next().is_none(),
            (Some("*"), Some(_)) => {}
            (Some(p), Some(t)) if p == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concrete_topics_are_valid() {
        assert_eq!(validate_topic("news"), Ok(()));
        assert_eq!(validate_topic("news/sport/football"), Ok(()));
    }

    #[test]
    fn topics_with_empty_segments_are_invalid() {
        for topic in ["", "/news", "news/", "news//sport"] {
            assert!(validate_topic(topic).is_err(), "{topic:?}");
        }
    }

    #[test]
    fn topics_with_wildcards_anywhere_are_invalid() {
        for topic in ["news/*", "news/>", "*", ">", "news/a*b", "news/a>b"] {
            assert!(validate_topic(topic).is_err(), "{topic:?}");
        }
    }

    #[test]
    fn patterns_follow_the_configuration_rules() {
        for ok in ["news", "news/*", "news/>", "*/sport", ">", "*/*/>"] {
            assert_eq!(validate_pattern(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", "news/", "news/>/a", "news/a*", "news/>>", "a//b"] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_literal_pattern_matches_only_the_same_topic() {
        assert!(matches("news/sport", "news/sport"));
        assert!(!matches("news/sport", "news/weather"));
        assert!(!matches("news/sport", "news"));
        assert!(!matches("news", "news/sport"));
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(matches("news/*", "news/sport"));
        assert!(matches("*/sport", "news/sport"));
        assert!(!matches("news/*", "news"));
        assert!(!matches("news/*", "news/sport/football"));
    }

    #[test]
    fn trailing_gt_matches_one_or_more_segments_but_not_zero() {
        assert!(matches("news/>", "news/a"));
        assert!(matches("news/>", "news/a/b"));
        assert!(!matches("news/>", "news"));
        assert!(!matches("news/>", "sport/a"));
    }

    #[test]
    fn a_lone_gt_matches_every_topic() {
        assert!(matches(">", "news"));
        assert!(matches(">", "news/a/b"));
    }

    #[test]
    fn star_and_gt_combine() {
        assert!(matches("*/eu/>", "news/eu/fr"));
        assert!(!matches("*/eu/>", "news/eu"));
        assert!(!matches("*/eu/>", "news/us/fr"));
    }

    #[test]
    fn a_gt_before_the_last_segment_matches_nothing() {
        assert!(!matches("news/>/a", "news/x/a"));
    }
}
