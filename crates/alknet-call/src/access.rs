//! Who may call an operation: scopes the identity must hold and resource rights it must have.
//!
//! ```
//! use alknet_call::access::Access;
//! use alknet_core::Identity;
//!
//! let access = Access { required_scopes: vec!["todo:write".into()], ..Access::default() };
//! let alice = Identity { id: "alice".into(), scopes: vec!["todo:write".into()], ..Identity::default() };
//! assert!(access.check(Some(&alice)).is_ok());
//! assert!(access.check(None).is_err()); // UNAUTHENTICATED
//! ```

use alknet_core::Identity;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CallError, ErrorCode};

/// An operation's access rule. The default (nothing set) lets anyone call, also without identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Access {
    /// Scopes the identity must hold, every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Scopes of which the identity must hold at least one (ignored when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes_any: Vec<String>,
    /// The resource type whose rights the identity needs: `identity.resources[resource_type]`
    /// must contain `resource_action` (or, with no action given, any action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The action on `resource_type` the identity needs, e.g. `"write"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_action: Option<String>,
    /// A JSON pointer into the input naming which resource a call touches, for ownership checks a
    /// handler or an ownership hook may make. It restricts nothing by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id_path: Option<String>,
}

impl Access {
    /// Whether anyone may call, also without identity.
    pub fn is_open(&self) -> bool {
        self.required_scopes.is_empty()
            && self.required_scopes_any.is_empty()
            && self.resource_type.is_none()
            && self.resource_action.is_none()
    }

    /// Checks the rule itself, for when an operation is registered: a `resource_action` needs a
    /// `resource_type`, and `resource_id_path` must be a JSON pointer (empty or starting with `/`).
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_action.is_some() && self.resource_type.is_none() {
            return Err("access: `resource_action` is set without `resource_type`".into());
        }
        if let Some(path) = &self.resource_id_path {
            if !path.is_empty() && !path.starts_with('/') {
                return Err(format!(
                    "access: `resource_id_path` {path:?} is not a JSON pointer (it must start with '/')"
                ));
            }
        }
        Ok(())
    }

    /// `Ok` if `identity` may call, `FORBIDDEN` if it lacks a scope or resource right, or
    /// `UNAUTHENTICATED` if the operation is restricted and there is no identity.
    ///
    /// A `resource_action` without a `resource_type` (see [`validate`](Self::validate)) is
    /// `FORBIDDEN` for everyone: a broken rule fails closed.
    pub fn check(&self, identity: Option<&Identity>) -> Result<(), CallError> {
        if self.is_open() {
            return Ok(());
        }
        let Some(identity) = identity else {
            return Err(CallError::new(
                ErrorCode::Unauthenticated,
                "this operation requires an authenticated identity",
            ));
        };
        let missing: Vec<&str> = self
            .required_scopes
            .iter()
            .filter(|scope| !identity.has_scope(scope))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(CallError::new(
                ErrorCode::Forbidden,
                format!("missing required scope(s): {}", missing.join(", ")),
            ));
        }
        if !self.required_scopes_any.is_empty()
            && !self
                .required_scopes_any
                .iter()
                .any(|scope| identity.has_scope(scope))
        {
            return Err(CallError::new(
                ErrorCode::Forbidden,
                format!(
                    "requires one of the scopes: {}",
                    self.required_scopes_any.join(", ")
                ),
            ));
        }
        match (&self.resource_type, &self.resource_action) {
            (None, None) => Ok(()),
            (Some(kind), action) => {
                let actions = identity
                    .resources
                    .get(kind)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let allowed = match action {
                    Some(action) => actions.iter().any(|a| a == action),
                    None => !actions.is_empty(),
                };
                if allowed {
                    Ok(())
                } else {
                    Err(CallError::new(
                        ErrorCode::Forbidden,
                        match action {
                            Some(action) => {
                                format!(
                                    "requires the right to {action:?} resources of type {kind:?}"
                                )
                            }
                            None => format!("requires rights on resources of type {kind:?}"),
                        },
                    ))
                }
            }
            (None, Some(_)) => Err(CallError::new(
                ErrorCode::Forbidden,
                "the operation's access rule is misconfigured",
            )),
        }
    }

    /// The resource id the input names, via `resource_id_path` (a JSON pointer), if any.
    pub fn resource_id<'a>(&self, input: &'a Value) -> Option<&'a Value> {
        input.pointer(self.resource_id_path.as_deref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn identity(scopes: &[&str], resources: &[(&str, &[&str])]) -> Identity {
        Identity {
            id: "peer".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            resources: resources
                .iter()
                .map(|(kind, actions)| {
                    (
                        kind.to_string(),
                        actions.iter().map(|a| a.to_string()).collect(),
                    )
                })
                .collect::<HashMap<_, _>>(),
        }
    }

    fn scopes(all: &[&str]) -> Vec<String> {
        all.iter().map(|s| s.to_string()).collect()
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Expect {
        Allowed,
        Forbidden,
        Unauthenticated,
    }

    #[test]
    fn access_control_table() {
        let open = Access::default();
        let all_of = Access {
            required_scopes: scopes(&["todo:read", "todo:write"]),
            ..Access::default()
        };
        let any_of = Access {
            required_scopes_any: scopes(&["admin", "todo:write"]),
            ..Access::default()
        };
        let resource = Access {
            resource_type: Some("todo".into()),
            resource_action: Some("delete".into()),
            ..Access::default()
        };
        let resource_any_action = Access {
            resource_type: Some("todo".into()),
            ..Access::default()
        };
        let combined = Access {
            required_scopes: scopes(&["todo:read"]),
            required_scopes_any: scopes(&["admin", "owner"]),
            resource_type: Some("todo".into()),
            resource_action: Some("write".into()),
            resource_id_path: None,
        };
        let id_path_only = Access {
            resource_id_path: Some("/id".into()),
            ..Access::default()
        };
        let action_without_type = Access {
            resource_action: Some("write".into()),
            ..Access::default()
        };

        let nobody: Option<Identity> = None;
        let bare = Some(identity(&[], &[]));
        let reader = Some(identity(&["todo:read"], &[]));
        let writer = Some(identity(&["todo:read", "todo:write"], &[]));
        let admin = Some(identity(&["admin"], &[]));
        let deleter = Some(identity(&[], &[("todo", &["read", "delete"])]));
        let todo_reader = Some(identity(&[], &[("todo", &["read"])]));
        let other_deleter = Some(identity(&[], &[("note", &["delete"])]));
        let empty_rights = Some(identity(&[], &[("todo", &[])]));
        let full = Some(identity(&["todo:read", "owner"], &[("todo", &["write"])]));

        use Expect::*;
        let table: &[(&str, &Access, &Option<Identity>, Expect)] = &[
            ("open op, no identity", &open, &nobody, Allowed),
            ("open op, any identity", &open, &bare, Allowed),
            (
                "resource_id_path alone restricts nothing",
                &id_path_only,
                &nobody,
                Allowed,
            ),
            ("all-of, holds every scope", &all_of, &writer, Allowed),
            ("all-of, holds only some", &all_of, &reader, Forbidden),
            ("all-of, holds none", &all_of, &bare, Forbidden),
            ("all-of, no identity", &all_of, &nobody, Unauthenticated),
            ("any-of, holds the first", &any_of, &admin, Allowed),
            ("any-of, holds the second", &any_of, &writer, Allowed),
            ("any-of, holds none", &any_of, &reader, Forbidden),
            ("any-of, no identity", &any_of, &nobody, Unauthenticated),
            ("resource, has the action", &resource, &deleter, Allowed),
            (
                "resource, lacks the action",
                &resource,
                &todo_reader,
                Forbidden,
            ),
            (
                "resource, action on another type",
                &resource,
                &other_deleter,
                Forbidden,
            ),
            ("resource, no rights at all", &resource, &bare, Forbidden),
            ("resource, no identity", &resource, &nobody, Unauthenticated),
            (
                "resource type alone, any action",
                &resource_any_action,
                &todo_reader,
                Allowed,
            ),
            (
                "resource type alone, empty rights",
                &resource_any_action,
                &empty_rights,
                Forbidden,
            ),
            ("combined, everything held", &combined, &full, Allowed),
            (
                "combined, scopes but no resource right",
                &combined,
                &reader,
                Forbidden,
            ),
            ("combined, no identity", &combined, &nobody, Unauthenticated),
            (
                "action without type fails closed",
                &action_without_type,
                &deleter,
                Forbidden,
            ),
        ];

        for (case, access, who, expected) in table {
            let actual = match access.check(who.as_ref()) {
                Ok(()) => Allowed,
                Err(err) if err.is(ErrorCode::Forbidden) => Forbidden,
                Err(err) if err.is(ErrorCode::Unauthenticated) => Unauthenticated,
                Err(err) => panic!("{case}: unexpected error {err}"),
            };
            assert_eq!(actual, *expected, "{case}");
        }
    }

    #[test]
    fn only_an_empty_rule_is_open() {
        assert!(Access::default().is_open());
        assert!(Access {
            resource_id_path: Some("/id".into()),
            ..Access::default()
        }
        .is_open());
        assert!(!Access {
            required_scopes_any: scopes(&["a"]),
            ..Access::default()
        }
        .is_open());
    }

    #[test]
    fn forbidden_names_the_missing_scopes() {
        let access = Access {
            required_scopes: scopes(&["a", "b", "c"]),
            ..Access::default()
        };
        let err = access.check(Some(&identity(&["b"], &[]))).unwrap_err();
        assert_eq!(err.message, "missing required scope(s): a, c");
        assert!(!err.retryable);
    }

    #[test]
    fn resource_id_follows_the_json_pointer() {
        let access = Access {
            resource_id_path: Some("/todo/id".into()),
            ..Access::default()
        };
        let input = json!({"todo": {"id": 42}});
        assert_eq!(access.resource_id(&input), Some(&json!(42)));
        assert_eq!(access.resource_id(&json!({"todo": {}})), None);
    }

    #[test]
    fn resource_id_is_none_without_a_path() {
        assert_eq!(Access::default().resource_id(&json!({"id": 1})), None);
    }

    #[test]
    fn validate_rejects_an_action_without_a_type() {
        let access = Access {
            resource_action: Some("write".into()),
            ..Access::default()
        };
        assert!(access.validate().is_err());
    }

    #[test]
    fn validate_rejects_a_resource_id_path_that_is_not_a_json_pointer() {
        let access = Access {
            resource_id_path: Some("todo.id".into()),
            ..Access::default()
        };
        assert!(access.validate().is_err());
        let ok = Access {
            resource_id_path: Some("/todo/id".into()),
            ..Access::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn serializes_without_empty_fields() {
        assert_eq!(serde_json::to_value(Access::default()).unwrap(), json!({}));
        let access: Access =
            serde_json::from_value(json!({"required_scopes": ["a"], "resource_type": "todo"}))
                .unwrap();
        assert_eq!(access.required_scopes, ["a"]);
        assert_eq!(access.resource_type.as_deref(), Some("todo"));
        assert_eq!(
            serde_json::to_value(&access).unwrap(),
            json!({"required_scopes": ["a"], "resource_type": "todo"})
        );
    }
}
