//! CRD structural schemas, handled the way kube-apiserver handles them for custom resources:
//! null pruning and `default`s, pruning of unknown fields, OpenAPI v3 validation and
//! `x-kubernetes-validations` CEL rules, with errors rendered like the API server's.
//!
//! Order of work in [`validate`], as in the API server: prune non-nullable `null`s and apply
//! defaults, prune unknown fields, validate against the schema (list-type invariants included),
//! then evaluate the CEL rules unless a type or enum error already makes them meaningless.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use serde_json::{Map, Number, Value};

const PRESERVE_UNKNOWN: &str = "x-kubernetes-preserve-unknown-fields";
const EMBEDDED_RESOURCE: &str = "x-kubernetes-embedded-resource";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const VALIDATIONS: &str = "x-kubernetes-validations";
const LIST_TYPE: &str = "x-kubernetes-list-type";
const LIST_MAP_KEYS: &str = "x-kubernetes-list-map-keys";

/// The message the API server adds when CEL rules were skipped because of earlier errors.
const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object was \
                                 invalid; correct the existing errors to complete validation";

/// One validation failure, reported like the Kubernetes API server does.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `spec.scaleTargetRef` or `spec.hosts[0]`; empty for the
    /// object itself (rendered as `<nil>`, as the API server does).
    pub path: String,
    /// What went wrong.
    pub kind: FieldErrorKind,
    /// Detail appended after the kind's summary; may be empty.
    pub message: String,
}

/// The kind of a [`FieldError`], mirroring the API server's `field.ErrorType`.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    /// A required field is missing (`Required value`).
    Required,
    /// The value is malformed (`Invalid value: <value>`).
    Invalid {
        /// The offending value (for CEL rules: the schema type name, e.g. `"object"`).
        value: Value,
    },
    /// The value has the wrong type (`Invalid value: <actual type>`).
    TypeInvalid {
        /// The JSON type name of the offending value, e.g. `"string"`.
        value: Value,
    },
    /// The value is not one of an `enum`'s values (`Unsupported value: <value>`).
    NotSupported {
        /// The offending value.
        value: Value,
        /// The values the schema allows.
        supported: Vec<Value>,
    },
    /// A string is longer than `maxLength` (`Too long`).
    TooLong {
        /// The schema's `maxLength`.
        max: u64,
    },
    /// A list or object has more items than allowed (`Too many: <actual>`).
    TooMany {
        /// How many items the value has.
        actual: u64,
        /// How many it may have.
        max: u64,
    },
    /// A set or map-list holds the same element or key twice (`Duplicate value: <value>`).
    Duplicate {
        /// The duplicated element, or for a map-list the duplicated key fields.
        value: Value,
    },
    /// The value is not allowed (`Forbidden`).
    Forbidden,
    /// A field the schema does not declare, reported instead of pruned by
    /// [`validate_strict`] (`field not declared in schema`, server-side apply's words).
    NotDeclared,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<nil>"
        } else {
            &self.path
        };
        write!(f, "{path}: ")?;
        match &self.kind {
            FieldErrorKind::Required => f.write_str("Required value")?,
            FieldErrorKind::Invalid { value } | FieldErrorKind::TypeInvalid { value } => {
                write!(f, "Invalid value: {}", render_value(value))?
            }
            FieldErrorKind::NotSupported { value, .. } => {
                write!(f, "Unsupported value: {}", render_value(value))?
            }
            FieldErrorKind::TooLong { .. } => f.write_str("Too long")?,
            FieldErrorKind::TooMany { actual, .. } => write!(f, "Too many: {actual}")?,
            FieldErrorKind::Duplicate { value } => {
                write!(f, "Duplicate value: {}", render_value(value))?
            }
            FieldErrorKind::Forbidden => f.write_str("Forbidden")?,
            FieldErrorKind::NotDeclared => f.write_str("field not declared in schema")?,
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

impl FieldError {
    fn new(path: &str, kind: FieldErrorKind, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            kind,
            message: message.into(),
        }
    }

    /// Whether this error makes the API server skip CEL rules (type and enum errors).
    fn is_blocking(&self) -> bool {
        matches!(
            self.kind,
            FieldErrorKind::TypeInvalid { .. } | FieldErrorKind::NotSupported { .. }
        )
    }
}

/// Values are written as JSON: strings quoted (like Go's `%q`), numbers and booleans bare.
fn render_value(value: &Value) -> String {
    value.to_string()
}

/// Validates `obj` against a CRD version's `openAPIV3Schema`, applying `default`s in place first.
///
/// `obj` is also pruned of fields the schema does not know (except `apiVersion`, `kind` and
/// `metadata` at the root and in embedded resources, and below
/// `x-kubernetes-preserve-unknown-fields: true`). `old` is the stored object on an update; CEL
/// transition rules (those using `oldSelf`) run only when it is given and holds the same field.
pub fn validate(
    schema: &Value,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    apply_defaults(schema, obj, true);
    prune(schema, obj, true);

    let mut errors = Vec::new();
    check(schema, obj, "", &mut errors);
    if !has_rules(schema) {
        // Nothing more to check (and no "rules were not checked" note, as in the API server).
    } else if errors.iter().any(FieldError::is_blocking) {
        errors.push(FieldError::new(
            "",
            FieldErrorKind::Invalid { value: Value::Null },
            RULES_NOT_CHECKED,
        ));
    } else {
        check_rules(schema, obj, old, "", &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// [`validate`], but fields the schema does not declare are errors naming each field instead
/// of being pruned: what a cluster answers to a server-side apply (the operator's write) or a
/// `kubectl` write (strict field validation) with an unknown field.
pub fn validate_strict(
    schema: &Value,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    let mut errors: Vec<FieldError> = unknown_fields(schema, obj)
        .into_iter()
        .map(|path| FieldError::new(&path, FieldErrorKind::NotDeclared, ""))
        .collect();
    if let Err(more) = validate(schema, obj, old) {
        errors.extend(more);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Paths of the fields [`validate`] would prune from `value`, in document order.
pub fn unknown_fields(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_unknown(schema, value, "", true, &mut out);
    out
}

fn collect_unknown(
    schema: &Value,
    value: &Value,
    path: &str,
    keep_meta: bool,
    out: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let preserve = preserves_unknown(schema);
            let props = properties(schema);
            let additional = additional_properties(schema);
            for (name, value) in map {
                if keep_meta && is_object_meta_field(name) {
                    continue;
                }
                if let Some(prop) = props.and_then(|p| p.get(name)) {
                    let at = child_path(path, name);
                    collect_unknown(prop, value, &at, flag(prop, EMBEDDED_RESOURCE), out);
                } else if let Some(item) = additional {
                    let at = index_path(path, name);
                    collect_unknown(item, value, &at, flag(item, EMBEDDED_RESOURCE), out);
                } else if !preserve {
                    out.push(child_path(path, name));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                let keep_meta = flag(item, EMBEDDED_RESOURCE);
                for (i, value) in items.iter().enumerate() {
                    collect_unknown(item, value, &index_path(path, i), keep_meta, out);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Schema accessors and paths

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// `additionalProperties` when it is a schema (a bare `true` is handled as preserve-unknown).
fn additional_properties(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|s| s.is_object())
}

fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

fn is_object_meta_field(name: &str) -> bool {
    matches!(name, "apiVersion" | "kind" | "metadata")
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn index_path(path: &str, index: impl fmt::Display) -> String {
    format!("{path}[{index}]")
}

/// The subject of kube-openapi's messages ("spec.x in body should ...").
fn subject(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting and pruning

/// Applies `default`s of absent properties, recursively; a non-nullable `null` counts as absent
/// (the API server prunes it before defaulting). `root` leaves the object metadata alone.
fn apply_defaults(schema: &Value, value: &mut Value, root: bool) {
    match value {
        Value::Object(map) => {
            if let Some(props) = properties(schema) {
                for (name, prop) in props {
                    if !(root && is_object_meta_field(name)) {
                        default_property(prop, map, name);
                    }
                }
            }
            if let Some(item) = additional_properties(schema) {
                let names: Vec<String> = map.keys().cloned().collect();
                for name in &names {
                    default_property(item, map, name);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for value in items {
                    apply_defaults(item, value, false);
                }
            }
        }
        _ => {}
    }
}

fn default_property(schema: &Value, map: &mut Map<String, Value>, name: &str) {
    if map.get(name).is_some_and(Value::is_null) && !flag(schema, "nullable") {
        map.remove(name);
    }
    if !map.contains_key(name)
        && let Some(default) = schema.get("default")
    {
        map.insert(name.to_owned(), default.clone());
    }
    if let Some(value) = map.get_mut(name) {
        apply_defaults(schema, value, false);
    }
}

/// Whether an object of `schema` keeps fields it does not declare.
fn preserves_unknown(schema: &Value) -> bool {
    flag(schema, PRESERVE_UNKNOWN) || schema.get("additionalProperties") == Some(&Value::Bool(true))
}

/// Drops object fields the schema does not specify. `keep_meta` (the root and embedded resources)
/// keeps `apiVersion`, `kind` and `metadata`, which the API server handles itself.
fn prune(schema: &Value, value: &mut Value, keep_meta: bool) {
    match value {
        Value::Object(map) => {
            let preserve = preserves_unknown(schema);
            let props = properties(schema);
            let additional = additional_properties(schema);
            map.retain(|name, _| {
                preserve
                    || additional.is_some()
                    || (keep_meta && is_object_meta_field(name))
                    || props.is_some_and(|p| p.contains_key(name))
            });
            for (name, value) in map.iter_mut() {
                if keep_meta && is_object_meta_field(name) {
                    continue;
                }
                if let Some(prop) = props.and_then(|p| p.get(name)) {
                    prune(prop, value, flag(prop, EMBEDDED_RESOURCE));
                } else if let Some(item) = additional {
                    prune(item, value, flag(item, EMBEDDED_RESOURCE));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                let keep_meta = flag(item, EMBEDDED_RESOURCE);
                for value in items {
                    prune(item, value, keep_meta);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAPI validation

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if !check_type(schema, value, path, errors) {
        return;
    }
    if value.is_null() {
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|a| json_equal(a, value))
    {
        let supported = allowed
            .iter()
            .map(render_value)
            .collect::<Vec<_>>()
            .join(", ");
        errors.push(FieldError::new(
            path,
            FieldErrorKind::NotSupported {
                value: value.clone(),
                supported: allowed.clone(),
            },
            format!("supported values: {supported}"),
        ));
    }
    match value {
        Value::String(s) => check_string(schema, s, path, errors),
        Value::Number(n) => check_number(schema, n, path, errors),
        Value::Array(items) => check_array(schema, items, path, errors),
        Value::Object(map) => check_object(schema, map, path, errors),
        Value::Null | Value::Bool(_) => {}
    }
    check_combinators(schema, value, path, errors);
}

/// Checks `type`, `nullable` and `x-kubernetes-int-or-string`; false when checking should stop.
fn check_type(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) -> bool {
    let actual = json_type_name(value);
    let expected = if flag(schema, INT_OR_STRING) {
        Some("integer or string")
    } else {
        schema_type(schema)
    };
    let Some(expected) = expected else {
        return true;
    };
    if value.is_null() && flag(schema, "nullable") {
        return true;
    }
    let ok = match expected {
        "integer or string" => matches!(actual, "integer" | "string"),
        "number" => matches!(actual, "integer" | "number"),
        other => other == actual,
    };
    if !ok {
        errors.push(FieldError::new(
            path,
            FieldErrorKind::TypeInvalid {
                value: Value::String(actual.to_owned()),
            },
            format!(
                "{} in body must be of type {expected}: \"{actual}\"",
                subject(path)
            ),
        ));
    }
    ok
}

fn check_string(schema: &Value, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let length = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        errors.push(FieldError::new(
            path,
            FieldErrorKind::TooLong { max },
            format!("may not be more than {max} {unit}"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        errors.push(invalid(
            path,
            Value::String(s.to_owned()),
            format!(
                "{} in body should be at least {min} chars long",
                subject(path)
            ),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match cached_regex(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => errors.push(invalid(
                path,
                Value::String(s.to_owned()),
                format!("{} in body should match '{pattern}'", subject(path)),
            )),
            Err(err) => errors.push(invalid(
                path,
                Value::String(s.to_owned()),
                format!("invalid pattern '{pattern}' in schema: {err}"),
            )),
        }
    }
}

fn check_number(schema: &Value, n: &Number, path: &str, errors: &mut Vec<FieldError>) {
    let value = Value::Number(n.clone());
    let x = n.as_f64().unwrap_or(f64::NAN);
    if let Some(max) = schema.get("maximum").and_then(Value::as_number) {
        let limit = max.as_f64().unwrap_or(f64::NAN);
        if flag(schema, "exclusiveMaximum") {
            if x >= limit {
                let msg = format!("{} in body should be less than {max}", subject(path));
                errors.push(invalid(path, value.clone(), msg));
            }
        } else if x > limit {
            let msg = format!(
                "{} in body should be less than or equal to {max}",
                subject(path)
            );
            errors.push(invalid(path, value.clone(), msg));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_number) {
        let limit = min.as_f64().unwrap_or(f64::NAN);
        if flag(schema, "exclusiveMinimum") {
            if x <= limit {
                let msg = format!("{} in body should be greater than {min}", subject(path));
                errors.push(invalid(path, value.clone(), msg));
            }
        } else if x < limit {
            let msg = format!(
                "{} in body should be greater than or equal to {min}",
                subject(path)
            );
            errors.push(invalid(path, value.clone(), msg));
        }
    }
    if let Some(factor) = schema.get("multipleOf").and_then(Value::as_number) {
        let multiple = match (n.as_i64(), factor.as_i64()) {
            (Some(a), Some(b)) if b != 0 => a % b == 0,
            _ => {
                let q = x / factor.as_f64().unwrap_or(f64::NAN);
                q.is_finite() && q.fract() == 0.0
            }
        };
        if !multiple {
            let msg = format!("{} in body should be a multiple of {factor}", subject(path));
            errors.push(invalid(path, value.clone(), msg));
        }
    }
    let in_range = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => n.as_i64().is_none_or(|i| i32::try_from(i).is_ok()),
        Some("int64") => !n.is_u64() || n.is_i64(),
        _ => true,
    };
    if !in_range {
        let format = schema
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let msg = format!("{} in body should be in the {format} range", subject(path));
        errors.push(invalid(path, value, msg));
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let count = items.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        errors.push(FieldError::new(
            path,
            FieldErrorKind::TooMany { actual: count, max },
            format!("must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        let msg = format!("{} in body should have at least {min} items", subject(path));
        errors.push(invalid(path, Value::from(count), msg));
    }
    match schema.get(LIST_TYPE).and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].iter().any(|earlier| json_equal(earlier, item)) {
                    let kind = FieldErrorKind::Duplicate {
                        value: item.clone(),
                    };
                    errors.push(FieldError::new(&index_path(path, i), kind, ""));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get(LIST_MAP_KEYS)
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| list_map_key(item, &keys);
            for (i, item) in items.iter().enumerate() {
                let key = key_of(item);
                if items[..i]
                    .iter()
                    .any(|earlier| json_equal(&key_of(earlier), &key))
                {
                    let kind = FieldErrorKind::Duplicate { value: key };
                    errors.push(FieldError::new(&index_path(path, i), kind, ""));
                }
            }
        }
        _ => {}
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &index_path(path, i), errors);
        }
    }
}

/// The key fields of a map-list element, as an object (how duplicates are reported).
fn list_map_key(item: &Value, keys: &[&str]) -> Value {
    let mut key = Map::new();
    for name in keys {
        if let Some(v) = item.get(*name) {
            key.insert((*name).to_owned(), v.clone());
        }
    }
    Value::Object(key)
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let count = map.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && count > max
    {
        errors.push(FieldError::new(
            path,
            FieldErrorKind::TooMany { actual: count, max },
            format!("must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && count < min
    {
        let msg = format!(
            "{} in body should have at least {min} properties",
            subject(path)
        );
        errors.push(invalid(path, Value::from(count), msg));
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                let field = child_path(path, name);
                errors.push(FieldError::new(&field, FieldErrorKind::Required, ""));
            }
        }
    }
    let props = properties(schema);
    let additional = additional_properties(schema);
    for (name, value) in map {
        if let Some(prop) = props.and_then(|p| p.get(name)) {
            check(prop, value, &child_path(path, name), errors);
        } else if let Some(item) = additional {
            check(item, value, &index_path(path, name), errors);
        }
    }
}

fn check_combinators(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let passes = |sub: &Value| {
        let mut sub_errors = Vec::new();
        check(sub, value, path, &mut sub_errors);
        sub_errors
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for sub in all {
            errors.extend(passes(sub));
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|sub| passes(sub).is_empty())
    {
        let msg = format!(
            "{} in body must validate at least one schema (anyOf)",
            subject(path)
        );
        errors.push(invalid(path, value.clone(), msg));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && one.iter().filter(|sub| passes(sub).is_empty()).count() != 1
    {
        let msg = format!(
            "{} in body must validate one and only one schema (oneOf)",
            subject(path)
        );
        errors.push(invalid(path, value.clone(), msg));
    }
    if let Some(not) = schema.get("not")
        && passes(not).is_empty()
    {
        let msg = format!(
            "{} in body must not validate the schema provided",
            subject(path)
        );
        errors.push(invalid(path, value.clone(), msg));
    }
}

fn invalid(path: &str, value: Value, message: String) -> FieldError {
    FieldError::new(path, FieldErrorKind::Invalid { value }, message)
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn cached_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    static CACHE: LazyLock<Mutex<HashMap<String, regex::Regex>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(re) = cache.get(pattern) {
        return Ok(re.clone());
    }
    let re = regex::Regex::new(pattern)?;
    cache.insert(pattern.to_owned(), re.clone());
    Ok(re)
}

// ---------------------------------------------------------------------------------------------
// x-kubernetes-validations (CEL)

/// Walks the object and evaluates every node's rules; `old` is the correlated old value.
fn check_rules(
    schema: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if value.is_null() {
        return;
    }
    if let Some(rules) = schema.get(VALIDATIONS).and_then(Value::as_array) {
        for rule in rules {
            if let Some(error) = check_rule(schema, rule, value, old, path) {
                errors.push(error);
            }
        }
    }
    match value {
        Value::Object(map) => {
            let props = properties(schema);
            let additional = additional_properties(schema);
            for (name, child) in map {
                let old_child = old.and_then(|o| o.get(name)).filter(|o| !o.is_null());
                if let Some(prop) = props.and_then(|p| p.get(name)) {
                    check_rules(prop, child, old_child, &child_path(path, name), errors);
                } else if let Some(item) = additional {
                    check_rules(item, child, old_child, &index_path(path, name), errors);
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = schema.get("items") else {
                return;
            };
            // Like the API server, old elements are correlated only for map-lists, by key.
            let keys: Option<Vec<&str>> =
                (schema.get(LIST_TYPE).and_then(Value::as_str) == Some("map")).then(|| {
                    schema
                        .get(LIST_MAP_KEYS)
                        .and_then(Value::as_array)
                        .map(|k| k.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default()
                });
            let old_items = old.and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                let old_item = match (&keys, old_items) {
                    (Some(keys), Some(old_items)) => {
                        let key = list_map_key(item, keys);
                        old_items
                            .iter()
                            .find(|o| json_equal(&list_map_key(o, keys), &key))
                    }
                    _ => None,
                };
                check_rules(item_schema, item, old_item, &index_path(path, i), errors);
            }
        }
        _ => {}
    }
}

/// Whether the schema holds any `x-kubernetes-validations` rule.
fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            map.get(VALIDATIONS)
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty())
                || map.values().any(has_rules)
        }
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

/// A compiled rule, shared between evaluations.
struct CompiledRule {
    program: cel::Program,
    uses_old_self: bool,
}

/// The CEL environment the rules run in: the standard library plus the string extensions.
static CEL_ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| {
    let mut env = cel::Env::stdlib();
    // Declaring the standard extensions on a fresh stdlib cannot conflict; if a future cel
    // version makes it fail, rules using them simply fail to compile.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::lists);
    Arc::new(env)
});

fn compile_rule(source: &str) -> Result<Arc<CompiledRule>, String> {
    type Cache = Mutex<HashMap<String, Result<Arc<CompiledRule>, String>>>;
    static CACHE: LazyLock<Cache> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(compiled) = cache.get(source) {
        return compiled.clone();
    }
    let compiled = CEL_ENV
        .compile(source)
        .map(|program| {
            let uses_old_self = program.references().has_variable("oldSelf");
            Arc::new(CompiledRule {
                program,
                uses_old_self,
            })
        })
        .map_err(|err| err.to_string());
    cache.insert(source.to_owned(), compiled.clone());
    compiled
}

/// Evaluates one `x-kubernetes-validations` entry at a node; `Some` when it fails.
fn check_rule(
    schema: &Value,
    rule: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &str,
) -> Option<FieldError> {
    let source = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
    let type_name = Value::String(
        schema_type(schema).map_or_else(|| json_type_name(value).to_owned(), str::to_owned),
    );
    let compiled = match compile_rule(source) {
        Ok(compiled) => compiled,
        Err(err) => {
            let msg = format!("rule compile error: {source:?}: {err}");
            return Some(invalid(path, type_name, msg));
        }
    };
    if compiled.uses_old_self && old.is_none() {
        return None;
    }
    let mut context = cel::Context::with_env(Arc::clone(&CEL_ENV));
    let type_meta = path.is_empty() || flag(schema, EMBEDDED_RESOURCE);
    context.add_variable_from_value("self", to_cel(value, Some(schema), type_meta));
    if let Some(old) = old {
        context.add_variable_from_value("oldSelf", to_cel(old, Some(schema), type_meta));
    }
    match compiled.program.execute(&context) {
        Ok(cel::Value::Bool(true)) => None,
        Ok(cel::Value::Bool(false)) => Some(rule_failure(rule, source, &context, type_name, path)),
        Ok(other) => {
            let msg = format!(
                "rule evaluation error: {source:?}: evaluated to {:?}, not a bool",
                other.type_of()
            );
            Some(invalid(path, type_name, msg))
        }
        Err(err) => Some(invalid(
            path,
            type_name,
            format!("rule evaluation error: {source:?}: {err}"),
        )),
    }
}

/// The error for a rule that evaluated to false: its `messageExpression`, `message` or the rule,
/// at `fieldPath` when given, of the kind its `reason` names.
fn rule_failure(
    rule: &Value,
    source: &str,
    context: &cel::Context<'_, '_>,
    type_name: Value,
    path: &str,
) -> FieldError {
    let message = rule
        .get("messageExpression")
        .and_then(Value::as_str)
        .and_then(
            |expr| match compile_rule(expr).ok()?.program.execute(context) {
                Ok(cel::Value::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
                _ => None,
            },
        )
        .or_else(|| {
            rule.get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("failed rule: {source}"));
    let path = match rule.get("fieldPath").and_then(Value::as_str) {
        Some(field_path) if !field_path.is_empty() => {
            let joined = format!("{path}{field_path}");
            joined
                .strip_prefix('.')
                .map(str::to_owned)
                .unwrap_or(joined)
        }
        _ => path.to_owned(),
    };
    let kind = match rule.get("reason").and_then(Value::as_str) {
        Some("FieldValueRequired") => FieldErrorKind::Required,
        Some("FieldValueForbidden") => FieldErrorKind::Forbidden,
        Some("FieldValueDuplicate") => FieldErrorKind::Duplicate { value: type_name },
        _ => FieldErrorKind::Invalid { value: type_name },
    };
    FieldError {
        path,
        kind,
        message,
    }
}

/// The CEL value of a JSON node, as the API server builds it: objects as maps (so `has()`
/// works), integers as `int` unless the schema says `number`, other numbers as `double`.
///
/// In an object with `properties`, only those properties are visible and a `null` one counts as
/// absent; `type_meta` (the root and embedded resources) also shows `apiVersion`, `kind` and
/// `metadata.name`/`metadata.generateName`. Values below preserve-unknown-fields (no schema) are
/// converted as they are.
fn to_cel(value: &Value, schema: Option<&Value>, type_meta: bool) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            let is_double = schema.and_then(schema_type) == Some("number");
            match n.as_i64() {
                Some(i) if !is_double => cel::Value::Int(i),
                _ => match n.as_u64() {
                    Some(u) if !is_double => cel::Value::UInt(u),
                    _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.get("items"));
            let embedded = item_schema.is_some_and(|s| flag(s, EMBEDDED_RESOURCE));
            cel::Value::List(Arc::new(
                items
                    .iter()
                    .map(|v| to_cel(v, item_schema, embedded))
                    .collect(),
            ))
        }
        Value::Object(map) => {
            let Some(schema) = schema else {
                let fields: HashMap<String, cel::Value> = map
                    .iter()
                    .map(|(name, v)| (name.clone(), to_cel(v, None, false)))
                    .collect();
                return cel::Value::from(fields);
            };
            let props = properties(schema);
            let additional = additional_properties(schema);
            let mut fields = HashMap::new();
            for (name, v) in map {
                if type_meta && is_object_meta_field(name) {
                    if let Some(meta) = type_meta_value(name, v) {
                        fields.insert(name.clone(), meta);
                    }
                } else if let Some(prop) = props.and_then(|p| p.get(name)) {
                    if !v.is_null() {
                        let embedded = flag(prop, EMBEDDED_RESOURCE);
                        fields.insert(name.clone(), to_cel(v, Some(prop), embedded));
                    }
                } else if props.is_none()
                    && let Some(item) = additional
                {
                    let embedded = flag(item, EMBEDDED_RESOURCE);
                    fields.insert(name.clone(), to_cel(v, Some(item), embedded));
                }
            }
            cel::Value::from(fields)
        }
    }
}

/// `apiVersion`, `kind` and `metadata` (name and generateName only) as CEL sees them.
fn type_meta_value(name: &str, value: &Value) -> Option<cel::Value> {
    match (name, value) {
        ("metadata", Value::Object(meta)) => {
            let fields: HashMap<String, cel::Value> = ["name", "generateName"]
                .into_iter()
                .filter_map(|key| {
                    let v = meta.get(key)?.as_str()?;
                    Some((key.to_owned(), cel::Value::String(Arc::new(v.to_owned()))))
                })
                .collect();
            Some(cel::Value::from(fields))
        }
        (_, Value::String(s)) => Some(cel::Value::String(Arc::new(s.clone()))),
        _ => None,
    }
}
