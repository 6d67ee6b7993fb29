//! Authentication and authorization of metrics scrapes, as controller-runtime's
//! `filters.WithAuthenticationAndAuthorization`: the bearer token is checked with a
//! TokenReview, then the user it names with a SubjectAccessReview for the request's
//! non-resource path and verb (`get` on `/metrics`). RBAC grants that with a ClusterRole such as
//! the chart's `<release>-metrics-reader`; the operator itself needs `system:auth-delegator`
//! (create TokenReviews and SubjectAccessReviews), which the chart binds as
//! `<release>-auth-delegator`.

use http::{HeaderMap, StatusCode, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// Why a request was refused: the status to answer and a short plain-text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401 (no or invalid token), 403 (not allowed) or 500 (a review failed).
    pub status: StatusCode,
    /// The response body.
    pub reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// Checks scrapers' bearer tokens against the Kubernetes API.
#[derive(Clone)]
pub struct Authorizer {
    token_reviews: Api<TokenReview>,
    access_reviews: Api<SubjectAccessReview>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer asking the API server of `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            token_reviews: Api::all(client.clone()),
            access_reviews: Api::all(client),
        }
    }

    /// Whether the request with `headers` may `method` the non-resource `path`.
    pub async fn check(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized"))?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let reviewed = self
            .token_reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "TokenReview failed");
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Authentication failed: the TokenReview could not be made",
                )
            })?;
        let status = reviewed.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                tracing::debug!(error = ?status.error, "metrics scrape with an invalid token");
                return Err(Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
            }
        };
        let username = user.username.clone().unwrap_or_default();
        let verb = method.to_ascii_lowercase();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some(verb.clone()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviewed = self
            .access_reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "SubjectAccessReview failed");
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Authorization failed: the SubjectAccessReview could not be made",
                )
            })?;
        if reviewed.status.is_some_and(|s| s.allowed) {
            Ok(())
        } else {
            tracing::debug!(user = %username, %verb, %path, "metrics scrape denied");
            Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("Authorization denied for user {username} to {verb} {path}"),
            ))
        }
    }
}
