//! The review APIs, answered at once and never stored: service-account tokens
//! (`serviceaccounts/<name>/token`) and TokenReview, SelfSubjectReview (`authentication.k8s.io`),
//! and SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectAccessReview and
//! SelfSubjectRulesReview (`authorization.k8s.io`).
//!
//! Authentication knows the tokens this server issued and the static tokens of
//! [`AuthConfig::tokens`]. Authorization allows everything except what
//! [`AuthConfig::deny`] lists. The requests themselves are not authenticated: a request with
//! a known bearer token acts as that user (for the "self" reviews), any other as the admin.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult, Target};
use super::ops::{Cluster, random_u64};
use super::registry::ResourceType;

/// The audience of tokens when a request names none (the API server's `--api-audiences`).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// Shortest `expirationSeconds` a TokenRequest may ask for (10 minutes).
const MIN_EXPIRATION: i64 = 600;
/// `expirationSeconds` when a TokenRequest names none.
const DEFAULT_EXPIRATION: i64 = 3600;

/// A user as authentication reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// `system:serviceaccount:ns:name`, or any name.
    pub username: String,
    /// The user's uid ("" when none).
    pub uid: String,
    /// Groups, e.g. `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with a name and groups (and `system:authenticated`, as every authenticated
    /// user has).
    pub fn new(username: &str, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self {
            username: username.into(),
            uid: String::new(),
            groups,
        }
    }

    /// Who the requests of the simulator's kubeconfig are (it has no credentials).
    pub fn admin() -> Self {
        Self::new("kubernetes-admin", &["system:masters"])
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        v
    }
}

/// One denial: a user (or `*`), a verb (or `*`) and a resource — `resource` for the core group,
/// `group/resource`, `*`, or a non-resource path such as `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// User name, or `*` for every user.
    pub user: String,
    /// Verb (`get`, `list`, ...), or `*`.
    pub verb: String,
    /// `pods`, `apps/deployments`, `/metrics`, or `*`.
    pub resource: String,
}

impl std::str::FromStr for AccessRule {
    type Err = String;

    /// `USER:VERB:RESOURCE`, e.g. `system:serviceaccount:keda:scraper:get:/metrics` (the user
    /// may contain colons; the last two fields are the verb and the resource).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.rsplitn(3, ':');
        let (Some(resource), Some(verb), Some(user)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{s:?} is not USER:VERB:RESOURCE"));
        };
        Ok(Self {
            user: user.into(),
            verb: verb.into(),
            resource: resource.into(),
        })
    }
}

/// Authentication and authorization of the review APIs.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Static bearer tokens and who they authenticate as (like `--token-auth-file`).
    pub tokens: BTreeMap<String, UserInfo>,
    /// What SubjectAccessReviews deny; everything else is allowed.
    pub deny: Vec<AccessRule>,
}

/// A token this server issued for a service account.
#[derive(Debug, Clone)]
struct Issued {
    user: UserInfo,
    namespace: String,
    service_account: String,
    audiences: Vec<String>,
    expires: i64,
}

/// The state of the review APIs: the configuration and the issued tokens.
#[derive(Debug, Default)]
pub struct Reviews {
    config: AuthConfig,
    issued: Mutex<BTreeMap<String, Issued>>,
}

/// What authenticating a token found.
enum Authenticated {
    User(UserInfo, Vec<String>),
    Rejected(String),
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn quoted(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", items.join(" "))
}

impl Reviews {
    /// The review APIs with this configuration.
    pub fn new(config: AuthConfig) -> Self {
        Self {
            config,
            issued: Mutex::new(BTreeMap::new()),
        }
    }

    fn authenticate(&self, token: &str, audiences: &[String]) -> Authenticated {
        if let Some(user) = self.config.tokens.get(token) {
            // Static tokens are audience-agnostic: they carry whatever audiences were asked.
            return Authenticated::User(user.clone(), audiences.to_vec());
        }
        let issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(t) = issued.get(token) else {
            return Authenticated::Rejected("[invalid bearer token, token lookup failed]".into());
        };
        if t.expires <= unix_now() {
            return Authenticated::Rejected(
                "[invalid bearer token, service account token has expired]".into(),
            );
        }
        let common: Vec<String> = audiences
            .iter()
            .filter(|a| t.audiences.contains(a))
            .cloned()
            .collect();
        if common.is_empty() {
            return Authenticated::Rejected(format!(
                "[invalid bearer token, token audiences {} is invalid for the target audiences {}]",
                quoted(&t.audiences),
                quoted(audiences)
            ));
        }
        Authenticated::User(t.user.clone(), common)
    }

    /// Who makes a request: the user of its bearer token when known, else the admin.
    fn requester(&self, cluster: &Cluster, headers: &HeaderMap) -> UserInfo {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|a| a.to_str().ok())
            .and_then(|a| a.strip_prefix("Bearer "));
        match token.map(|t| self.authenticate_live(cluster, t, &[API_AUDIENCE.to_string()])) {
            Some(Authenticated::User(user, _)) => user,
            _ => UserInfo::admin(),
        }
    }

    /// [`Reviews::authenticate`], and a service account token is only good while its service
    /// account exists (with the same uid).
    fn authenticate_live(
        &self,
        cluster: &Cluster,
        token: &str,
        audiences: &[String],
    ) -> Authenticated {
        let found = self.authenticate(token, audiences);
        let issued = self
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned();
        if let (Authenticated::User(..), Some(t)) = (&found, issued) {
            let sa = cluster.registry.get("", "serviceaccounts").and_then(|rt| {
                cluster
                    .get(&rt, "v1", Some(&t.namespace), &t.service_account)
                    .ok()
            });
            let uid = sa
                .as_ref()
                .and_then(|sa| sa.pointer("/metadata/uid"))
                .and_then(Value::as_str);
            if uid != Some(t.user.uid.as_str()) {
                return Authenticated::Rejected(format!(
                    "[invalid bearer token, service account {}/{} has been deleted]",
                    t.namespace, t.service_account
                ));
            }
        }
        found
    }

    /// `POST serviceaccounts/<name>/token`: a TokenRequest with a new token in its status.
    pub fn token_request(
        &self,
        cluster: &Cluster,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> ApiResult<Value> {
        let sa_type = cluster
            .registry
            .get("", "serviceaccounts")
            .expect("built-in type");
        let sa = cluster.get(&sa_type, "v1", Some(namespace), name)?;
        let uid = sa
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let spec = body.get("spec").cloned().unwrap_or(json!({}));
        let mut audiences = strings(spec.get("audiences"));
        if audiences.is_empty() {
            audiences = vec![API_AUDIENCE.to_string()];
        }
        let expiration = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_EXPIRATION);
        if expiration < MIN_EXPIRATION {
            return Err(ApiError::invalid(
                Target {
                    group: "authentication.k8s.io",
                    kind: "TokenRequest",
                    name,
                },
                vec![super::error::Cause {
                    message: format!(
                        "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
                    ),
                    field: "spec.expirationSeconds".into(),
                }],
            ));
        }
        let now = unix_now();
        let username = format!("system:serviceaccount:{namespace}:{name}");
        let claims = json!({
            "aud": audiences,
            "exp": now + expiration,
            "iat": now,
            "iss": API_AUDIENCE,
            "sub": username,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
        let signature: Vec<u8> = (0..4).flat_map(|_| random_u64().to_be_bytes()).collect();
        let token = format!(
            "{}.{}.{}",
            base64url(br#"{"alg":"RS256","kid":"http-add-on-sim"}"#),
            base64url(claims.to_string().as_bytes()),
            base64url(&signature)
        );
        let user = UserInfo {
            uid: uid.clone(),
            ..UserInfo::new(
                &username,
                &[
                    "system:serviceaccounts",
                    &format!("system:serviceaccounts:{namespace}"),
                ],
            )
        };
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                token.clone(),
                Issued {
                    user,
                    namespace: namespace.into(),
                    service_account: name.into(),
                    audiences: audiences.clone(),
                    expires: now + expiration,
                },
            );
        let expires = jiff::Timestamp::from_second(now + expiration)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration,
                "boundObjectRef": spec.get("boundObjectRef").cloned().unwrap_or(Value::Null),
            },
            "status": {"token": token, "expirationTimestamp": expires},
        }))
    }

    fn allowed(&self, user: &UserInfo, verb: &str, resource: &str) -> (bool, String) {
        let matches = |want: &str, have: &str| want == "*" || want == have;
        match self.config.deny.iter().find(|r| {
            matches(&r.user, &user.username)
                && matches(&r.verb, verb)
                && matches(&r.resource, resource)
        }) {
            Some(rule) => (
                false,
                format!(
                    "denied by the simulated cluster's rule {}:{}:{}",
                    rule.user, rule.verb, rule.resource
                ),
            ),
            None => (true, "allowed by the simulated cluster (allow-all)".into()),
        }
    }

    /// The verb and resource of a SubjectAccessReview spec (`group/resource`, or the path).
    fn access(spec: &Value) -> ApiResult<(String, String)> {
        match (
            spec.get("resourceAttributes"),
            spec.get("nonResourceAttributes"),
        ) {
            (Some(r), None) => {
                let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
                let resource = match s("group") {
                    "" => s("resource").to_string(),
                    g => format!("{g}/{}", s("resource")),
                };
                Ok((s("verb").to_string(), resource))
            }
            (None, Some(n)) => {
                let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or_default();
                Ok((s("verb").to_string(), s("path").to_string()))
            }
            _ => Err(ApiError::bad_request(
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )),
        }
    }

    /// `POST` to one of the review types: the review with its status.
    pub fn review(
        &self,
        cluster: &Cluster,
        rt: &ResourceType,
        namespace: Option<&str>,
        headers: &HeaderMap,
        body: &Value,
    ) -> ApiResult<Value> {
        let spec = body.get("spec").cloned().unwrap_or(json!({}));
        let mut metadata = body.get("metadata").cloned().unwrap_or(json!({}));
        metadata["creationTimestamp"] = Value::Null;
        let status = match rt.kind.as_str() {
            "TokenReview" => {
                let token = spec
                    .get("token")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut audiences = strings(spec.get("audiences"));
                if audiences.is_empty() {
                    audiences = vec![API_AUDIENCE.to_string()];
                }
                match self.authenticate_live(cluster, token, &audiences) {
                    Authenticated::User(user, audiences) => json!({
                        "authenticated": true,
                        "user": user.to_json(),
                        "audiences": audiences,
                    }),
                    Authenticated::Rejected(error) => json!({"user": {}, "error": error}),
                }
            }
            "SelfSubjectReview" => json!({"userInfo": self.requester(cluster, headers).to_json()}),
            "SelfSubjectRulesReview" => {
                let partial = !self.config.deny.is_empty();
                let mut status = json!({
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    "incomplete": partial,
                });
                if partial {
                    status["evaluationError"] =
                        json!("the simulated cluster's deny rules are not listed");
                }
                status
            }
            _ => {
                let mut spec = spec.clone();
                if rt.kind == "LocalSubjectAccessReview"
                    && let Some(ns) = namespace
                {
                    let given = spec
                        .pointer("/resourceAttributes/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !given.is_empty() && given != ns {
                        return Err(ApiError::bad_request(format!(
                            "spec.resourceAttributes.namespace must match namespace: {ns}"
                        )));
                    }
                    if let Some(r) = spec.get_mut("resourceAttributes") {
                        r["namespace"] = json!(ns);
                    }
                }
                let user = if rt.kind == "SelfSubjectAccessReview" {
                    self.requester(cluster, headers)
                } else {
                    let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
                    let groups = strings(spec.get("groups"));
                    if user.is_empty() && groups.is_empty() {
                        return Err(ApiError::bad_request(
                            "at least one of user or group must be specified",
                        ));
                    }
                    UserInfo {
                        username: user.into(),
                        uid: String::new(),
                        groups,
                    }
                };
                let (verb, resource) = Self::access(&spec)?;
                let (allowed, reason) = self.allowed(&user, &verb, &resource);
                // The spec goes back as sent (the API server does not fill in who asked).
                return Ok(self.answer(
                    rt,
                    metadata,
                    spec,
                    json!({"allowed": allowed, "reason": reason}),
                ));
            }
        };
        Ok(self.answer(rt, metadata, spec, status))
    }

    fn answer(&self, rt: &ResourceType, metadata: Value, spec: Value, status: Value) -> Value {
        json!({
            "kind": rt.kind,
            "apiVersion": rt.api_version("v1"),
            "metadata": metadata,
            "spec": spec,
            "status": status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_without_padding() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn access_rule_parses_users_with_colons() {
        let rule: AccessRule = "system:serviceaccount:keda:scraper:get:/metrics"
            .parse()
            .unwrap();
        assert_eq!(rule.user, "system:serviceaccount:keda:scraper");
        assert_eq!(rule.verb, "get");
        assert_eq!(rule.resource, "/metrics");
        assert!("nocolons".parse::<AccessRule>().is_err());
    }
}
