#!/usr/bin/env python3
"""docker/.env.example documents exactly the variables docker/compose.yml reads, and the
compose k6 is the k6 CI runs.

    check_compose_env.py [COMPOSE_FILE ...]    # default: docker/compose.yml docker/profiles/sasl.yml

Checks:
  - every variable the compose files interpolate (`${VAR}`, `${VAR:-default}`, `${VAR:?msg}`,
    `$VAR`, outside comment lines; `$$` is compose's escape for a literal `$`) is set in docker/.env.example, and every
    variable set there is interpolated somewhere (none is stale);
  - every variable in docker/.env.example is documented: the group of lines it is in (lines
    between blank lines) starts with a comment;
  - a variable with a default in compose (`${VAR:-default}`) has that default in
    docker/.env.example (copying the file changes nothing), and a required one (`${VAR:?}`) is
    empty there (a copy refuses to start until it is set);
  - the k6 image's tag is the k6 version pinned in tools/requirements-observability.txt.
Prints every problem and exits 1 if there is any. Standard library only.
"""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
COMPOSE_FILES = [ROOT / "docker" / "compose.yml", ROOT / "docker" / "profiles" / "sasl.yml"]
REQUIREMENTS = ROOT / "tools" / "requirements-observability.txt"

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# ${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?x}, ${VAR?x}, ${VAR:+x}; or $VAR.
REFERENCE = re.compile(rf"\$(?:\{{({NAME})(?:(:?[-?+])([^}}]*))?\}}|({NAME}))")


def interpolated(text: str) -> dict[str, tuple[str | None, str | None]]:
    """VAR -> (operator, argument) of each variable `text` interpolates (the first use wins)."""
    found: dict[str, tuple[str | None, str | None]] = {}
    # Comment lines are not interpolated; `$$` is a literal `$`: drop both before looking.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for match in REFERENCE.finditer(code.replace("$$", "")):
        name = match.group(1) or match.group(4)
        found.setdefault(name, (match.group(2), match.group(3)))
    return found


def documented(text: str) -> tuple[dict[str, str], list[str]]:
    """(VAR -> value, problems) of an env file: `VAR=value` lines, each in a group of lines that
    starts with a comment."""
    values: dict[str, str] = {}
    problems: list[str] = []
    group_has_comment = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            group_has_comment = False
            continue
        if stripped.startswith("#"):
            group_has_comment = True
            continue
        match = re.fullmatch(rf"({NAME})=(.*)", stripped)
        if not match:
            problems.append(f"line {number}: not VAR=value: {stripped!r}")
            continue
        name, value = match.groups()
        if name in values:
            problems.append(f"line {number}: {name} set twice")
        if not group_has_comment:
            problems.append(f"line {number}: {name} has no comment saying what it is")
        values[name] = value
    return values, problems


def compare(used: dict[str, tuple[str | None, str | None]], values: dict[str, str]) -> list[str]:
    problems = []
    for name in sorted(set(used) - set(values)):
        problems.append(f"{name}: read by compose but not in docker/.env.example")
    for name in sorted(set(values) - set(used)):
        problems.append(f"{name}: in docker/.env.example but compose does not read it")
    for name in sorted(set(used) & set(values)):
        operator, argument = used[name]
        if operator in (":-", "-") and values[name] != argument:
            problems.append(f"{name}: docker/.env.example has {values[name]!r}, compose's default is {argument!r}")
        if operator in (":?", "?") and values[name] != "":
            problems.append(f"{name}: required (no default), so docker/.env.example must leave it empty")
    return problems


def k6_versions(compose: str, requirements: str) -> list[str]:
    image = re.search(r"image:\s*grafana/k6:(\S+)", compose)
    pin = re.search(r"^k6==(\S+)", requirements, re.MULTILINE)
    if not image or not pin:
        return [f"k6: image {'found' if image else 'missing'} in compose, pin {'found' if pin else 'missing'} "
                f"in {REQUIREMENTS.relative_to(ROOT)}"]
    if image.group(1) != pin.group(1):
        return [f"k6: compose runs grafana/k6:{image.group(1)}, CI runs k6=={pin.group(1)}: make them one version"]
    return []


def main(argv: list[str]) -> int:
    files = [pathlib.Path(a) for a in argv[1:]] or COMPOSE_FILES
    used: dict[str, tuple[str | None, str | None]] = {}
    for path in files:
        for name, spec in interpolated(path.read_text(encoding="utf-8")).items():
            used.setdefault(name, spec)
    values, problems = documented(ENV_EXAMPLE.read_text(encoding="utf-8"))
    problems += compare(used, values)
    problems += k6_versions(files[0].read_text(encoding="utf-8"), REQUIREMENTS.read_text(encoding="utf-8"))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"docker/.env.example: the {len(used)} variables compose reads, each documented, defaults equal; "
          f"k6 is one version")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
