#!/usr/bin/env python3
"""Validates the Grafana dashboards and their provisioning.

    python3 tools/check_dashboards.py [--promtool PATH]

Checks, for every grafana/dashboards/*.json:
  - it is a JSON object with the fields Grafana's file provisioning needs (uid, title, panels,
    schemaVersion, time), and uids and titles are unique across dashboards;
  - panel ids are unique integers (rows' nested panels included), every panel has a known type,
    a title and a grid position inside the 24 columns, and no two panels overlap;
  - every datasource a panel or target names is provisioned (grafana/provisioning/datasources);
  - every target has a unique refId and a PromQL expression, every $variable it uses is a
    dashboard variable or one of Grafana's built-ins;
  - every PromQL expression parses: they are written, with Grafana's variables replaced by
    values of the right kind, as recording rules into a temporary file that `promtool check
    rules` must accept.
And the provisioning files: the dashboards provider points at the directory compose mounts.
And the alerts: every alert in prometheus/rules/*.yml is shown by a panel, whose description
names it ("Alert <name>: ...").
Exit 1 with one line per problem. Needs PyYAML and promtool.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources"
PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards"
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "text", "heatmap", "logs",
               "piechart", "state-timeline", "barchart", "histogram", "traces", "nodeGraph"}
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
                     "__interval_ms": "60000", "__range_ms": "3600000"}
VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|([A-Za-z_][A-Za-z0-9_]*))")
MOUNTED_DASHBOARDS = "/var/lib/grafana/dashboards"
RULES = ROOT / "prometheus" / "rules"


def provisioned_datasources(errors: list[str]) -> dict[str, str]:
    """uid -> type of every provisioned datasource."""
    found: dict[str, str] = {}
    for path in sorted(DATASOURCES.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if doc.get("apiVersion") != 1:
            errors.append(f"{path.name}: apiVersion must be 1")
        for ds in doc.get("datasources") or []:
            for key in ("name", "uid", "type", "url"):
                if not ds.get(key):
                    errors.append(f"{path.name}: datasource without {key}: {ds}")
            if ds.get("uid") in found:
                errors.append(f"{path.name}: datasource uid {ds['uid']!r} twice")
            found[ds.get("uid")] = ds.get("type")
    if not found:
        errors.append("no datasource provisioned")
    defaults = [p for p in DATASOURCES.glob("*.yml")
                for ds in (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("datasources") or []
                if ds.get("isDefault")]
    if len(defaults) != 1:
        errors.append(f"exactly one default datasource expected, found {len(defaults)}")
    return found


def check_providers(errors: list[str]) -> None:
    paths = []
    for path in sorted(PROVIDERS.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if doc.get("apiVersion") != 1:
            errors.append(f"{path.name}: apiVersion must be 1")
        for provider in doc.get("providers") or []:
            if provider.get("type") != "file":
                errors.append(f"{path.name}: provider {provider.get('name')!r} is not of type file")
            paths.append((provider.get("options") or {}).get("path"))
    if MOUNTED_DASHBOARDS not in paths:
        errors.append(f"no dashboard provider reads {MOUNTED_DASHBOARDS} (where compose mounts grafana/dashboards)")


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels") or []))
    return out


def check_dashboard(path: pathlib.Path, datasources: dict[str, str], errors: list[str],
                    exprs: list[tuple[str, str]]) -> dict | None:
    where = path.name
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        errors.append(f"{where}: not JSON: {err}")
        return None
    if not isinstance(doc, dict):
        errors.append(f"{where}: not a JSON object")
        return None
    for key, kind in (("uid", str), ("title", str), ("panels", list), ("schemaVersion", int), ("time", dict)):
        if not isinstance(doc.get(key), kind):
            errors.append(f"{where}: {key} missing or not a {kind.__name__}")
    if isinstance(doc.get("uid"), str) and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", doc["uid"]):
        errors.append(f"{where}: uid {doc['uid']!r} is not 1-40 letters, digits, - or _")
    if "id" in doc and doc["id"] is not None:
        errors.append(f"{where}: a provisioned dashboard has no numeric id (null or absent)")
    variables = {v.get("name") for v in (doc.get("templating") or {}).get("list") or []}
    for variable in (doc.get("templating") or {}).get("list") or []:
        ds = (variable.get("datasource") or {}).get("uid")
        if variable.get("type") == "query" and ds not in datasources:
            errors.append(f"{where}: variable {variable.get('name')!r} uses unknown datasource {ds!r}")

    panels = all_panels(doc.get("panels") or [])
    seen_ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pid = panel.get("id")
        label = f"{where}: panel {pid} {panel.get('title')!r}"
        if not isinstance(pid, int) or isinstance(pid, bool):
            errors.append(f"{label}: id is not an integer")
        elif pid in seen_ids:
            errors.append(f"{label}: id used twice")
        else:
            seen_ids.add(pid)
        if panel.get("type") not in PANEL_TYPES:
            errors.append(f"{label}: unknown type {panel.get('type')!r}")
        if not panel.get("title"):
            errors.append(f"{label}: no title")
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            errors.append(f"{label}: gridPos needs integer h, w, x, y")
        else:
            if grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24 or grid["h"] < 1:
                errors.append(f"{label}: gridPos {grid} is outside the 24 columns")
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        errors.append(f"{label}: overlaps {cells[(x, y)]}")
                        break
                    cells[(x, y)] = f"panel {pid}"
                else:
                    continue
                break
        if panel.get("type") == "row":
            continue
        panel_ds = (panel.get("datasource") or {}).get("uid")
        if panel_ds not in datasources:
            errors.append(f"{label}: unknown datasource {panel_ds!r}")
        targets = panel.get("targets") or []
        if not targets and panel.get("type") != "text":
            errors.append(f"{label}: no targets")
        ref_ids = [t.get("refId") for t in targets]
        if len(ref_ids) != len(set(ref_ids)) or not all(ref_ids):
            errors.append(f"{label}: refIds must be present and unique: {ref_ids}")
        for target in targets:
            ds = (target.get("datasource") or {}).get("uid", panel_ds)
            if ds not in datasources:
                errors.append(f"{label} {target.get('refId')}: unknown datasource {ds!r}")
                continue
            if datasources[ds] != "prometheus":
                continue
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{label} {target.get('refId')}: no PromQL expression")
                continue
            for match in VARIABLE.finditer(expr):
                name = match.group(1) or match.group(2)
                if name not in BUILTIN_VARIABLES and name not in variables:
                    errors.append(f"{label} {target.get('refId')}: ${name} is not a dashboard variable")
            exprs.append((f"{label} {target.get('refId')}", substitute(expr)))
    return doc


def substitute(expr: str) -> str:
    """Grafana's variables replaced by values PromQL accepts where they stand."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return BUILTIN_VARIABLES.get(name, "x")
    return VARIABLE.sub(value, expr)


def promtool_parses(promtool: str, exprs: list[tuple[str, str]], errors: list[str]) -> None:
    """Every expression must parse: checked as recording rules by `promtool check rules`."""
    def run(batch: list[tuple[str, str]]) -> subprocess.CompletedProcess:
        rules = {"groups": [{"name": "dashboards", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(batch)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            yaml.safe_dump(rules, f, sort_keys=False)
            name = f.name
        try:
            return subprocess.run([promtool, "check", "rules", name], capture_output=True, text=True, check=False)
        finally:
            pathlib.Path(name).unlink(missing_ok=True)

    if not exprs:
        return
    if run(exprs).returncode == 0:
        return
    # Something failed: check one by one to say which.
    for label, expr in exprs:
        result = run([(label, expr)])
        if result.returncode != 0:
            detail = " ".join((result.stdout + result.stderr).split())
            errors.append(f"{label}: promtool rejects {expr!r}: {detail}")


def alert_names(rules_dir: pathlib.Path = RULES) -> list[str]:
    """The names of the alerting rules in rules_dir/*.yml, in file order."""
    names = []
    for path in sorted(rules_dir.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in doc.get("groups") or []:
            names.extend(rule["alert"] for rule in group.get("rules") or [] if "alert" in rule)
    return names


def alerts_without_panel(alerts: list[str], docs: list[dict]) -> list[str]:
    """The alerts no panel of `docs` names in its description as "Alert <name>"."""
    described = " ".join(panel.get("description") or "" for doc in docs for panel in all_panels(doc.get("panels") or []))
    return [name for name in alerts if not re.search(rf"\bAlert {re.escape(name)}\b", described)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    args = parser.parse_args(argv[1:])
    errors: list[str] = []
    datasources = provisioned_datasources(errors)
    check_providers(errors)
    exprs: list[tuple[str, str]] = []
    uids: dict[str, str] = {}
    titles: dict[str, str] = {}
    paths = sorted(DASHBOARDS.glob("*.json"))
    if not paths:
        errors.append("no dashboard in grafana/dashboards")
    docs = []
    for path in paths:
        doc = check_dashboard(path, datasources, errors, exprs)
        if doc is None:
            continue
        docs.append(doc)
        for key, seen in (("uid", uids), ("title", titles)):
            if doc.get(key) in seen:
                errors.append(f"{path.name}: {key} {doc.get(key)!r} also in {seen[doc.get(key)]}")
            seen[doc.get(key)] = path.name
    promtool_parses(args.promtool, exprs, errors)
    alerts = alert_names()
    if not alerts:
        errors.append("no alert in prometheus/rules")
    for name in alerts_without_panel(alerts, docs):
        errors.append(f"alert {name}: no panel says \"Alert {name}\" in its description")
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 1
    panels = sum(1 for doc in docs for panel in all_panels(doc.get("panels") or []) if panel.get("type") != "row")
    print(f"grafana: {len(paths)} dashboards, {panels} panels, {len(exprs)} PromQL expressions parsed by promtool, "
          f"{len(alerts)} alerts each shown by a panel, ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
