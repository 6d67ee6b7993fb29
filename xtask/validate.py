"""Strict validation of Kubernetes objects for `cargo xtask chart check`.

PyPI's `kubernetes-validate` ships the official JSON schemas of every Kubernetes release, also
in a strict variant where unknown fields are errors; `cargo xtask chart check` installs the
pinned version into target/tools and runs this script with it on PYTHONPATH.

Reads one JSON request on stdin:
    {"versions": ["1.27.0", "latest"], "objects": [OBJECT, ...], "crds": [CRD, ...]}
("latest" is the newest release the package has). An object Kubernetes has no schema for
whose group, version and kind one of "crds" serves is validated against that CRD's
openAPIV3Schema, strictly (an undeclared field is an error, as kubectl's strict field
validation and server-side apply make it). Writes to stdout:
    {"versions": ["1.27.0", "1.37.0"],
     "results": [[null | "no-schema" | "<error>", ...per version], ...per object]}
"""

import json
import sys

import jsonschema
import kubernetes_validate


def strict(schema):
    """The schema with undeclared fields forbidden wherever it declares properties."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
            if out.get("x-kubernetes-embedded-resource"):
                for meta in ("apiVersion", "kind", "metadata"):
                    out["properties"].setdefault(meta, {})
        return out
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


def crd_schemas(crds):
    """{(group, version, kind): strict openAPIV3Schema} of the served CRD versions."""
    out = {}
    for crd in crds:
        spec = crd.get("spec", {})
        for version in spec.get("versions", []):
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if version.get("served", True) and schema:
                schema = strict(schema)
                schema.setdefault("properties", {})
                for meta in ("apiVersion", "kind", "metadata"):
                    schema["properties"].setdefault(meta, {})
                key = (spec["group"], version["name"], spec["names"]["kind"])
                out[key] = schema
    return out


def check_custom(obj, schemas):
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    schema = schemas.get((group, version, obj.get("kind")))
    if schema is None:
        return "no-schema"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft4Validator(schema).iter_errors(obj)
    )
    if error is None:
        return None
    path = "/".join(str(p) for p in error.path)
    return f"at /{path}: {error.message}"


def check(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return None
    except kubernetes_validate.SchemaNotFoundError:
        return "no-schema"
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(p) for p in error.path)
        return f"at /{path}: {error.message}"


def main():
    request = json.load(sys.stdin)
    versions = [
        kubernetes_validate.latest_version() if v == "latest" else v
        for v in request["versions"]
    ]
    schemas = crd_schemas(request.get("crds", []))
    results = []
    for obj in request["objects"]:
        result = [check(obj, v) for v in versions]
        if "no-schema" in result:
            custom = check_custom(obj, schemas)
            result = [custom if r == "no-schema" else r for r in result]
        results.append(result)
    json.dump({"versions": versions, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
