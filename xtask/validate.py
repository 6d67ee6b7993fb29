"""Strict validation of Kubernetes objects for `cargo xtask chart check`.

PyPI's `kubernetes-validate` ships the official JSON schemas of every Kubernetes release, also
in a strict variant where unknown fields are errors; `cargo xtask chart check` installs the
pinned version into target/tools and runs this script with it on PYTHONPATH.

Reads one JSON request on stdin:
    {"versions": ["1.27.0", "latest"], "objects": [OBJECT, ...]}
("latest" is the newest release the package has). Writes to stdout:
    {"versions": ["1.27.0", "1.37.0"],
     "results": [[null | "no-schema" | "<error>", ...per version], ...per object]}
"""

import json
import sys

import kubernetes_validate


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
    results = [[check(obj, v) for v in versions] for obj in request["objects"]]
    json.dump({"versions": versions, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
