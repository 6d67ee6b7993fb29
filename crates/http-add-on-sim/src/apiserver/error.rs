//! API errors rendered as Kubernetes `Status` objects.

use axum::http::StatusCode;
use serde_json::{Value, json};

/// One invalid field, as listed in `Status.details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Dotted path of the field, e.g. `spec.scaleTargetRef`.
    pub field: String,
    /// Human readable message, e.g. `Invalid value: "object": must define ...`.
    pub message: String,
}

/// An error answered by the API server, rendered as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine readable reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
    pub reason: &'static str,
    /// Human readable message.
    pub message: String,
    /// `details` of the Status (name, group, kind, causes), if any.
    pub details: Option<Value>,
}

/// Names an object in error messages: `deployments.apps "name"`.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// API group ("" for core).
    pub group: &'a str,
    /// Plural resource name or Kind (depending on the message).
    pub kind: &'a str,
    /// Object name.
    pub name: &'a str,
}

impl Target<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.kind})
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 NotFound for an object.
    pub fn not_found(t: Target<'_>) -> Self {
        Self {
            details: Some(t.details()),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", t.qualified(), t.name),
            )
        }
    }

    /// 404 NotFound for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(t: Target<'_>) -> Self {
        Self {
            details: Some(t.details()),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", t.qualified(), t.name),
            )
        }
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(t: Target<'_>) -> Self {
        Self {
            details: Some(t.details()),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    t.qualified(),
                    t.name
                ),
            )
        }
    }

    /// 409 Conflict of a server-side apply without `force`, worded as the API server does:
    /// `conflict with "m": .a` for one field of a manager, `conflicts with "m":` and a list
    /// for several.
    pub fn apply_conflicts(conflicts: &[super::fields::ApplyConflict]) -> Self {
        let n = conflicts.len();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", c.manager),
                    "field": c.path,
                })
            })
            .collect();
        let mut by_manager: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for c in conflicts {
            by_manager.entry(&c.manager).or_default().push(&c.path);
        }
        let parts: Vec<String> = by_manager
            .iter()
            .map(|(m, paths)| match paths.as_slice() {
                [one] => format!("conflict with {m}: {one}"),
                many => format!("conflicts with {m}:\n- {}", many.join("\n- ")),
            })
            .collect();
        let plural = if n == 1 { "" } else { "s" };
        Self {
            details: Some(json!({"causes": causes})),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {n} conflict{plural}: {}",
                    parts.join("\n")
                ),
            )
        }
    }

    /// 422 Invalid with field causes; `t.kind` is the object's Kind here.
    pub fn invalid(t: Target<'_>, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut details = t.details();
        details["causes"] = causes
            .iter()
            .map(|c| json!({"reason": cause_reason(&c.message), "message": c.message, "field": c.field}))
            .collect();
        Self {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{} \"{}\" is invalid: {summary}", t.qualified(), t.name),
            )
        }
    }

    /// 422 Invalid for a patch that cannot be applied (e.g. a failed JSON-patch `test`).
    pub fn invalid_patch(message: String) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {message}"),
        )
    }

    /// 404 NotFound for a write into a namespace that does not exist.
    pub fn namespace_not_found(ns: &str) -> Self {
        Self::not_found(Target {
            group: "",
            kind: "namespaces",
            name: ns,
        })
    }

    /// 403 Forbidden for a create in a namespace that is being deleted; `t.kind` is the plural.
    pub fn namespace_terminating(t: Target<'_>, ns: &str) -> Self {
        let mut details = t.details();
        details["causes"] = json!([{
            "reason": "NamespaceTerminating",
            "message": format!("namespace {ns} is being terminated"),
            "field": "metadata.namespace",
        }]);
        Self {
            details: Some(details),
            ..Self::new(
                403,
                "Forbidden",
                format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    t.qualified(),
                    t.name
                ),
            )
        }
    }

    /// 500 for a create whose body carries a resourceVersion. The storage layer answers with
    /// a plain error, which the API server renders with no reason (`StatusReasonUnknown`).
    pub fn resource_version_set_on_create() -> Self {
        Self::new(
            500,
            "",
            "resourceVersion should not be set on objects to be created",
        )
    }

    /// 415 for a patch format the resource does not accept (e.g. a strategic merge patch of
    /// a custom resource), listing the accepted ones as the API server's content negotiation does.
    pub fn unsupported_patch_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 504 Timeout for a read at a resourceVersion the server has not reached yet.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        Self {
            details: Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
            ..Self::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            )
        }
    }

    /// 410 Expired for a `continue` token older than the kept history.
    pub fn continue_expired() -> Self {
        Self::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 406 NotAcceptable: the client asked for a form the answer cannot take (e.g.
    /// `PartialObjectMetadata` of a list).
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        let message = if ct.contains("protobuf") || ct.contains("cbor") {
            format!(
                "the simulated API server decodes {ct} only for Namespaces, ConfigMaps, Secrets, Services, Deployments and the access and token reviews; send JSON or YAML (e.g. kubectl create -f / apply -f)"
            )
        } else {
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"
            )
        };
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 410 Gone (Expired) for a watch from a compacted resourceVersion.
    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// HTTP status code.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        // Go's `omitempty`: an error without a reason has no `reason` field.
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// The `reason` of a field cause, from the prefix the API server's field errors carry
/// (`Required value: ...`, `Forbidden: ...`, `Invalid value: ...`).
fn cause_reason(message: &str) -> &'static str {
    const PREFIXES: [(&str, &str); 8] = [
        ("Required value", "FieldValueRequired"),
        ("Forbidden", "FieldValueForbidden"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
        ("Not found", "FieldValueNotFound"),
        ("Internal error", "InternalError"),
    ];
    PREFIXES
        .iter()
        .find(|(p, _)| message.starts_with(p))
        .map_or("FieldValueInvalid", |(_, r)| r)
}

/// Result type of API operations.
pub type ApiResult<T> = Result<T, ApiError>;
