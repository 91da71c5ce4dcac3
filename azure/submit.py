#!/usr/bin/env python
"""Run stylempi on Azure ML (SDK v2): compute cluster, pipeline job, batch endpoint.

Submit one video (the cluster is created if needed, min 0 nodes so it costs
nothing when idle)::

    python azure/submit.py --subscription SUB --resource-group RG --workspace WS \\
        --video azureml://datastores/workspaceblobstore/paths/stylempi/input/clip.mp4 \\
        --model azureml://datastores/workspaceblobstore/paths/stylempi/models/candy.pth \\
        --output azureml://datastores/workspaceblobstore/paths/stylempi/output/clip/ \\
        --nodes 2 --gpus-per-node 4 --vm-size Standard_NC96ads_A100_v4 \\
        --work-dir https://ACCOUNT.blob.core.windows.net/CONTAINER/stylempi-work/clip \\
        [--low-priority | --serverless-spot]

Also deploy the pipeline as a batch endpoint (what azure/trigger.json invokes on
every upload): add ``--deploy-endpoint [--endpoint-name NAME]``; ``--no-submit``
deploys without running a job. ``--dry-run`` builds every object (environment,
compute, pipeline job, batch endpoint and deployment), prints them, and stops:
no credentials, no network.

Subscription, resource group and workspace may also come from
AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ENVIRONMENT_YML = HERE / "environment.yml"
COMPONENT_YML = HERE / "style_component.yml"
PIPELINE_COMPONENT_YML = HERE / "style_pipeline_component.yml"
PIPELINE_JOB_YML = HERE / "pipeline_job.yml"
STYLE_NODE = "style"
#: torch builds (docs/deploy.md, torch builds and GPUs): the pip index each comes from.
TORCH_INDEXES = {"cu126": "https://download.pytorch.org/whl/cu126",
                 "cu130": "https://download.pytorch.org/whl/cu130",
                 "pypi": None}
#: What the component uploads and runs: its version changes when any of it does.
CODE_DIRS = ("stylempi", "azure")


@dataclass
class Plan:
    """Everything submit.py would create or submit."""

    environment: Any
    compute: Any
    pipeline_job: Any
    pipeline_component: Any
    endpoint: Any
    deployment: Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    ws = p.add_argument_group("workspace")
    ws.add_argument("--subscription", default=os.environ.get("AZURE_SUBSCRIPTION_ID"))
    ws.add_argument("--resource-group", default=os.environ.get("AZURE_RESOURCE_GROUP"))
    ws.add_argument("--workspace", default=os.environ.get("AZUREML_WORKSPACE"))

    cl = p.add_argument_group("compute cluster")
    cl.add_argument("--compute", default="gpu-cluster", help="cluster name (default %(default)s)")
    cl.add_argument("--vm-size", default="Standard_NC24ads_A100_v4",
                    help="VM size of the cluster's nodes (default %(default)s)")
    cl.add_argument("--max-nodes", type=int, default=4,
                    help="cluster's maximum node count (minimum is always 0)")
    cl.add_argument("--low-priority", action="store_true",
                    help="preemptible nodes: Azure ML retired low-priority VMs on 31 March 2026 "
                         "and allocates such clusters' nodes as Spot VMs (Spot price, may be "
                         "evicted); a rerun resumes")
    cl.add_argument("--serverless-spot", action="store_true",
                    help="run the pipeline job on serverless compute at the Spot tier "
                         "(--vm-size, --nodes) instead of the cluster; batch endpoints still "
                         "need the cluster")
    cl.add_argument("--node-public-ip", action="store_true",
                    help="give the cluster's nodes public IPs (default: none, which needs a "
                         "workspace with a managed virtual network, or --subnet)")
    cl.add_argument("--subnet", help="subnet resource id for the cluster's nodes (a VNet of "
                                     "your own; not needed with a managed virtual network)")
    cl.add_argument("--torch-cuda", default="cu126", choices=sorted(TORCH_INDEXES),
                    help="which torch build the environment installs: cu126 (default: driver "
                         ">= 525, V100 to H100), cu130 (driver >= 580, no V100), or pypi "
                         "(PyPI's default wheel)")
    cl.add_argument("--idle-seconds", type=int, default=300,
                    help="idle time before the cluster scales down (default %(default)s)")

    job = p.add_argument_group("job")
    job.add_argument("--video", help="input video: datastore URI (azureml://datastores/...) "
                                     "or https URL")
    job.add_argument("--model", help="style checkpoint: datastore URI or https URL")
    job.add_argument("--output", help="output folder: datastore URI (azureml://datastores/.../paths/...)")
    job.add_argument("--output-name", default="styled.mp4",
                     help="file name of the result in the output folder (default %(default)s)")
    job.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    job.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"],
                     help="cuda (default: a clear error rather than a silent CPU run when the "
                          "nodes have no usable GPU), or cpu for CPU VM sizes")
    job.add_argument("--work-dir", help="where finished chunks are kept; with --nodes > 1 a Blob "
                                        "URL (https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH) "
                                        "that the cluster's managed identity may write")
    job.add_argument("--nodes", type=int, default=1, help="MPI nodes (instance_count)")
    job.add_argument("--gpus-per-node", type=int, default=1,
                     help="ranks per node, one per GPU (process_count_per_instance)")
    job.add_argument("--experiment", default="stylempi")
    job.add_argument("--stream", action="store_true", help="follow the job's log until it ends")
    job.add_argument("--no-submit", action="store_true", help="do not submit a pipeline job")

    ep = p.add_argument_group("batch endpoint")
    ep.add_argument("--deploy-endpoint", action="store_true",
                    help="deploy the pipeline component as a batch endpoint deployment")
    ep.add_argument("--endpoint-name", default="stylempi-batch",
                    help="batch endpoint name, unique in the region (default %(default)s)")
    ep.add_argument("--deployment-name", default="stylempi")

    p.add_argument("--dry-run", action="store_true",
                   help="build and print every object, touch nothing (no network)")
    args = p.parse_args(argv)
    if args.deploy_endpoint and args.nodes > 1:
        # Each upload's job keeps its work directory in its own output folder, a blobfuse
        # mount that nodes do not share promptly; one node per upload is what is safe.
        refuse("--deploy-endpoint runs each upload on one node: use --nodes 1 and more "
               "--gpus-per-node (the output folder's mount is not shared between nodes)")
    if args.serverless_spot and args.low_priority:
        refuse("--serverless-spot and --low-priority exclude each other")
    if args.nodes < 1 or args.gpus_per_node < 1 or args.max_nodes < args.nodes:
        p.error("need --nodes >= 1, --gpus-per-node >= 1 and --max-nodes >= --nodes")
    if args.nodes > 1 and not args.work_dir:
        # The output folder is a blobfuse mount per node, which does not show one
        # node's new files to another promptly: rank 0 would not see the chunks.
        p.error("--nodes > 1 needs --work-dir https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH "
                "(a work directory every node reads and writes through the Blob API)")
    if not args.dry_run:
        missing = [name for name in ("subscription", "resource_group", "workspace")
                   if not getattr(args, name)]
        if missing:
            p.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
        if not args.no_submit and not (args.video and args.model and args.output):
            p.error("a job needs --video, --model and --output (or pass --no-submit)")
    return args


def refuse(message: str) -> None:
    """One line on stderr and exit 2, like argparse's errors but without the usage."""
    print(f"submit.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def content_version(*parts: bytes) -> str:
    """An asset version derived from content: the same content, the same version.

    Azure ML environments and components are immutable per name and version, so a
    fixed version would make a changed definition fail to register or be ignored.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def code_bytes(root: Path) -> bytes:
    """The component's code (every file under CODE_DIRS), names and contents, in a stable order."""
    chunks = []
    for top in CODE_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                chunks.append(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return b"\0".join(chunks)


def asset_versions(here: Path = HERE, torch_cuda: str = "cu126") -> dict[str, str]:
    """Versions of the environment, the style component and the pipeline component."""
    environment = content_version((here / "environment.yml").read_bytes(),
                                  (here / "conda.yml").read_bytes(), torch_cuda.encode())
    component = content_version(environment.encode(), (here / "style_component.yml").read_bytes(),
                                code_bytes(here.parent))
    pipeline = content_version(component.encode(),
                               (here / "style_pipeline_component.yml").read_bytes())
    return {"environment": environment, "component": component, "pipeline_component": pipeline}


def use_torch_build(conda: dict, torch_cuda: str) -> None:
    """Make CONDA's pip section install the TORCH_CUDA build of the pinned torch.

    The extra index serves the same version with a local label (2.13.0+cu126), which
    pip ranks above PyPI's plain 2.13.0; the other packages still come from PyPI.
    """
    for dep in conda["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            dep["pip"] = [e for e in dep["pip"] if not str(e).startswith("--extra-index-url")]
            if TORCH_INDEXES[torch_cuda]:
                dep["pip"].insert(0, f"--extra-index-url {TORCH_INDEXES[torch_cuda]}")


def _pin_versions(style_component: Any, environment: Any, versions: dict[str, str]) -> None:
    style_component.version = versions["component"]
    style_component.environment = f"azureml:{environment.name}:{environment.version}"


def _size_style_node(node: Any, args: argparse.Namespace) -> None:
    node.resources = {"instance_count": args.nodes}
    node.distribution.process_count_per_instance = args.gpus_per_node


def build(args: argparse.Namespace) -> Plan:
    """Build every Azure ML object offline (no client, no network)."""
    from azure.ai.ml import Input, Output, load_component, load_environment, load_job
    from azure.ai.ml.entities import (AmlCompute, BatchEndpoint, IdentityConfiguration,
                                      JobResourceConfiguration, NetworkSettings,
                                      PipelineComponentBatchDeployment, QueueSettings)

    versions = asset_versions(torch_cuda=args.torch_cuda)
    environment = load_environment(source=ENVIRONMENT_YML)
    environment.version = versions["environment"]
    use_torch_build(environment.conda_file, args.torch_cuda)
    compute = AmlCompute(
        name=args.compute,
        size=args.vm_size,
        min_instances=0,
        max_instances=args.max_nodes,
        idle_time_before_scale_down=args.idle_seconds,
        tier="low_priority" if args.low_priority else "dedicated",
        # Its identity reads/writes Blob URLs given to stylempi (e.g. a remote --work-dir).
        identity=IdentityConfiguration(type="system_assigned"),
        # No public IPs unless asked: nothing needs to reach the nodes from the internet.
        enable_node_public_ip=args.node_public_ip,
        network_settings=NetworkSettings(subnet=args.subnet) if args.subnet else None,
    )

    job = load_job(source=PIPELINE_JOB_YML)
    if args.video:
        job.inputs.video = Input(type="uri_file", path=args.video)
    if args.model:
        job.inputs.model = Input(type="uri_file", path=args.model)
    if args.output:
        job.outputs.styled = Output(type="uri_folder", mode="rw_mount", path=args.output)
    job.inputs.output_name = args.output_name
    if args.work_dir:
        job.jobs[STYLE_NODE].inputs.work_dir = args.work_dir
    job.inputs.precision = args.precision
    job.inputs.device = args.device
    job.settings.default_compute = args.compute
    job.experiment_name = args.experiment
    _size_style_node(job.jobs[STYLE_NODE], args)
    if args.serverless_spot:
        # Azure ML's replacement for low-priority clusters in jobs: serverless compute,
        # Spot tier (the job names its VM size; no cluster to keep).
        job.settings.default_compute = "serverless"
        job.jobs[STYLE_NODE].resources = JobResourceConfiguration(
            instance_count=args.nodes, instance_type=args.vm_size)
        job.jobs[STYLE_NODE].queue_settings = QueueSettings(job_tier="spot")
    _pin_versions(job.jobs[STYLE_NODE].component, environment, versions)

    pipeline_component = load_component(source=PIPELINE_COMPONENT_YML)
    pipeline_component.version = versions["pipeline_component"]
    _size_style_node(pipeline_component.jobs[STYLE_NODE], args)
    _pin_versions(pipeline_component.jobs[STYLE_NODE].component, environment, versions)
    endpoint = BatchEndpoint(
        name=args.endpoint_name,
        description="stylempi: stylize an uploaded video (pipeline component deployment)",
    )
    deployment = PipelineComponentBatchDeployment(
        name=args.deployment_name,
        endpoint_name=args.endpoint_name,
        component=pipeline_component,
        settings={"default_compute": args.compute, "continue_on_step_failure": "False"},
        description="stylempi over MPI on the compute cluster",
    )
    return Plan(environment, compute, job, pipeline_component, endpoint, deployment)


def validate(plan: Plan) -> None:
    """Offline schema/graph validation of the job and the component."""
    for name, obj in (("pipeline job", plan.pipeline_job),
                      ("pipeline component", plan.pipeline_component)):
        result = obj._validate()  # the SDK's own offline validation
        if not result.passed:
            raise SystemExit(f"{name} does not validate:\n{result}")


def describe(plan: Plan, args: argparse.Namespace) -> dict:
    style = plan.pipeline_job.jobs[STYLE_NODE]
    return {
        "environment": {"name": plan.environment.name, "version": plan.environment.version,
                        "image": plan.environment.image},
        "components": {"style": {"version": style.component.version,
                                 "environment": style.component.environment},
                       "pipeline": {"name": plan.pipeline_component.name,
                                    "version": plan.pipeline_component.version}},
        "compute": {"name": plan.compute.name, "size": plan.compute.size,
                    "min_instances": plan.compute.min_instances,
                    "max_instances": plan.compute.max_instances, "tier": plan.compute.tier},
        "node_public_ip": plan.compute.enable_node_public_ip,
        "torch": next((str(e) for dep in plan.environment.conda_file["dependencies"]
                       if isinstance(dep, dict) for e in dep.get("pip", [])
                       if str(e).startswith(("torch", "--extra-index-url"))), None),
        "pipeline_job": {
            "type": type(plan.pipeline_job).__name__,
            "experiment": plan.pipeline_job.experiment_name,
            "default_compute": plan.pipeline_job.settings.default_compute,
            "job_tier": getattr(getattr(style, "queue_settings", None), "job_tier", None),
            "video": getattr(plan.pipeline_job.inputs.video, "path", None),
            "model": getattr(plan.pipeline_job.inputs.model, "path", None),
            "output": getattr(plan.pipeline_job.outputs.styled, "path", None),
            "work_dir": args.work_dir,
            "device": args.device,
            "instance_count": args.nodes,
            "process_count_per_instance": style.distribution.process_count_per_instance,
            "distribution": style.distribution.type,
        },
        "batch_endpoint": {"name": plan.endpoint.name},
        "batch_deployment": {"type": type(plan.deployment).__name__,
                             "name": plan.deployment.name,
                             "endpoint_name": plan.deployment.endpoint_name,
                             "component": plan.pipeline_component.name,
                             "settings": plan.deployment.settings},
    }


def submit(plan: Plan, args: argparse.Namespace) -> None:
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    ml = MLClient(DefaultAzureCredential(), args.subscription, args.resource_group, args.workspace)
    print(f"environment {plan.environment.name}:{plan.environment.version} ...", flush=True)
    ml.environments.create_or_update(plan.environment)
    if args.deploy_endpoint or not args.serverless_spot:
        print(f"compute cluster {plan.compute.name} ({plan.compute.size}, "
              f"0..{plan.compute.max_instances} nodes, {plan.compute.tier}) ...", flush=True)
        ml.compute.begin_create_or_update(plan.compute).result()

    if not args.no_submit:
        job = ml.jobs.create_or_update(plan.pipeline_job, experiment_name=args.experiment)
        print(f"submitted pipeline job {job.name}: {job.studio_url}", flush=True)
        if args.stream:
            ml.jobs.stream(job.name)

    if args.deploy_endpoint:
        print(f"batch endpoint {plan.endpoint.name} ...", flush=True)
        ml.batch_endpoints.begin_create_or_update(plan.endpoint).result()
        plan.deployment.component = ml.components.create_or_update(plan.pipeline_component)
        ml.batch_deployments.begin_create_or_update(plan.deployment).result()
        endpoint = ml.batch_endpoints.get(plan.endpoint.name)
        endpoint.defaults.deployment_name = plan.deployment.name
        ml.batch_endpoints.begin_create_or_update(endpoint).result()
        print(f"deployed {plan.deployment.name} as the default of {endpoint.name}; "
              f"scoring URI {endpoint.scoring_uri}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = build(args)
    validate(plan)
    if args.dry_run:
        print(json.dumps(describe(plan, args), indent=2, default=str))
        print("dry run: nothing was created or submitted", file=sys.stderr)
        return 0
    submit(plan, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
