"""azure/: every Azure ML YAML loads and validates offline with azure-ai-ml's own
loaders; ``submit.py --dry-run`` builds the pipeline job and the batch deployment
without network; the upload trigger (ARM JSON) is consistent with the pipeline
and with the parameters that docs/deploy.md names.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

AZURE = ROOT / "azure"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# azure-ai-ml's marshmallow schemas warn by the hundred on import and load.
pytestmark = pytest.mark.filterwarnings("ignore")

ml = pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is not installed (pip install -e .[azureml])")
yaml = pytest.importorskip("yaml")


def azure_yamls() -> list[Path]:
    return sorted(p for p in AZURE.iterdir() if p.suffix in (".yml", ".yaml"))


def schema_of(path: Path) -> str:
    return str(yaml.safe_load(path.read_text(encoding="utf-8")).get("$schema", ""))


def load_any(path: Path):
    """The azure-ai-ml loader the file's $schema asks for (None for a conda file)."""
    schema = schema_of(path)
    if schema.endswith("/environment.schema.json"):
        return ml.load_environment(source=path)
    if schema.endswith(("/commandComponent.schema.json", "/pipelineComponent.schema.json")):
        return ml.load_component(source=path)
    if schema.endswith(("/pipelineJob.schema.json", "/commandJob.schema.json")):
        return ml.load_job(source=path)
    return None


def test_every_yaml_is_known_and_loads_offline():
    files = azure_yamls()
    assert {p.name for p in files} >= {"environment.yml", "conda.yml", "style_component.yml",
                                       "style_pipeline_component.yml", "pipeline_job.yml"}
    for path in files:
        entity = load_any(path)
        if entity is None:  # only conda files have no Azure ML schema
            conda = yaml.safe_load(path.read_text(encoding="utf-8"))
            assert "dependencies" in conda, f"{path.name}: neither an Azure ML YAML nor a conda file"
            continue
        validate = getattr(entity, "_validate", None)
        if validate is not None:  # jobs and components: the SDK's offline validation
            result = validate()
            assert result.passed, f"{path.name} does not validate:\n{result}"


def test_environment_is_conda_file_plus_an_open_mpi_image_without_cuda():
    """torch's wheel brings its CUDA runtime and the host its driver: the image needs
    Open MPI, not a CUDA toolkit."""
    env = ml.load_environment(source=AZURE / "environment.yml")
    assert env.image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04", env.image
    assert env.conda_file and "dependencies" in env.conda_file  # the loader inlines conda.yml


def test_torch_is_pinned_and_its_cuda_build_is_a_choice():
    from packaging.requirements import Requirement

    [torch] = [Requirement(str(e)) for dep in yaml.safe_load((AZURE / "conda.yml").read_text())
               ["dependencies"] if isinstance(dep, dict) for e in dep["pip"]
               if str(e).startswith("torch")]
    assert "2.13.0" in torch.specifier and "2.14.0" not in torch.specifier, torch
    submit = _import_submit()
    pips = {}
    for build in ("cu126", "cu130", "pypi"):
        plan = submit.build(submit.parse_args(["--dry-run", "--torch-cuda", build]))
        [pip] = [d["pip"] for d in plan.environment.conda_file["dependencies"] if isinstance(d, dict)]
        pips[build] = [e for e in pip if str(e).startswith("--")]
        assert plan.environment.version == submit.asset_versions(torch_cuda=build)["environment"]
    assert pips == {"cu126": ["--extra-index-url https://download.pytorch.org/whl/cu126"],
                    "cu130": ["--extra-index-url https://download.pytorch.org/whl/cu130"],
                    "pypi": []}
    assert len({submit.asset_versions(torch_cuda=b)["environment"] for b in pips}) == 3


def test_style_component_is_an_mpi_command():
    component = ml.load_component(source=AZURE / "style_component.yml")
    assert component.type == "command"
    assert component.distribution.type == "mpi"
    assert component.distribution.process_count_per_instance >= 1
    assert component.resources["instance_count"] >= 1
    assert {"video", "model"} <= set(component.inputs) and "styled" in component.outputs
    # The command runs the launcher from the uploaded code (the repository root).
    assert (AZURE / component.code).resolve() == ROOT
    assert "azure/run_stylempi.py --inputs-from-stdin" in component.command
    assert (ROOT / "azure" / "run_stylempi.py").is_file()


def test_pipeline_job_reads_and_writes_datastores():
    job = ml.load_job(source=AZURE / "pipeline_job.yml")
    assert job.type == "pipeline"
    assert job.inputs.video.path.startswith("azureml://datastores/")
    assert job.inputs.model.path.startswith("azureml://datastores/")
    assert job.outputs.styled.path.startswith("azureml://datastores/")
    node = job.jobs["style"]
    assert node.distribution.type == "mpi"
    assert node.resources.instance_count >= 1
    assert node.distribution.process_count_per_instance >= 1


def _no_network_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "AZUREML_", "MSI_", "IDENTITY_"))}
    # Any HTTP attempt would hit a closed port and fail.
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="",
               no_proxy="")
    return env


def test_submit_dry_run_builds_job_and_batch_deployment_offline():
    proc = subprocess.run(
        [sys.executable, str(AZURE / "submit.py"), "--dry-run", "--nodes", "2",
         "--gpus-per-node", "4", "--low-priority", "--compute", "a100-spot",
         "--video", "azureml://datastores/workspaceblobstore/paths/in/clip.mp4",
         "--model", "azureml://datastores/workspaceblobstore/paths/models/candy.pth",
         "--output", "azureml://datastores/workspaceblobstore/paths/out/clip/",
         "--work-dir", "https://acct.blob.core.windows.net/work/clip"],
        capture_output=True, text=True, timeout=120, env=_no_network_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["compute"] == {"name": "a100-spot", "size": plan["compute"]["size"],
                               "min_instances": 0, "max_instances": 4, "tier": "low_priority"}
    job = plan["pipeline_job"]
    assert job["type"] == "PipelineJob" and job["default_compute"] == "a100-spot"
    assert job["video"] == "azureml://datastores/workspaceblobstore/paths/in/clip.mp4"
    assert job["output"] == "azureml://datastores/workspaceblobstore/paths/out/clip/"
    assert (job["distribution"], job["instance_count"], job["process_count_per_instance"]) == ("mpi", 2, 4)
    assert job["work_dir"] == "https://acct.blob.core.windows.net/work/clip"
    assert plan["batch_deployment"]["type"] == "PipelineComponentBatchDeployment"
    assert plan["batch_deployment"]["settings"]["default_compute"] == "a100-spot"


def _import_submit():
    spec = importlib.util.spec_from_file_location("stylempi_azure_submit", AZURE / "submit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_submit_build_returns_sdk_objects():
    from azure.ai.ml.entities import (AmlCompute, BatchEndpoint, Environment, PipelineComponent,
                                      PipelineComponentBatchDeployment, PipelineJob)

    submit = _import_submit()
    plan = submit.build(submit.parse_args(["--dry-run", "--nodes", "3", "--gpus-per-node", "2",
                                           "--work-dir", "https://acct.blob.core.windows.net/w/x"]))
    assert isinstance(plan.environment, Environment)
    assert isinstance(plan.compute, AmlCompute) and plan.compute.min_instances == 0
    assert plan.compute.tier == "dedicated"
    assert isinstance(plan.pipeline_job, PipelineJob)
    assert isinstance(plan.endpoint, BatchEndpoint)
    assert isinstance(plan.deployment, PipelineComponentBatchDeployment)
    assert isinstance(plan.deployment.component, PipelineComponent)
    for node in (plan.pipeline_job.jobs["style"], plan.pipeline_component.jobs["style"]):
        assert node.distribution.process_count_per_instance == 2
    submit.validate(plan)


def test_submit_refuses_several_nodes_without_a_shared_work_dir():
    proc = subprocess.run([sys.executable, str(AZURE / "submit.py"), "--dry-run", "--nodes", "2"],
                          capture_output=True, text=True, timeout=120, env=_no_network_env(), cwd=ROOT)
    assert proc.returncode == 2 and "--work-dir" in proc.stderr, proc.stderr


def _copy_sources(dest: Path) -> Path:
    import shutil
    for top in ("azure", "stylempi"):
        shutil.copytree(ROOT / top, dest / top, ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "azure"


def test_asset_versions_follow_the_content(tmp_path: Path):
    """Environments and components are immutable per version: any change, a new version."""
    submit = _import_submit()
    here = _copy_sources(tmp_path)
    first = submit.asset_versions(here)
    assert first == submit.asset_versions(here) == submit.asset_versions(AZURE)  # stable
    assert len(set(first.values())) == 3

    conda = here / "conda.yml"
    conda.write_text(conda.read_text().replace("torch>=2.13,<2.14", "torch>=2.13,<2.15"))
    changed_env = submit.asset_versions(here)
    assert changed_env["environment"] != first["environment"]
    # The component names its environment's version: it changes too, and so on up.
    assert changed_env["component"] != first["component"]
    assert changed_env["pipeline_component"] != first["pipeline_component"]

    code = here.parent / "stylempi" / "job" / "plan.py"
    code.write_text(code.read_text() + "\n# changed\n")
    changed_code = submit.asset_versions(here)
    assert changed_code["environment"] == changed_env["environment"]
    assert changed_code["component"] != changed_env["component"]


def test_submit_registers_the_content_versions():
    submit = _import_submit()
    plan = submit.build(submit.parse_args(["--dry-run"]))
    versions = submit.asset_versions()
    assert plan.environment.version == versions["environment"]
    assert plan.pipeline_component.version == versions["pipeline_component"]
    for style in (plan.pipeline_job.jobs["style"].component,
                  plan.pipeline_component.jobs["style"].component):
        assert style.version == versions["component"]
        assert style.environment == f"azureml:stylempi-env:{versions['environment']}"
    assert plan.pipeline_job.inputs.device.result() == "cuda"


def test_endpoint_jobs_run_on_one_node_or_submit_refuses_in_one_line():
    """Each upload's work directory is in its own output folder, a blobfuse mount that
    nodes do not share: a multi-node endpoint deployment would lose chunks."""
    proc = subprocess.run([sys.executable, str(AZURE / "submit.py"), "--dry-run",
                           "--deploy-endpoint", "--nodes", "2", "--gpus-per-node", "4",
                           "--work-dir", "https://acct.blob.core.windows.net/w/x"],
                          capture_output=True, text=True, timeout=120, env=_no_network_env(), cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "--deploy-endpoint" in proc.stderr and "--nodes 1" in proc.stderr, proc.stderr
    submit = _import_submit()
    plan = submit.build(submit.parse_args(["--dry-run", "--deploy-endpoint", "--gpus-per-node", "4"]))
    node = plan.pipeline_component.jobs["style"]
    assert node.resources["instance_count"] == 1 and node.distribution.process_count_per_instance == 4


def test_cluster_nodes_get_no_public_ip_unless_asked():
    submit = _import_submit()
    assert submit.build(submit.parse_args(["--dry-run"])).compute.enable_node_public_ip is False
    plan = submit.build(submit.parse_args(["--dry-run", "--subnet", "/subscriptions/s/resourceGroups/"
                                           "r/providers/Microsoft.Network/virtualNetworks/v/subnets/n"]))
    assert plan.compute.network_settings.subnet.endswith("/subnets/n")
    assert submit.build(submit.parse_args(["--dry-run", "--node-public-ip"])).compute.enable_node_public_ip


def test_serverless_spot_replaces_the_low_priority_cluster_for_jobs():
    """Azure ML retired low-priority VMs (31 March 2026): jobs can run on serverless
    compute at the Spot tier instead of a cluster."""
    submit = _import_submit()
    plan = submit.build(submit.parse_args(["--dry-run", "--serverless-spot", "--nodes", "2",
                                           "--vm-size", "Standard_NC8as_T4_v3",
                                           "--work-dir", "https://acct.blob.core.windows.net/w/x"]))
    node = plan.pipeline_job.jobs["style"]
    assert plan.pipeline_job.settings.default_compute == "serverless"
    assert node.queue_settings.job_tier.lower() == "spot"
    assert (node.resources.instance_count, node.resources.instance_type) == (2, "Standard_NC8as_T4_v3")
    submit.validate(plan)
    proc = subprocess.run([sys.executable, str(AZURE / "submit.py"), "--dry-run", "--serverless-spot",
                           "--low-priority"], capture_output=True, text=True, timeout=120,
                          env=_no_network_env(), cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


def test_submit_refuses_to_run_without_workspace():
    proc = subprocess.run([sys.executable, str(AZURE / "submit.py")], capture_output=True,
                          text=True, timeout=120, env=_no_network_env(), cwd=ROOT)
    assert proc.returncode == 2 and "--subscription" in proc.stderr, proc.stderr


def test_rank_launcher_binds_one_gpu_per_local_rank(monkeypatch):
    spec = importlib.util.spec_from_file_location("stylempi_azure_run", AZURE / "run_stylempi.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    for local, expected in (("0", "4"), ("1", "6"), ("2", "4")):
        env = {"CUDA_VISIBLE_DEVICES": "4,6"}
        monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", local)
        run.bind_gpu(env)
        assert env["CUDA_VISIBLE_DEVICES"] == expected
    env = {"CUDA_VISIBLE_DEVICES": "5"}
    run.bind_gpu(env)
    assert env["CUDA_VISIBLE_DEVICES"] == "5"


def test_rank_launcher_counts_the_nodes_gpus_only_outside_slurm(monkeypatch):
    """Unset CUDA_VISIBLE_DEVICES: on Azure ML, every GPU of the node; inside a Slurm job,
    no GPU was requested (the node's GPUs may be other jobs')."""
    spec = importlib.util.spec_from_file_location("stylempi_azure_run", AZURE / "run_stylempi.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.setattr(run, "_count_nvidia_devices", lambda: 4)
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    env: dict = {}
    run.bind_gpu(env)
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    env = {"SLURM_JOB_ID": "4242"}
    run.bind_gpu(env)
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_rank_launcher_reads_the_components_input_lines():
    spec = importlib.util.spec_from_file_location("stylempi_azure_run", AZURE / "run_stylempi.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    lines = ["video=/mnt/in/a'b; touch X;'.mp4", "model=/m.pth", "styled=/out", "output_name=a b.mp4",
             "precision=fp32", "device=cpu", "", "crf=20", ""]
    assert run.run_args(lines) == ["run", "/mnt/in/a'b; touch X;'.mp4", "/out/a b.mp4",
                                   "--model", "/m.pth", "--precision", "fp32", "--device", "cpu",
                                   "--crf", "20"]
    others = [line for line in lines if not line.startswith("output_name=")]
    for bad in (others + ["output_name=../escape.mp4"], others + ["output_name=.."],
                lines + ["junk"], lines + ["video=/x"], others):
        with pytest.raises(run.InputError):
            run.run_args(bad)


# --- the upload trigger ------------------------------------------------------------

def trigger() -> dict:
    return json.loads((AZURE / "trigger.json").read_text(encoding="utf-8"))


def documented_trigger_parameters() -> set[str]:
    """Names in docs/deploy.md's trigger parameter table (between its markers)."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- trigger-parameters -->(.*?)<!-- /trigger-parameters -->", text, re.S)
    assert match, "docs/deploy.md needs the trigger parameter table between its markers"
    return set(re.findall(r"^\|\s*`([A-Za-z][A-Za-z0-9]*)`\s*\|", match.group(1), re.M))


def resources_of(template: dict, type_: str) -> list[dict]:
    return [r for r in template["resources"] if r["type"] == type_]


def test_trigger_template_is_valid_arm_json():
    template = trigger()
    assert template["$schema"].startswith("https://schema.management.azure.com/schemas/")
    assert template["$schema"].endswith("/deploymentTemplate.json#")
    assert template["contentVersion"]
    for name, param in template["parameters"].items():
        assert param["type"] in ("string", "int", "bool", "object", "array", "securestring"), name
    # Every parameter is used, every used parameter is declared.
    text = json.dumps(template["resources"]) + json.dumps(template.get("variables", {})) \
        + json.dumps(template.get("outputs", {}))
    used = set(re.findall(r"parameters\('([A-Za-z0-9]+)'\)", text))
    workflow_params = set(resources_of(template, "Microsoft.Logic/workflows")[0]
                          ["properties"]["definition"]["parameters"])
    assert used - workflow_params <= set(template["parameters"])
    assert set(template["parameters"]) <= used, "unused template parameters"


def test_trigger_parameters_are_the_documented_ones():
    assert set(trigger()["parameters"]) == documented_trigger_parameters()


def test_trigger_wires_blob_created_to_a_logic_app_that_invokes_the_endpoint():
    template = trigger()
    [subscription] = resources_of(template, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    props = subscription["properties"]
    assert props["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert "listCallbackUrl" in props["destination"]["properties"]["endpointUrl"]
    [topic] = resources_of(template, "Microsoft.EventGrid/systemTopics")
    assert topic["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"

    [workflow] = resources_of(template, "Microsoft.Logic/workflows")
    definition = workflow["properties"]["definition"]
    assert definition["triggers"]["manual"]["type"] == "Request"
    invoke = _find_action(definition["actions"], "Invoke_batch_endpoint")
    assert invoke["type"] == "Http" and invoke["inputs"]["method"] == "POST"
    assert invoke["inputs"]["authentication"]["type"] == "ManagedServiceIdentity"
    assert "scoringUri" in invoke["inputs"]["uri"]
    body = invoke["inputs"]["body"]["properties"]
    # The job's inputs and outputs are those of the deployed pipeline component.
    component = ml.load_component(source=AZURE / "style_pipeline_component.yml")
    assert set(body["InputData"]) <= set(component.inputs)
    required = {n for n, i in component.inputs.items()
                if getattr(i, "default", None) is None and not getattr(i, "optional", False)}
    assert required <= set(body["InputData"])
    assert set(body["OutputData"]) <= set(component.outputs)


def _find_action(actions: dict, name: str) -> dict:
    """The action called NAME anywhere in a workflow's nested actions."""
    for key, action in actions.items():
        if key == name:
            return action
        for nested in (action.get("actions", {}), action.get("else", {}).get("actions", {})):
            found = _find_action(nested, name) if nested else None
            if found:
                return found
    return {}


def _scope_of(actions: dict, name: str) -> dict:
    """The sibling actions that hold NAME (runAfter links only siblings)."""
    if name in actions:
        return actions
    for action in actions.values():
        for nested in (action.get("actions", {}), action.get("else", {}).get("actions", {})):
            found = _scope_of(nested, name) if nested else None
            if found:
                return found
    return {}


def _runs_after(actions: dict, name: str) -> set[str]:
    """Every sibling action NAME waits for, transitively."""
    seen: set[str] = set()
    todo = list(actions[name].get("runAfter", {}))
    while todo:
        prior = todo.pop()
        if prior not in seen:
            seen.add(prior)
            todo.extend(actions[prior].get("runAfter", {}))
    return seen


def _workflow_actions(template: dict) -> dict:
    return resources_of(template, "Microsoft.Logic/workflows")[0]["properties"]["definition"]["actions"]


READER_ROLE = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"  # Storage Blob Data Reader


def test_trigger_lets_the_compute_cluster_read_the_upload():
    """Batch jobs mount a storage URL with the compute cluster's identity, not the invoker's."""
    template = trigger()
    compute = template["variables"]["computeId"]
    assert "workspaces/computes" in compute and "computeName" in compute
    cluster = [ra for ra in resources_of(template, "Microsoft.Authorization/roleAssignments")
               if "variables('computeId')" in ra["properties"]["principalId"]
               and ra["properties"]["principalId"].endswith(".identity.principalId]")]
    assert len(cluster) == 1, "no role assignment for the compute cluster's identity"
    role_var = re.search(r"variables\('(\w+)'\)", cluster[0]["properties"]["roleDefinitionId"]).group(1)
    assert READER_ROLE in template["variables"][role_var]
    # Least privilege: the uploads container, not the whole account.
    scope = re.fullmatch(r"\[variables\('(\w+)'\)\]", cluster[0]["scope"]).group(1)
    assert template["variables"][scope].startswith(
        "[format('Microsoft.Storage/storageAccounts/{0}/blobServices/default/containers/{1}'")
    assert "parameters('containerName')" in template["variables"][scope]


def test_trigger_answers_event_grid_before_invoking():
    """Event Grid redelivers what is not answered within 30 s: the Response must not wait
    for the invoke, nor for anything that waits for it."""
    actions = _workflow_actions(trigger())
    scope = _scope_of(actions, "Accepted")
    assert scope["Accepted"]["type"] == "Response" and not scope["Accepted"].get("runAfter")
    assert "Accepted" in _runs_after(scope, "For_each_upload")
    loop = _scope_of(actions, "Invoke_batch_endpoint")
    assert not [n for n, a in loop.items() if a.get("type") == "Response"], \
        "a Response inside the loop would wait for invokes"


def test_trigger_is_idempotent_per_upload():
    """A redelivered event (same blob URL and ETag) finds its claim and invokes nothing
    (run for real in tests/e2e/test_trigger_workflow.py)."""
    actions = _workflow_actions(trigger())
    upload = _scope_of(actions, "Claim_upload")
    claim = upload["Claim_upload"]
    assert claim["inputs"]["method"] == "PUT"
    assert claim["inputs"]["headers"]["If-None-Match"] == "*"
    assert "['url']" in claim["inputs"]["uri"] and "['eTag']" in claim["inputs"]["uri"]
    # The jobs start only after the claim succeeded.
    assert "Claim_upload" in _runs_after(upload, "Run_until_done")
    assert all(upload[n]["runAfter"] == {p: ["Succeeded"]} for n, p in
               (("Reset_job", "Claim_upload"), ("Reset_status", "Reset_job"),
                ("Reset_attempts", "Reset_status"), ("Run_until_done", "Reset_attempts")))
    invoke = _find_action(actions, "Invoke_batch_endpoint")
    assert invoke["retryPolicy"]["count"] >= 1


def test_trigger_dead_letters_what_it_cannot_deliver():
    template = trigger()
    [subscription] = resources_of(template, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    dead = subscription["properties"]["deadLetterDestination"]
    assert dead["endpointType"] == "StorageBlob" and dead["properties"]["blobContainerName"]
    loop = _scope_of(_workflow_actions(template), "Invoke_batch_endpoint")
    failed = [a for a in loop.values()
              if {"Failed", "TimedOut"} <= set(a.get("runAfter", {}).get("Invoke_batch_endpoint", []))]
    assert failed and "/dead-letters/" in failed[0]["inputs"]["uri"]


def test_trigger_accepts_an_existing_system_topic():
    """A storage account has at most one Event Grid system topic."""
    template = trigger()
    [topic] = resources_of(template, "Microsoft.EventGrid/systemTopics")
    assert "existingSystemTopicName" in topic["condition"]
    assert "existingSystemTopicName" in template["variables"]["systemTopicName"]


def test_trigger_dead_letters_a_failed_claim():
    """A claim that fails for another reason than an existing claim (409/412), e.g. a 403
    while role assignments propagate, is dead-lettered: Event Grid already has its 202."""
    upload = _scope_of(_workflow_actions(trigger()), "Claim_upload")
    check = upload["Claim_failed"]
    assert set(check["runAfter"]["Claim_upload"]) == {"Failed", "TimedOut"}
    codes = json.dumps(check["expression"])
    assert "409" in codes and "412" in codes
    dead = check["actions"]["Dead_letter_failed_claim"]
    assert dead["inputs"]["method"] == "PUT" and "/dead-letters/failed-claims/" in dead["inputs"]["uri"]


def test_event_grid_sends_only_completed_blobs():
    """Azure Storage, "Blob storage events": filter data.api on the APIs that complete a
    blob; on hierarchical namespace accounts CreateFile announces an empty one first."""
    template = trigger()
    [subscription] = resources_of(template, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    [api_filter] = [f for f in subscription["properties"]["filter"]["advancedFilters"]
                    if f["key"] == "data.api"]
    assert api_filter["operatorType"] == "StringIn"
    values = re.fullmatch(r"\[variables\('(\w+)'\)\]", api_filter["values"]).group(1)
    assert sorted(template["variables"][values]) == ["CopyBlob", "FlushWithClose", "PutBlob",
                                                     "PutBlockList"]


def test_trigger_resubmits_failed_jobs_a_bounded_number_of_times():
    template = trigger()
    loop = _find_action(_workflow_actions(template), "Run_until_done")
    assert loop["type"] == "Until" and "GaveUp" in loop["expression"]
    attempts = _find_action(_workflow_actions(template), "Attempts_left")
    assert "maxJobAttempts" in json.dumps(attempts["expression"])
    assert template["parameters"]["maxJobAttempts"]["type"] == "int"


def test_the_video_is_downloaded_not_mounted():
    """Every rank seeks into the video (its chunks' keyframes): download, as Azure ML
    advises for random reads, not the default read-only mount."""
    for node in (ml.load_job(source=AZURE / "pipeline_job.yml").jobs["style"],
                 ml.load_component(source=AZURE / "style_pipeline_component.yml").jobs["style"]):
        assert node.inputs.video.mode == "download"
