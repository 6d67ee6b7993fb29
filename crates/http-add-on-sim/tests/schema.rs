//! Behaviour of the simulated API server's CRD schema handling: defaulting, pruning, OpenAPI
//! validation and CEL rules, checked through `schema::validate` and the rendered messages (and
//! the API server's 422 for one chart CRD case).

use http_add_on_sim::schema::{FieldError, FieldErrorKind, validate};
use serde_json::{Value, json};

/// Validates `obj` and returns the (defaulted, pruned) object or the rendered errors, sorted
/// (the order of errors between fields is not part of the contract).
fn run(schema: &Value, mut obj: Value) -> Result<Value, Vec<String>> {
    validate(schema, &mut obj, None)
        .map(|()| obj)
        .map_err(|errs| rendered(&errs))
}

fn rendered(errs: &[FieldError]) -> Vec<String> {
    let mut errs: Vec<String> = errs.iter().map(FieldError::to_string).collect();
    errs.sort();
    errs
}

fn errors(schema: &Value, obj: Value) -> Vec<String> {
    match run(schema, obj) {
        Ok(obj) => panic!("expected errors, object was accepted: {obj}"),
        Err(errs) => errs,
    }
}

/// A root schema with `spec` of the given schema.
fn with_spec(spec: Value) -> Value {
    json!({"type": "object", "properties": {"spec": spec}})
}

fn port_ref_schema() -> Value {
    with_spec(json!({
        "type": "object",
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["service"],
                "properties": {
                    "service": {"type": "string"},
                    "port": {"type": "integer", "format": "int32"},
                    "portName": {"type": "string"}
                },
                "x-kubernetes-validations": [{
                    "rule": "has(self.portName) != has(self.port)",
                    "message": "must define either the 'portName' or the 'port'"
                }]
            }
        }
    }))
}

#[test]
fn cel_exactly_one_of_port_and_port_name() {
    let schema = port_ref_schema();
    let one_of = |target: Value| run(&schema, json!({"spec": {"scaleTargetRef": target}}));
    assert!(one_of(json!({"service": "s", "port": 8080})).is_ok());
    assert!(one_of(json!({"service": "s", "portName": "http"})).is_ok());
    let expected = vec![
        "spec.scaleTargetRef: Invalid value: \"object\": must define either the 'portName' or the 'port'"
            .to_owned(),
    ];
    assert_eq!(
        one_of(json!({"service": "s", "port": 1, "portName": "http"})),
        Err(expected.clone())
    );
    assert_eq!(one_of(json!({"service": "s"})), Err(expected));
}

#[test]
fn required_field_is_reported_like_the_api_server() {
    let schema = with_spec(json!({
        "type": "object",
        "required": ["target"],
        "properties": {"target": {
            "type": "object",
            "required": ["service"],
            "properties": {"service": {"type": "string", "minLength": 1}}
        }}
    }));
    assert_eq!(
        errors(&schema, json!({"spec": {"target": {}}})),
        ["spec.target.service: Required value"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {}})),
        ["spec.target: Required value"]
    );
    let err = validate(&schema, &mut json!({"spec": {"target": {}}}), None).unwrap_err();
    assert_eq!(err[0].path, "spec.target.service");
    assert_eq!(err[0].kind, FieldErrorKind::Required);
}

#[test]
fn type_errors_block_cel_rules() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {"replicas": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "false"}]
    }));
    assert_eq!(
        errors(&schema, json!({"spec": {"replicas": "two"}})),
        [
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
        ]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"replicas": 2}})),
        ["spec: Invalid value: \"object\": failed rule: false"]
    );
}

#[test]
fn every_json_type_is_checked() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "o": {"type": "object"}, "a": {"type": "array"}, "s": {"type": "string"},
            "i": {"type": "integer"}, "n": {"type": "number"}, "b": {"type": "boolean"},
            "ios": {"x-kubernetes-int-or-string": true}
        }
    }));
    let good =
        json!({"spec": {"o": {}, "a": [], "s": "x", "i": 1, "n": 1.5, "b": true, "ios": "50%"}});
    assert!(run(&schema, good).is_ok());
    assert!(run(&schema, json!({"spec": {"n": 3, "ios": 3}})).is_ok());
    let bad =
        json!({"spec": {"o": [], "a": {}, "s": 1, "i": 1.5, "n": "1", "b": "true", "ios": true}});
    let errs = errors(&schema, bad);
    for field in ["o", "a", "s", "i", "n", "b", "ios"] {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("spec.{field}: Invalid value: "))),
            "no type error for {field}: {errs:?}"
        );
    }
}

#[test]
fn nullable_keeps_null_and_non_nullable_null_is_pruned_then_defaulted() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "keep": {"type": "string", "nullable": true, "default": "d"},
            "defaulted": {"type": "string", "default": "d"},
            "dropped": {"type": "string"}
        }
    }));
    let obj = run(
        &schema,
        json!({"spec": {"keep": null, "defaulted": null, "dropped": null}}),
    )
    .unwrap();
    assert_eq!(obj, json!({"spec": {"keep": null, "defaulted": "d"}}));
    // A null list element is not a property: it is a type error.
    let list = with_spec(json!({"type": "array", "items": {"type": "string"}}));
    assert_eq!(
        errors(&list, json!({"spec": ["a", null]}))[0],
        "spec[1]: Invalid value: \"null\": spec[1] in body must be of type string: \"null\""
    );
}

#[test]
fn enum_rejects_unlisted_values() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {"mode": {"type": "string", "enum": ["WhenUnavailable", "Always"]}}
    }));
    assert!(run(&schema, json!({"spec": {"mode": "Always"}})).is_ok());
    assert_eq!(
        errors(&schema, json!({"spec": {"mode": "Never"}}))[0],
        "spec.mode: Unsupported value: \"Never\": supported values: \"WhenUnavailable\", \"Always\""
    );
}

#[test]
fn numeric_bounds_multiple_of_and_int32() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMinimum": true, "exclusiveMaximum": true},
            "even": {"type": "integer", "multipleOf": 2},
            "wide": {"type": "integer", "format": "int32"}
        }
    }));
    assert!(
        run(
            &schema,
            json!({"spec": {"port": 1, "ratio": 0.5, "even": 4, "wide": 2147483647}})
        )
        .is_ok()
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"port": 0}})),
        ["spec.port: Invalid value: 0: spec.port in body should be greater than or equal to 1"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"port": 65536}})),
        [
            "spec.port: Invalid value: 65536: spec.port in body should be less than or equal to 65535"
        ]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"ratio": 1}})),
        ["spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"ratio": 0}})),
        ["spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"even": 3}})),
        ["spec.even: Invalid value: 3: spec.even in body should be a multiple of 2"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"wide": 2147483648_i64}})).len(),
        1
    );
}

#[test]
fn string_length_counts_unicode_chars_and_pattern_matches() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 3},
            "window": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}
        }
    }));
    assert!(run(&schema, json!({"spec": {"name": "äöü", "window": "1m"}})).is_ok());
    assert_eq!(
        errors(&schema, json!({"spec": {"name": "abcd"}})),
        ["spec.name: Too long: may not be more than 3 bytes"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"name": ""}})),
        ["spec.name: Invalid value: \"\": spec.name in body should be at least 1 chars long"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"window": "1 minute"}})),
        [
            "spec.window: Invalid value: \"1 minute\": spec.window in body should match '^[0-9]+(ms|s|m|h)$'"
        ]
    );
}

#[test]
fn item_and_property_counts() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "rules": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
            "headers": {"type": "object", "minProperties": 1, "maxProperties": 1,
                        "additionalProperties": {"type": "string", "maxLength": 2}}
        }
    }));
    assert!(
        run(
            &schema,
            json!({"spec": {"rules": ["a"], "headers": {"x": "y"}}})
        )
        .is_ok()
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"rules": []}})),
        ["spec.rules: Invalid value: 0: spec.rules in body should have at least 1 items"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"rules": ["a", "b", "c"]}})),
        ["spec.rules: Too many: 3: must have at most 2 items"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"headers": {}}})),
        ["spec.headers: Invalid value: 0: spec.headers in body should have at least 1 properties"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"headers": {"a": "1", "b": "2"}}})),
        ["spec.headers: Too many: 2: must have at most 1 items"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"headers": {"a": "long"}}})),
        ["spec.headers[a]: Too long: may not be more than 2 bytes"]
    );
}

#[test]
fn list_type_set_and_map_reject_duplicates() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "hosts": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "headers": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "required": ["name"],
                          "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}
            }
        }
    }));
    let ok = json!({"spec": {"hosts": ["a", "b"], "headers": [{"name": "a", "value": "1"}, {"name": "b", "value": "1"}]}});
    assert!(run(&schema, ok).is_ok());
    assert_eq!(
        errors(&schema, json!({"spec": {"hosts": ["a", "b", "a"]}})),
        ["spec.hosts[2]: Duplicate value: \"a\""]
    );
    assert_eq!(
        errors(
            &schema,
            json!({"spec": {"headers": [{"name": "a"}, {"name": "a", "value": "2"}]}})
        ),
        ["spec.headers[1]: Duplicate value: {\"name\":\"a\"}"]
    );
}

#[test]
fn combinators_any_one_all_not() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "any": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "anyOf": [{"required": ["a"]}, {"required": ["b"]}]},
            "one": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
            "all": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 5}]},
            "not": {"type": "string", "not": {"enum": ["forbidden"]}}
        }
    }));
    assert!(
        run(
            &schema,
            json!({"spec": {"any": {"a": "x", "b": "y"}, "one": {"b": "y"}, "all": 3, "not": "ok"}})
        )
        .is_ok()
    );
    let errs = errors(
        &schema,
        json!({"spec": {"any": {}, "one": {"a": "x", "b": "y"}, "all": 9, "not": "forbidden"}}),
    );
    assert_eq!(
        errs,
        [
            "spec.all: Invalid value: 9: spec.all in body should be less than or equal to 5",
            "spec.any: Invalid value: {}: spec.any in body must validate at least one schema (anyOf)",
            "spec.not: Invalid value: \"forbidden\": spec.not in body must not validate the schema provided",
            "spec.one: Invalid value: {\"a\":\"x\",\"b\":\"y\"}: spec.one in body must validate one and only one schema (oneOf)",
        ]
    );
}

#[test]
fn defaults_are_applied_recursively_in_objects_arrays_and_maps() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "replicas": {"type": "object", "properties": {
                "min": {"type": "integer", "default": 0},
                "max": {"type": "integer", "default": 100}
            }},
            "scalingMetric": {"type": "object", "default": {}, "properties": {
                "requestRate": {"type": "object", "properties": {
                    "targetValue": {"type": "integer", "default": 100},
                    "window": {"type": "string", "default": "1m"}
                }}
            }},
            "failover": {"type": "object", "properties": {
                "timeoutSeconds": {"type": "integer", "default": 30}
            }},
            "staticRoutes": {"type": "array", "items": {"type": "object", "properties": {
                "responseMode": {"type": "string", "default": "WhenUnavailable"}
            }}},
            "ports": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "protocol": {"type": "string", "default": "TCP"}
            }}}
        }
    }));
    let obj = run(
        &schema,
        json!({"spec": {
            "replicas": {"max": 5},
            "scalingMetric": {"requestRate": {}},
            "staticRoutes": [{}, {"responseMode": "Always"}],
            "ports": {"http": {}}
        }}),
    )
    .unwrap();
    assert_eq!(
        obj["spec"],
        json!({
            "replicas": {"min": 0, "max": 5},
            "scalingMetric": {"requestRate": {"targetValue": 100, "window": "1m"}},
            "staticRoutes": [{"responseMode": "WhenUnavailable"}, {"responseMode": "Always"}],
            "ports": {"http": {"protocol": "TCP"}}
        }),
        "absent objects (failover) get no defaults of their own properties"
    );
    // A defaulted object gets its properties' defaults too.
    let obj = run(&schema, json!({"spec": {}})).unwrap();
    assert_eq!(obj["spec"], json!({"scalingMetric": {}}));
}

#[test]
fn unknown_fields_are_pruned_except_object_meta_and_preserved_subtrees() {
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "known": {"type": "string"},
                "nested": {"type": "object", "properties": {"a": {"type": "integer"}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                         "properties": {"typed": {"type": "object", "properties": {"x": {"type": "string"}}}}},
                "items": {"type": "array", "items": {"type": "object", "properties": {"v": {"type": "string"}}}}
            }}
        }
    });
    let obj = run(
        &schema,
        json!({
            "apiVersion": "http.keda.sh/v1beta1",
            "kind": "InterceptorRoute",
            "metadata": {"name": "r", "labels": {"a": "b"}},
            "spec": {
                "known": "k", "unknown": 1,
                "nested": {"a": 1, "b": 2},
                "free": {"anything": {"deep": true}, "typed": {"x": "1", "y": "2"}},
                "items": [{"v": "1", "w": "2"}]
            },
            "extra": true
        }),
    )
    .unwrap();
    assert_eq!(
        obj,
        json!({
            "apiVersion": "http.keda.sh/v1beta1",
            "kind": "InterceptorRoute",
            "metadata": {"name": "r", "labels": {"a": "b"}},
            "spec": {
                "known": "k",
                "nested": {"a": 1},
                "free": {"anything": {"deep": true}, "typed": {"x": "1"}},
                "items": [{"v": "1"}]
            }
        })
    );
}

#[test]
fn cel_at_least_one_of_concurrency_and_request_rate() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {"scalingMetric": {
            "type": "object",
            "properties": {
                "concurrency": {"type": "object", "properties": {"targetValue": {"type": "integer"}}},
                "requestRate": {"type": "object", "properties": {"targetValue": {"type": "integer"}}}
            },
            "x-kubernetes-validations": [{
                "rule": "has(self.concurrency) || has(self.requestRate)",
                "message": "at least one of concurrency or requestRate must be set"
            }]
        }}
    }));
    let metric = |m: Value| run(&schema, json!({"spec": {"scalingMetric": m}}));
    assert!(metric(json!({"concurrency": {"targetValue": 1}})).is_ok());
    assert!(metric(json!({"requestRate": {"targetValue": 1}})).is_ok());
    assert!(metric(json!({"concurrency": {}, "requestRate": {}})).is_ok());
    assert_eq!(
        metric(json!({})),
        Err(vec![
            "spec.scalingMetric: Invalid value: \"object\": at least one of concurrency or requestRate must be set"
                .to_owned()
        ])
    );
}

#[test]
fn cel_macros_size_and_string_functions() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "hosts": {
                "type": "array", "items": {"type": "string"},
                "x-kubernetes-validations": [
                    {"rule": "self.all(h, h.matches('^[a-z0-9.*-]+$'))", "message": "bad host"},
                    {"rule": "size(self) <= 3 && self.size() >= 1"},
                    {"rule": "!self.exists(h, h.startsWith('*.') && h.endsWith('.local'))"}
                ]
            },
            "statusCode": {
                "type": "integer",
                "x-kubernetes-validations": [{"rule": "self >= 100 && self < 600 ? true : false"}]
            },
            "mode": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self in ['Always', 'WhenUnavailable']"}]
            },
            "ratio": {"type": "number", "x-kubernetes-validations": [{"rule": "self > 0.5"}]}
        }
    }));
    let ok = json!({"spec": {"hosts": ["a.example.com", "*.b.com"], "statusCode": 200, "mode": "Always", "ratio": 1}});
    assert!(run(&schema, ok).is_ok());
    assert_eq!(
        errors(&schema, json!({"spec": {"hosts": ["UPPER"]}})),
        ["spec.hosts: Invalid value: \"array\": bad host"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"hosts": []}})),
        ["spec.hosts: Invalid value: \"array\": failed rule: size(self) <= 3 && self.size() >= 1"]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"hosts": ["*.x.local"]}})),
        [
            "spec.hosts: Invalid value: \"array\": failed rule: !self.exists(h, h.startsWith('*.') && h.endsWith('.local'))"
        ]
    );
    assert_eq!(
        errors(&schema, json!({"spec": {"statusCode": 99}})).len(),
        1
    );
    assert_eq!(errors(&schema, json!({"spec": {"mode": "Never"}})).len(), 1);
    assert_eq!(errors(&schema, json!({"spec": {"ratio": 0.25}})).len(), 1);
}

#[test]
fn cel_rules_run_on_list_items_and_map_values() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "paths": {"type": "array", "items": {
                "type": "object", "properties": {"value": {"type": "string"}},
                "x-kubernetes-validations": [{"rule": "self.value.startsWith('/')", "message": "must start with /"}]
            }},
            "headers": {"type": "object", "additionalProperties": {
                "type": "string", "x-kubernetes-validations": [{"rule": "self != ''"}]
            }}
        }
    }));
    assert_eq!(
        errors(
            &schema,
            json!({"spec": {"paths": [{"value": "/a"}, {"value": "b"}], "headers": {"x": ""}}})
        ),
        [
            "spec.headers[x]: Invalid value: \"string\": failed rule: self != ''",
            "spec.paths[1]: Invalid value: \"object\": must start with /",
        ]
    );
}

#[test]
fn cel_message_expression_and_reason() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "x-kubernetes-validations": [
            {"rule": "self.name != 'x'", "messageExpression": "'name ' + self.name + ' is reserved'", "reason": "FieldValueForbidden", "fieldPath": ".name"},
        ]
    }));
    assert_eq!(
        errors(&schema, json!({"spec": {"name": "x"}})),
        ["spec.name: Forbidden: name x is reserved"]
    );
}

#[test]
fn cel_rule_that_fails_to_compile_or_evaluate_is_an_error_not_a_panic() {
    let schema = with_spec(json!({
        "type": "object",
        "x-kubernetes-validations": [{"rule": "self.port ==== )"}]
    }));
    let errs = validate(&schema, &mut json!({"spec": {}}), None).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(matches!(errs[0].kind, FieldErrorKind::Invalid { .. }));
    assert_eq!(errs[0].path, "spec");
    assert!(
        errs[0].message.contains("rule compile error"),
        "{}",
        errs[0]
    );
    assert!(errs[0].message.contains("self.port ==== )"), "{}", errs[0]);
    assert!(
        errs[0]
            .to_string()
            .starts_with("spec: Invalid value: \"object\": rule compile error: "),
        "{}",
        errs[0]
    );

    // Evaluation errors (a missing field, a non-bool result) are reported the same way.
    let schema = with_spec(json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.missing == 1"}, {"rule": "self.a"}]
    }));
    let errs = errors(&schema, json!({"spec": {"a": 1}}));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter().all(|e| e.contains("rule evaluation error")),
        "{errs:?}"
    );
}

#[test]
fn cel_transition_rule_uses_old_self_and_is_skipped_on_create() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "name is immutable"}
            ]},
            "max": {"type": "integer", "x-kubernetes-validations": [
                {"rule": "self >= oldSelf", "message": "max may not shrink"}
            ]},
            "headers": {
                "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "value": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}
                }}
            }
        }
    }));
    let old = json!({"spec": {"name": "a", "max": 5, "headers": [{"name": "h", "value": "1"}]}});
    // Create: transition rules are skipped.
    assert!(
        validate(
            &schema,
            &mut json!({"spec": {"name": "anything", "max": 0}}),
            None
        )
        .is_ok()
    );
    // Update with allowed changes; a new map-list entry has no old value.
    let mut obj = json!({"spec": {"name": "a", "max": 7, "headers": [{"name": "new", "value": "2"}, {"name": "h", "value": "1"}]}});
    assert!(validate(&schema, &mut obj, Some(&old)).is_ok());
    // Update with forbidden changes.
    let mut obj =
        json!({"spec": {"name": "b", "max": 4, "headers": [{"name": "h", "value": "2"}]}});
    let errs = rendered(&validate(&schema, &mut obj, Some(&old)).unwrap_err());
    assert_eq!(
        errs,
        [
            "spec.headers[0].value: Invalid value: \"string\": failed rule: self == oldSelf",
            "spec.max: Invalid value: \"integer\": max may not shrink",
            "spec.name: Invalid value: \"string\": name is immutable",
        ]
    );
    // A field absent in the old object is not checked by its transition rule.
    let mut obj = json!({"spec": {"max": 1}});
    assert!(validate(&schema, &mut obj, Some(&json!({"spec": {}}))).is_ok());
}

#[test]
fn root_rules_and_integers_are_ints_in_cel() {
    let schema = json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "replicas": {"type": "object", "properties": {
                "min": {"type": "integer", "default": 0},
                "max": {"type": "integer", "default": 100}
            }}
        }}},
        "x-kubernetes-validations": [
            {"rule": "!has(self.spec.replicas) || self.spec.replicas.min <= self.spec.replicas.max", "message": "min must not exceed max"},
            {"rule": "self.metadata.name.size() < 10"}
        ]
    });
    let obj = json!({"metadata": {"name": "short"}, "spec": {"replicas": {"min": 3}}});
    assert!(run(&schema, obj).is_ok());
    let obj = json!({"metadata": {"name": "short"}, "spec": {"replicas": {"min": 300}}});
    assert_eq!(
        errors(&schema, obj),
        ["<nil>: Invalid value: \"object\": min must not exceed max"]
    );
}

#[test]
fn display_renders_every_kind() {
    let err = |kind, message: &str| FieldError {
        path: "spec.x".into(),
        kind,
        message: message.into(),
    };
    assert_eq!(
        err(FieldErrorKind::Required, "").to_string(),
        "spec.x: Required value"
    );
    assert_eq!(
        err(
            FieldErrorKind::Invalid {
                value: json!("object")
            },
            "bad"
        )
        .to_string(),
        "spec.x: Invalid value: \"object\": bad"
    );
    assert_eq!(
        err(FieldErrorKind::Forbidden, "no").to_string(),
        "spec.x: Forbidden: no"
    );
    assert_eq!(
        err(
            FieldErrorKind::TooMany { actual: 3, max: 2 },
            "must have at most 2 items"
        )
        .to_string(),
        "spec.x: Too many: 3: must have at most 2 items"
    );
}

#[test]
fn cel_sees_null_nullable_properties_as_absent() {
    let schema = with_spec(json!({
        "type": "object",
        "properties": {"target": {
            "type": "object",
            "properties": {
                "port": {"type": "integer", "nullable": true},
                "portName": {"type": "string", "nullable": true}
            },
            "x-kubernetes-validations": [{"rule": "has(self.port) != has(self.portName)"}]
        }}
    }));
    let obj = run(
        &schema,
        json!({"spec": {"target": {"port": null, "portName": "http"}}}),
    )
    .unwrap();
    assert_eq!(
        obj["spec"]["target"],
        json!({"port": null, "portName": "http"}),
        "null kept"
    );
    assert!(
        run(
            &schema,
            json!({"spec": {"target": {"port": null, "portName": null}}})
        )
        .is_err()
    );
}

/// The `openAPIV3Schema` of `version` in one of the chart's generated CRDs.
fn chart_crd_schema(file: &str, version: &str) -> Value {
    let path = format!(
        "{}/../../charts/keda-http-add-on/files/crds/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    let versions = crd["spec"]["versions"].as_array().unwrap();
    let v = versions.iter().find(|v| v["name"] == version).unwrap();
    v["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn chart_interceptor_route_crd_defaults_and_rules() {
    let schema = chart_crd_schema("http.keda.sh_interceptorroutes.yaml", "v1beta1");
    let route = |spec: Value| {
        json!({"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
               "metadata": {"name": "r", "namespace": "default"}, "spec": spec})
    };
    let obj = run(
        &schema,
        route(
            json!({"target": {"service": "app", "port": 8080}, "scalingMetric": {"requestRate": {"targetValue": 7}}}),
        ),
    )
    .unwrap();
    assert_eq!(
        obj["spec"]["scalingMetric"]["requestRate"],
        json!({"targetValue": 7, "window": "1m", "granularity": "1s"})
    );
    assert_eq!(obj["metadata"]["namespace"], "default");

    let errs = errors(
        &schema,
        route(
            json!({"target": {"service": "app", "port": 80, "portName": "http"}, "scalingMetric": {}}),
        ),
    );
    assert_eq!(
        errs,
        [
            "spec.scalingMetric: Invalid value: \"object\": at least one of 'concurrency' or 'requestRate' must be set",
            "spec.target: Invalid value: \"object\": exactly one of 'port' or 'portName' must be set",
        ]
    );
    let errs = errors(&schema, route(json!({"target": {"port": 0}})));
    assert!(
        errs.contains(&"spec.target.service: Required value".to_owned()),
        "{errs:?}"
    );
    assert!(
        errs.contains(&"spec.scalingMetric: Required value".to_owned()),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.target.port: Invalid value: 0")),
        "{errs:?}"
    );
}

/// An InterceptorRoute manifest with `scalingMetric` set to `metric`.
fn route_with_metric(metric: Value) -> Value {
    json!({"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
           "metadata": {"name": "r", "namespace": "default"},
           "spec": {"target": {"service": "app", "port": 8080}, "scalingMetric": metric}})
}

/// Upstream 0.16: both `targetValue`s are required, with no default, and at least 1.
#[test]
fn chart_interceptor_route_target_values_are_required_and_positive() {
    let schema = chart_crd_schema("http.keda.sh_interceptorroutes.yaml", "v1beta1");
    for metric in ["concurrency", "requestRate"] {
        let field = format!("spec.scalingMetric.{metric}.targetValue");
        assert_eq!(
            errors(&schema, route_with_metric(json!({metric: {}}))),
            [format!("{field}: Required value")],
            "{metric}: no default fills targetValue in"
        );
        assert_eq!(
            errors(
                &schema,
                route_with_metric(json!({metric: {"targetValue": 0}}))
            ),
            [format!(
                "{field}: Invalid value: 0: {field} in body should be greater than or equal to 1"
            )]
        );
        let obj = run(
            &schema,
            route_with_metric(json!({metric: {"targetValue": 5}})),
        )
        .unwrap();
        assert_eq!(obj["spec"]["scalingMetric"][metric]["targetValue"], 5);
    }
}

/// The same through the simulated API server once the chart's CRD is registered: 422 Invalid,
/// as kube-apiserver answers.
#[tokio::test]
async fn interceptor_route_without_target_value_is_a_422() {
    use http_add_on_sim::{Sim, SimConfig};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};

    let sim = Sim::start(SimConfig::apiserver_only())
        .await
        .expect("sim starts");
    let path = format!(
        "{}/../../charts/keda-http-add-on/files/crds/http.keda.sh_interceptorroutes.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    Api::<CustomResourceDefinition>::all(sim.client())
        .create(&PostParams::default(), &crd)
        .await
        .expect("CRD registered");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("http.keda.sh", "v1beta1", "InterceptorRoute"),
        "interceptorroutes",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(sim.client(), "default", &ar);
    let create = |metric: Value| {
        let api = api.clone();
        async move {
            let obj: DynamicObject = serde_json::from_value(route_with_metric(metric)).unwrap();
            api.create(&PostParams::default(), &obj).await
        }
    };
    let status = |result: Result<DynamicObject, kube::Error>| match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    };

    let err = status(create(json!({"concurrency": {}})).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "InterceptorRoute.http.keda.sh \"r\" is invalid: \
         spec.scalingMetric.concurrency.targetValue: Required value"
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(
        causes[0].field,
        "spec.scalingMetric.concurrency.targetValue"
    );

    let err = status(create(json!({"concurrency": {"targetValue": 0}})).await);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .contains("spec.scalingMetric.concurrency.targetValue: Invalid value: 0"),
        "{}",
        err.message
    );

    let created = create(json!({"concurrency": {"targetValue": 5}}))
        .await
        .expect("targetValue 5 is accepted");
    assert_eq!(
        created.data["spec"]["scalingMetric"]["concurrency"]["targetValue"],
        5
    );
}

#[test]
fn chart_http_scaled_object_crd_port_rule() {
    let schema = chart_crd_schema("http.keda.sh_httpscaledobjects.yaml", "v1alpha1");
    let hso = |target: Value| {
        json!({"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
               "metadata": {"name": "h"}, "spec": {"scaleTargetRef": target}})
    };
    let target = json!({"name": "app", "kind": "Deployment", "apiVersion": "apps/v1", "service": "app", "port": 8080});
    assert!(run(&schema, hso(target)).is_ok());
    let errs = errors(
        &schema,
        hso(
            json!({"name": "app", "kind": "Deployment", "apiVersion": "apps/v1", "service": "app"}),
        ),
    );
    assert_eq!(
        errs,
        [
            "spec.scaleTargetRef: Invalid value: \"object\": must define either the 'portName' or the 'port'"
        ]
    );
}
