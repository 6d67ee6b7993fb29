"""Real Helm for `cargo xtask chart check`: lint and render a chart with the Helm v4 SDK.

PyPI's `helm-python-sdk` bundles Helm's Go SDK as a C library; `cargo xtask chart check`
installs the pinned version into target/tools and runs this script with it on PYTHONPATH.

Reads one JSON request on stdin:
    {"chart": "<dir>", "ops": [OP, ...]}
where OP is
    {"op": "lint", "strict": true, "values": {...}}
    {"op": "render", "name": "...", "namespace": "...", "values": {...},
     "set": ["a.b=1", ...], "is_upgrade": false}
(`set` strings are parsed as `helm --set` would and merged over `values`, in order).
Writes one JSON answer per op, in order, to stdout:
    {"ok": true, "lint": {...}} | {"ok": true, "manifests": {"<template>": "<yaml>"}}
    {"ok": false, "error": "..."}
"""

import json
import sys

import helm_python as helm


def merge(into, over):
    """Deep-merges the mapping `over` into `into` (as Helm merges --set over values)."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def run(chart, op):
    values = op.get("values") or {}
    for expression in op.get("set", []):
        merge(values, helm.parse_set_string(expression))
    if op["op"] == "lint":
        report = helm.lint(chart.path, values, strict=op.get("strict", True))
        return {"ok": True, "lint": report}
    if op["op"] == "render":
        # A fresh load per render: rendering prunes disabled subcharts from the loaded chart.
        with helm.Chart.load(chart.path) as loaded:
            manifests = loaded.render(
                values=values,
                name=op.get("name", "http-add-on"),
                namespace=op.get("namespace", "keda"),
                is_install=not op.get("is_upgrade", False),
                is_upgrade=op.get("is_upgrade", False),
            )
        return {"ok": True, "manifests": manifests}
    raise ValueError(f"unknown op {op['op']!r}")


class Target:
    """The chart of a request; loading it first fails early on a broken chart."""

    def __init__(self, path):
        self.path = path
        helm.Chart.load(path).close()


def main():
    request = json.load(sys.stdin)
    chart = Target(request["chart"])
    answers = []
    for op in request["ops"]:
        try:
            answers.append(run(chart, op))
        except helm.HelmError as error:
            answers.append({"ok": False, "error": str(error)})
    json.dump({"helm": helm.helm_sdk_version(), "answers": answers}, sys.stdout)


if __name__ == "__main__":
    main()
