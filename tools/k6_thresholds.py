#!/usr/bin/env python3
"""Did a k6 run evaluate every threshold its scenario declares, and did each pass?

    k6_thresholds.py INSPECT.json SUMMARY.json

INSPECT.json is `k6 inspect SCRIPT` (with the run's -e variables): the options, whose
`thresholds` maps a metric (with its tag filter) to its threshold expressions. SUMMARY.json is
the run's `k6 run --summary-export`: each metric that has thresholds lists them as
`{"<expression>": <crossed>}` (false: passed). Prints one line per threshold; exits 1 when one
is missing from the summary (never evaluated: its metric got no sample, or the script and the
run disagree), when one was crossed, or when the scenario declares none. Standard library only.
"""

from __future__ import annotations

import json
import pathlib
import sys


def evaluate(declared: dict[str, list], summary: dict) -> tuple[list[str], list[str]]:
    """(report lines, problems) for the thresholds `declared` against a summary export."""
    lines, problems = [], []
    if not declared:
        problems.append("the scenario declares no threshold")
    metrics = summary.get("metrics") or {}
    for metric, expressions in sorted(declared.items()):
        results = (metrics.get(metric) or {}).get("thresholds") or {}
        for expression in expressions:
            # k6 inspect gives strings, or objects with `threshold` when abortOnFail is set.
            source = expression["threshold"] if isinstance(expression, dict) else expression
            if source not in results:
                problems.append(f"{metric}: {source} was not evaluated")
                lines.append(f"  not evaluated  {metric}: {source}")
            elif results[source] is True:
                problems.append(f"{metric}: {source} was crossed")
                lines.append(f"  crossed        {metric}: {source}")
            elif results[source] is False:
                lines.append(f"  passed         {metric}: {source}")
            else:
                problems.append(f"{metric}: {source} has no result ({results[source]!r})")
    return lines, problems


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    declared = json.loads(pathlib.Path(argv[1]).read_text(encoding="utf-8")).get("thresholds") or {}
    summary = json.loads(pathlib.Path(argv[2]).read_text(encoding="utf-8"))
    lines, problems = evaluate(declared, summary)
    print("\n".join(lines))
    count = sum(len(v) for v in declared.values())
    if problems:
        print(f"thresholds: {len(problems)} problem(s) of {count}: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print(f"thresholds: {count} evaluated, {count} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
