//! Checks the API server's schema cannot express (or that older manifests may have slipped
//! past): an object failing them gets `Ready=False, reason=InvalidSpec`.

use std::time::Duration;

use http_add_on_types::crd::http_scaled_object::HTTPScaledObjectSpec;
use http_add_on_types::crd::interceptor_route::{
    InterceptorRouteSpec, MAX_BODY_BYTES, StaticResponse,
};
use http_add_on_types::duration::parse_duration;

/// Why a spec is invalid; the message goes into the `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

fn invalid(msg: impl Into<String>) -> Result<(), InvalidSpec> {
    Err(InvalidSpec(msg.into()))
}

fn duration(field: &str, value: &str) -> Result<Duration, InvalidSpec> {
    parse_duration(value).map_err(|e| InvalidSpec(format!("{field}: {e}")))
}

fn exactly_one_port(
    field: &str,
    port: Option<i32>,
    port_name: Option<&str>,
) -> Result<(), InvalidSpec> {
    match (port, port_name.filter(|n| !n.is_empty())) {
        (Some(_), Some(_)) | (None, None) => invalid(format!(
            "{field}: exactly one of port and portName must be set"
        )),
        (Some(p), None) if !(1..=65535).contains(&p) => {
            invalid(format!("{field}.port: {p} is not between 1 and 65535"))
        }
        _ => Ok(()),
    }
}

fn rate_window(field: &str, window: &str, granularity: &str) -> Result<(), InvalidSpec> {
    let w = duration(&format!("{field}.window"), window)?;
    let g = duration(&format!("{field}.granularity"), granularity)?;
    if w.is_zero() || g.is_zero() {
        return invalid(format!("{field}: window and granularity must be positive"));
    }
    if g > w {
        return invalid(format!(
            "{field}: granularity {granularity} is longer than the window {window}"
        ));
    }
    Ok(())
}

fn positive_target(field: &str, value: i64) -> Result<(), InvalidSpec> {
    if value < 1 {
        return invalid(format!(
            "{field}.targetValue must be at least 1, got {value}"
        ));
    }
    Ok(())
}

/// Validates an HTTPScaledObject spec.
pub fn http_scaled_object(spec: &HTTPScaledObjectSpec) -> Result<(), InvalidSpec> {
    let target = &spec.scale_target_ref;
    if target.name.trim().is_empty() {
        return invalid("scaleTargetRef.name must not be empty");
    }
    if target.service.trim().is_empty() {
        return invalid("scaleTargetRef.service must not be empty");
    }
    exactly_one_port("scaleTargetRef", target.port, target.port_name.as_deref())?;
    if let Some(failover) = &spec.cold_start_timeout_failover_ref {
        if failover.service.trim().is_empty() {
            return invalid("coldStartTimeoutFailoverRef.service must not be empty");
        }
        exactly_one_port(
            "coldStartTimeoutFailoverRef",
            failover.port,
            failover.port_name.as_deref(),
        )?;
        if failover.timeout_seconds < 1 {
            return invalid("coldStartTimeoutFailoverRef.timeoutSeconds must be at least 1");
        }
    }
    if let Some(replicas) = &spec.replicas {
        let (min, max) = (replicas.min.unwrap_or(0), replicas.max.unwrap_or(100));
        if min < 0 {
            return invalid(format!("replicas.min must not be negative, got {min}"));
        }
        if max < min {
            return invalid(format!(
                "replicas.max ({max}) is less than replicas.min ({min})"
            ));
        }
    }
    for (field, value) in [
        ("scaledownPeriod", spec.scaledown_period),
        ("initialCooldownPeriod", spec.initial_cooldown_period),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            return invalid(format!("{field} must not be negative, got {v}"));
        }
    }
    if let Some(t) = spec.target_pending_requests.filter(|t| *t < 1) {
        return invalid(format!("targetPendingRequests must be at least 1, got {t}"));
    }
    if let Some(metric) = &spec.scaling_metric {
        if metric.concurrency.is_some() && metric.request_rate.is_some() {
            return invalid(
                "scalingMetric: concurrency and requestRate are mutually exclusive on an HTTPScaledObject",
            );
        }
        if let Some(c) = &metric.concurrency {
            positive_target("scalingMetric.concurrency", c.target_value)?;
        }
        if let Some(r) = &metric.request_rate {
            positive_target("scalingMetric.requestRate", r.target_value)?;
            rate_window("scalingMetric.requestRate", &r.window, &r.granularity)?;
        }
    }
    if let Some(t) = &spec.timeouts {
        for (field, value) in [
            ("timeouts.conditionWait", &t.condition_wait),
            ("timeouts.responseHeader", &t.response_header),
        ] {
            if let Some(v) = value {
                duration(field, v)?;
            }
        }
    }
    Ok(())
}

fn static_response(field: &str, r: &StaticResponse) -> Result<(), InvalidSpec> {
    if let Some(code) = r.status_code.filter(|c| !(100..=599).contains(c)) {
        return invalid(format!(
            "{field}.statusCode {code} is not between 100 and 599"
        ));
    }
    if r.body.is_some() && r.body_from_config_map.is_some() {
        return invalid(format!(
            "{field}: at most one of body and bodyFromConfigMap may be set"
        ));
    }
    if r.body.as_ref().is_some_and(|b| b.len() > MAX_BODY_BYTES) {
        return invalid(format!(
            "{field}.body is longer than {MAX_BODY_BYTES} bytes"
        ));
    }
    if r.body_from_config_map
        .as_ref()
        .is_some_and(|c| c.name.is_empty())
    {
        return invalid(format!("{field}.bodyFromConfigMap.name must not be empty"));
    }
    Ok(())
}

/// Validates an InterceptorRoute spec.
pub fn interceptor_route(spec: &InterceptorRouteSpec) -> Result<(), InvalidSpec> {
    if spec.target.service.trim().is_empty() {
        return invalid("target.service must not be empty");
    }
    exactly_one_port("target", spec.target.port, spec.target.port_name.as_deref())?;
    let metric = &spec.scaling_metric;
    if metric.concurrency.is_none() && metric.request_rate.is_none() {
        return invalid("scalingMetric: at least one of concurrency and requestRate must be set");
    }
    if let Some(c) = &metric.concurrency {
        positive_target("scalingMetric.concurrency", c.target_value.into())?;
    }
    if let Some(r) = &metric.request_rate {
        positive_target("scalingMetric.requestRate", r.target_value.into())?;
        rate_window("scalingMetric.requestRate", &r.window, &r.granularity)?;
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        if rule.paths.iter().any(|p| p.value.is_empty()) {
            return invalid(format!("rules[{i}].paths: a path must not be empty"));
        }
        if rule.headers.iter().any(|h| h.name.is_empty()) {
            return invalid(format!(
                "rules[{i}].headers: a header name must not be empty"
            ));
        }
    }
    if let Some(cold) = &spec.cold_start {
        if cold.fallback.is_none() && cold.placeholder.is_none() {
            return invalid("coldStart: at least one of fallback and placeholder must be set");
        }
        if let Some(f) = &cold.fallback {
            if f.service.name.trim().is_empty() {
                return invalid("coldStart.fallback.service.name must not be empty");
            }
            exactly_one_port(
                "coldStart.fallback.service",
                f.service.port,
                f.service.port_name.as_deref(),
            )?;
        }
        if let Some(p) = &cold.placeholder {
            static_response("coldStart.placeholder.response", &p.response)?;
        }
    }
    if let Some(t) = &spec.timeouts {
        for (field, value) in [
            ("timeouts.readiness", &t.readiness),
            ("timeouts.request", &t.request),
            ("timeouts.responseHeader", &t.response_header),
        ] {
            if let Some(v) = value {
                duration(field, v)?;
            }
        }
    }
    for (i, route) in spec.static_routes.iter().enumerate() {
        if route.rules.is_empty() {
            return invalid(format!("staticRoutes[{i}].rules must not be empty"));
        }
        static_response(&format!("staticRoutes[{i}].response"), &route.response)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http_add_on_types::crd::http_scaled_object::{
        ColdStartTimeoutFailoverRef, ConcurrencyMetricSpec, HTTPScaledObjectTimeoutsSpec,
        RateMetricSpec, ReplicaStruct, ScaleTargetRef, ScalingMetricSpec,
    };
    use http_add_on_types::crd::interceptor_route::{
        ColdStartSpec, ConcurrencyTargetSpec, ScalingMetricSpec as IrMetric, StaticRoute, TargetRef,
    };

    use super::*;

    fn hso() -> HTTPScaledObjectSpec {
        HTTPScaledObjectSpec {
            scale_target_ref: ScaleTargetRef {
                name: "app".into(),
                service: "app".into(),
                port: Some(80),
                ..ScaleTargetRef::default()
            },
            ..HTTPScaledObjectSpec::default()
        }
    }

    fn rate(window: &str, granularity: &str) -> RateMetricSpec {
        RateMetricSpec {
            target_value: 10,
            window: window.into(),
            granularity: granularity.into(),
        }
    }

    fn rejects(spec: HTTPScaledObjectSpec, needle: &str) {
        let err = http_scaled_object(&spec).expect_err(needle);
        assert!(err.0.contains(needle), "{needle:?} not in {:?}", err.0);
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert_eq!(http_scaled_object(&hso()), Ok(()));
        let mut s = hso();
        s.scaling_metric = Some(ScalingMetricSpec {
            concurrency: None,
            request_rate: Some(rate("1m", "1s")),
        });
        s.timeouts = Some(HTTPScaledObjectTimeoutsSpec {
            condition_wait: Some("1m30s".into()),
            response_header: Some("500ms".into()),
        });
        s.replicas = Some(ReplicaStruct {
            min: Some(1),
            max: Some(1),
        });
        assert_eq!(http_scaled_object(&s), Ok(()));
    }

    #[test]
    fn both_scaling_metrics_are_rejected() {
        let mut s = hso();
        s.scaling_metric = Some(ScalingMetricSpec {
            concurrency: Some(ConcurrencyMetricSpec { target_value: 100 }),
            request_rate: Some(rate("1m", "1s")),
        });
        rejects(s, "mutually exclusive");
    }

    #[test]
    fn bad_durations_are_rejected() {
        let mut s = hso();
        s.timeouts = Some(HTTPScaledObjectTimeoutsSpec {
            condition_wait: Some("5 minutes".into()),
            response_header: None,
        });
        rejects(s, "timeouts.conditionWait");
        let mut s = hso();
        s.timeouts = Some(HTTPScaledObjectTimeoutsSpec {
            condition_wait: None,
            response_header: Some("10".into()),
        });
        rejects(s, "timeouts.responseHeader");
    }

    #[test]
    fn empty_names_and_ports_are_rejected() {
        let mut s = hso();
        s.scale_target_ref.name = String::new();
        rejects(s, "scaleTargetRef.name");
        let mut s = hso();
        s.scale_target_ref.service = " ".into();
        rejects(s, "scaleTargetRef.service");
        let mut s = hso();
        s.scale_target_ref.port_name = Some("http".into());
        rejects(s, "exactly one of port and portName");
        let mut s = hso();
        s.scale_target_ref.port = None;
        rejects(s, "exactly one of port and portName");
        let mut s = hso();
        s.cold_start_timeout_failover_ref = Some(ColdStartTimeoutFailoverRef {
            service: "fallback".into(),
            port: None,
            port_name: None,
            timeout_seconds: 30,
        });
        rejects(s, "coldStartTimeoutFailoverRef");
    }

    #[test]
    fn window_and_granularity_must_make_sense() {
        for (window, granularity, needle) in [
            ("1 minute", "1s", "requestRate.window"),
            ("1m", "x", "requestRate.granularity"),
            ("0s", "1s", "must be positive"),
            ("1s", "1m", "longer than the window"),
        ] {
            let mut s = hso();
            s.scaling_metric = Some(ScalingMetricSpec {
                concurrency: None,
                request_rate: Some(rate(window, granularity)),
            });
            rejects(s, needle);
        }
    }

    #[test]
    fn numbers_out_of_range_are_rejected() {
        let mut s = hso();
        s.replicas = Some(ReplicaStruct {
            min: Some(5),
            max: Some(2),
        });
        rejects(s, "replicas.max");
        let mut s = hso();
        s.replicas = Some(ReplicaStruct {
            min: Some(-1),
            max: None,
        });
        rejects(s, "replicas.min");
        let mut s = hso();
        s.scaledown_period = Some(-1);
        rejects(s, "scaledownPeriod");
        let mut s = hso();
        s.scaling_metric = Some(ScalingMetricSpec {
            concurrency: Some(ConcurrencyMetricSpec { target_value: 0 }),
            request_rate: None,
        });
        rejects(s, "targetValue");
    }

    fn ir() -> InterceptorRouteSpec {
        InterceptorRouteSpec {
            target: TargetRef {
                service: "app".into(),
                port: Some(80),
                port_name: None,
            },
            proxy_mode: None,
            rules: vec![],
            scaling_metric: IrMetric {
                concurrency: Some(ConcurrencyTargetSpec { target_value: 10 }),
                request_rate: None,
            },
            cold_start: None,
            timeouts: None,
            static_routes: vec![],
        }
    }

    #[test]
    fn interceptor_route_checks() {
        assert_eq!(interceptor_route(&ir()), Ok(()));
        let mut s = ir();
        s.target.port = Some(70000);
        assert!(interceptor_route(&s).unwrap_err().0.contains("65535"));
        let mut s = ir();
        s.scaling_metric.concurrency = None;
        assert!(
            interceptor_route(&s)
                .unwrap_err()
                .0
                .contains("at least one")
        );
        let mut s = ir();
        s.timeouts = Some(Default::default());
        s.timeouts.as_mut().unwrap().readiness = Some("soon".into());
        assert!(
            interceptor_route(&s)
                .unwrap_err()
                .0
                .contains("timeouts.readiness")
        );
        let mut s = ir();
        s.cold_start = Some(ColdStartSpec::default());
        assert!(interceptor_route(&s).unwrap_err().0.contains("coldStart"));
        let mut s = ir();
        s.static_routes = vec![StaticRoute::default()];
        assert!(
            interceptor_route(&s)
                .unwrap_err()
                .0
                .contains("staticRoutes[0].rules")
        );
    }
}
