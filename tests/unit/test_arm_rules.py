"""azure/arm_rules.py: ARM's placement rules, over every template under azure/, and
each rule shown to fire on a template that breaks it. The role assignments are
the ones docs/deploy.md's table lists, scope included."""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys

import pytest

from conftest import ROOT

AZURE = ROOT / "azure"


def _load():
    spec = importlib.util.spec_from_file_location("stylempi_arm_rules", AZURE / "arm_rules.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


arm_rules = _load()


def test_every_template_under_azure_follows_the_rules():
    found = arm_rules.templates(AZURE)
    assert AZURE / "trigger.json" in found
    for path in found:
        assert arm_rules.problems(json.loads(path.read_text(encoding="utf-8"))) == [], path.name


def trigger() -> dict:
    return json.loads((AZURE / "trigger.json").read_text(encoding="utf-8"))


def only(problems: list[str], word: str) -> list[str]:
    return [p for p in problems if word in p]


def test_reference_or_list_in_variables_is_refused():
    """ARM allows reference() and list*() only in resource properties and outputs."""
    for call in ("reference(variables('storageId'), '2023-01-01').primaryEndpoints.blob",
                 "listKeys(variables('storageId'), '2023-01-01').keys[0].value"):
        template = trigger()
        template["variables"]["stateContainerUrl"] = f"[format('{{0}}x', {call})]"
        assert only(arm_rules.problems(template), "variable stateContainerUrl calls"), call


def test_a_dependency_on_no_resource_of_the_template_is_refused():
    template = trigger()
    [subscription] = [r for r in template["resources"]
                      if r["type"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions"]
    subscription["dependsOn"].append(
        "[resourceId('Microsoft.Storage/storageAccounts/blobServices/containers', "
        "parameters('storageAccountName'), 'default', parameters('containerName'))]")
    [problem] = only(arm_rules.problems(template), "depends on")
    assert "containerName" in problem


def test_unused_or_undeclared_parameters_are_refused():
    template = trigger()
    template["parameters"]["spare"] = {"type": "string", "defaultValue": ""}
    template["variables"]["workspaceId"] = template["variables"]["workspaceId"].replace(
        "workspaceName", "workspace")
    problems = arm_rules.problems(template)
    assert only(problems, "parameter spare is declared but never used")
    assert only(problems, "parameter workspace is used but not declared")


def test_a_role_assignment_without_scope_is_refused():
    template = trigger()
    for res in template["resources"]:
        if res["type"] == "Microsoft.Authorization/roleAssignments":
            del res["scope"]
            break
    assert only(arm_rules.problems(template), "has no scope")


def documented_roles() -> set[tuple[str, str, str]]:
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- trigger-roles -->(.*?)<!-- /trigger-roles -->", text, re.S)
    assert match, "docs/deploy.md needs the trigger's role table between its markers"
    rows = re.findall(r"^\s*\|\s*([^|`]+?)\s*\|\s*\*([^*]+)\*\s*\|\s*([^|]+?)\s*\|", match.group(1), re.M)
    return {(p, r, s) for p, r, s in rows if p != "principal"}


def test_role_assignments_are_scoped_as_the_docs_say():
    described = arm_rules.role_assignments(trigger())
    assert described == documented_roles()
    # Least privilege: no storage data role on the whole account.
    assert not [d for d in described if d[1].startswith("Storage") and d[2] == "storage account"]


def test_an_account_wide_reader_role_differs_from_the_docs():
    template = copy.deepcopy(trigger())
    template["variables"]["uploadsContainerScope"] = \
        "[format('Microsoft.Storage/storageAccounts/{0}', parameters('storageAccountName'), parameters('containerName'))]"
    assert arm_rules.role_assignments(template) != documented_roles()


def test_the_command_reports_each_problem_and_fails(tmp_path, capsys):
    broken = trigger()
    broken["variables"]["x"] = "[reference('a').b]"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    assert arm_rules.main([str(path)]) == 1
    assert "variable x calls reference()" in capsys.readouterr().out
    assert arm_rules.main([str(AZURE / "trigger.json")]) == 0


@pytest.mark.parametrize("name, segments", [
    ("plain/name", ("plain", "name")),
    ("[parameters('a')]", ("parameters('a')",)),
    ("[format('{0}/default/{1}', parameters('a'), variables('b'))]",
     ("parameters('a')", "default", "variables('b')")),
])
def test_resource_names_split_into_segments(name, segments):
    assert arm_rules.name_segments(name) == segments
