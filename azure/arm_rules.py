#!/usr/bin/env python
"""Check ARM templates for the placement rules that Azure only enforces at deploy time.

    python azure/arm_rules.py azure/*.json     # one line per problem; exit 1 if any

What it checks (Azure Resource Manager, "Template functions - resource":
``reference`` and the ``list*`` functions are valid only in a resource's
properties and in outputs; "Define the order for deploying resources":
``dependsOn`` names resources of the same template):

* no ``reference(`` or ``list…(`` call in ``variables`` or a parameter's default;
* every ``dependsOn`` entry names a resource declared in the template;
* every declared parameter and variable is used, and every one used is declared;
* every role assignment carries an explicit ``scope`` (never the whole resource group).

:func:`role_assignments` describes each role assignment as (principal, role, scope)
in words, so that a test can hold them to the table in docs/deploy.md.
Pure: it reads JSON documents and returns findings, without Azure or network.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

#: Built-in role definition ids (Azure RBAC, "Azure built-in roles") and their names.
BUILTIN_ROLES = {
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
}

RUNTIME_CALL = re.compile(r"\b(reference|list[A-Za-z]*)\s*\(")
PARAM = re.compile(r"\bparameters\('([^']+)'\)")
VARIABLE = re.compile(r"\bvariables\('([^']+)'\)")


def strings(node: Any) -> Iterator[str]:
    """Every string value under NODE (keys excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def arm_expressions(node: Any) -> Iterator[str]:
    """ARM template expressions under NODE: strings in [brackets] ("[[" escapes one).

    Logic App workflow expressions ("@...") are not ARM's, and are left out.
    """
    for text in strings(node):
        if text.startswith("[") and not text.startswith("[[") and text.endswith("]"):
            yield text[1:-1]


# --- a small parser of ARM expressions, enough to compare resource names ---------

TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+)|(?P<name>[A-Za-z_][\w.]*)|(?P<sym>[(),.\[\]]))")


def parse(expression: str) -> Any:
    """('call', name, [args]) / ('str', text) / ('num', n) / ('raw', text) for the rest."""
    tokens = [m for m in TOKEN.finditer(expression)]
    pos = 0

    def value() -> Any:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(expression)
        tok = tokens[pos]
        pos += 1
        if tok.group("str") is not None:
            return ("str", tok.group("str")[1:-1].replace("''", "'"))
        if tok.group("num") is not None:
            return ("num", int(tok.group("num")))
        if tok.group("name") is not None and pos < len(tokens) and tokens[pos].group("sym") == "(":
            pos += 1
            args = []
            while tokens[pos].group("sym") != ")":
                args.append(value())
                if tokens[pos].group("sym") == ",":
                    pos += 1
            pos += 1
            node = ("call", tok.group("name"), args)
            # property access (.x) and indexing ([...]) after a call: keep it as text
            while pos < len(tokens) and tokens[pos].group("sym") in (".", "["):
                start = tokens[pos].start()
                depth = 0
                while pos < len(tokens):
                    sym = tokens[pos].group("sym")
                    depth += sym == "["
                    depth -= sym == "]"
                    pos += 1
                    if depth == 0 and pos < len(tokens) and tokens[pos].group("sym") in (",", ")"):
                        break
                node = ("raw", canonical(node) + expression[start:tokens[pos - 1].end()].strip())
            return node
        return ("raw", tok.group(0).strip())

    return value()


def canonical(node: Any) -> str:
    kind = node[0]
    if kind == "str":
        return node[1]
    if kind == "num":
        return str(node[1])
    if kind == "raw":
        return node[1]
    return f"{node[1]}(" + ",".join(canonical(a) if a[0] != "str" else repr(a[1]) for a in node[2]) + ")"


def name_segments(name: str) -> tuple[str, ...]:
    """A resource name ("a/b", "[format('{0}/x', parameters('p'))]") as its segments."""
    if not (name.startswith("[") and not name.startswith("[[")):
        return tuple(name.split("/"))
    node = parse(name[1:-1])
    if node[0] == "call" and node[1] == "format" and node[2] and node[2][0][0] == "str":
        pattern, args = node[2][0][1], node[2][1:]
        segments = []
        for piece in pattern.split("/"):
            segments.append(re.sub(r"\{(\d+)\}", lambda m: "<" + canonical(args[int(m.group(1))]) + ">",
                                   piece))
        return tuple(s[1:-1] if re.fullmatch(r"<[^<>]*>", s) else s for s in segments)
    return (canonical(node),)


def dependency_target(entry: str) -> tuple[str, tuple[str, ...]] | None:
    """(type, name segments) of a dependsOn entry, or None when it is a bare name."""
    if entry.startswith("[") and not entry.startswith("[["):
        node = parse(entry[1:-1])
        if node[0] == "call" and node[1] == "resourceId" and node[2]:
            args = node[2]
            # resourceId([subscriptionId], [resourceGroup], type, name1, name2, ...): the
            # type is the first argument with a "/" in it.
            for i, arg in enumerate(args):
                if arg[0] == "str" and "/" in arg[1]:
                    return arg[1].lower(), tuple(canonical(a) for a in args[i + 1:])
    return None


def resources(template: dict) -> list[dict]:
    found = []
    for res in template.get("resources", []):
        found.append(res)
        for child in res.get("resources", []):
            child = dict(child)
            child["type"] = f"{res['type']}/{child['type']}"
            child["name"] = f"{res['name']}/{child['name']}"
            found.append(child)
    return found


def problems(template: dict) -> list[str]:
    """Every placement-rule violation in TEMPLATE, one sentence each."""
    found: list[str] = []
    for name, value in template.get("variables", {}).items():
        for text in strings(value):
            call = RUNTIME_CALL.search(text)
            if call:
                found.append(f"variable {name} calls {call.group(1)}(), which ARM allows only in "
                             "resource properties and outputs")
    for name, param in template.get("parameters", {}).items():
        for text in strings(param.get("defaultValue", "")):
            call = RUNTIME_CALL.search(text)
            if call:
                found.append(f"parameter {name}'s default calls {call.group(1)}()")

    declared = {(r["type"].lower(), name_segments(r["name"])) for r in resources(template)}
    names = {r["name"] for r in resources(template)}
    for res in resources(template):
        for entry in res.get("dependsOn", []):
            target = dependency_target(entry)
            ok = target in declared if target else entry in names
            if not ok:
                found.append(f"{res['type']} {res['name']} depends on {entry}, "
                             "which is no resource of this template")

    body = {k: v for k, v in template.items() if k != "parameters"}
    used_params: set[str] = set()
    used_vars: set[str] = set()
    sections = [body, [p.get("defaultValue") for p in template.get("parameters", {}).values()]]
    for section in sections:
        for expression in arm_expressions(section):
            used_params.update(PARAM.findall(expression))
            used_vars.update(VARIABLE.findall(expression))
    params = set(template.get("parameters", {}))
    variables = set(template.get("variables", {}))
    found += [f"parameter {p} is declared but never used" for p in sorted(params - used_params)]
    found += [f"parameter {p} is used but not declared" for p in sorted(used_params - params)]
    found += [f"variable {v} is declared but never used" for v in sorted(variables - used_vars)]
    found += [f"variable {v} is used but not declared" for v in sorted(used_vars - variables)]

    for res in resources(template):
        if res["type"].lower() == "microsoft.authorization/roleassignments" and not res.get("scope"):
            found.append(f"role assignment {res['name']} has no scope: it would apply to the "
                         "whole resource group")
    return found


def _resolve(text: str, template: dict) -> str:
    """TEXT with variables('x') replaced by x's own value (one level is enough here)."""
    def value(match: re.Match) -> str:
        inner = template.get("variables", {}).get(match.group(1), "")
        return inner[1:-1] if isinstance(inner, str) and inner.startswith("[") else str(inner)
    return VARIABLE.sub(value, text)


def role_assignments(template: dict) -> set[tuple[str, str, str]]:
    """{(principal, role, scope)} in words, e.g. ("Logic App", "AzureML Data Scientist",
    "workspace"); "?" where a part is not recognised."""
    described = set()
    for res in resources(template):
        if res["type"].lower() != "microsoft.authorization/roleassignments":
            continue
        props = res.get("properties", {})
        principal_text = _resolve(props.get("principalId", ""), template)
        principal = ("Logic App" if "Microsoft.Logic/workflows" in principal_text
                     else "compute cluster" if "workspaces/computes" in principal_text else "?")
        role_text = _resolve(props.get("roleDefinitionId", ""), template)
        role = next((n for guid, n in BUILTIN_ROLES.items() if guid in role_text), "?")
        scope_text = _resolve(res.get("scope", ""), template)
        if "containers/" in scope_text:
            scope = ("state container" if "stateContainerName" in scope_text
                     else "uploads container" if "'containerName'" in scope_text else "?")
        elif "Microsoft.Storage/storageAccounts/" in scope_text:
            scope = "storage account"
        elif "Microsoft.MachineLearningServices/workspaces/" in scope_text:
            scope = "workspace"
        else:
            scope = "resource group" if not scope_text else "?"
        described.add((principal, role, scope))
    return described


def templates(folder: Path) -> list[Path]:
    """The ARM templates in FOLDER (JSON files with a deploymentTemplate $schema)."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            schema = json.loads(path.read_text(encoding="utf-8")).get("$schema", "")
        except (ValueError, AttributeError):
            continue
        if "deploymentTemplate.json" in str(schema):
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or templates(Path(__file__).resolve().parent)
    bad = 0
    for path in paths:
        for problem in problems(json.loads(path.read_text(encoding="utf-8"))):
            print(f"{path}: {problem}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
