"""azure/trigger.json's Logic App, run here (tests/logicapp.py) against real Blob
storage (Azurite, for the claims and dead letters) and a fake Azure ML (a small
HTTP server on 127.0.0.1 that plays the batch endpoint's invoke and Jobs - Get).

What it shows: one job per upload however often Event Grid delivers the event;
a failed or preempted job is submitted again up to maxJobAttempts times, then the
upload is dead-lettered and its claim given back, so that resending the
dead-lettered event (docs/deploy.md's recovery) starts it again; a claim that
fails for another reason than an existing claim is dead-lettered; a/clip.mp4 and
b/clip.mp4 get different output folders; events from another account or
container, or from an API that does not complete a blob, start nothing.
"""
from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from azurite import ACCOUNT, KEY, azurite_server  # noqa: F401 (fixture)
from conftest import ROOT
from logicapp import run_workflow

TRIGGER = ROOT / "azure" / "trigger.json"
STORAGE_ID = ("/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Storage/"
              "storageAccounts/uploadacct")


class FakeAzureML:
    """The batch endpoint's invoke (POST /score) and ARM's Jobs - Get (GET /jobs/NAME).

    ``statuses[n]`` lists what the n-th job (0-based) reports on each poll; its
    last entry repeats. ``invoke_status`` answers every invoke with that code.
    """

    def __init__(self, statuses: list[list[str]], invoke_status: int = 200):
        self.statuses = statuses
        self.invoke_status = invoke_status
        self.invokes: list[dict] = []
        self.polls: list[str] = []
        self.authorizations: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                fake.authorizations.append(self.headers.get("Authorization", ""))
                if self.path != "/score":
                    return self.answer(404, {})
                if fake.invoke_status >= 400:
                    return self.answer(fake.invoke_status, {"error": {"code": "Boom"}})
                fake.invokes.append(json.loads(self.rfile.read(length)))
                name = f"job-{len(fake.invokes) - 1}"
                self.answer(200, {"id": f"/subscriptions/0000/jobs/{name}", "name": name,
                                  "properties": {"status": "NotStarted"}})

            def do_GET(self):
                path = self.path.split("?")[0]
                if not path.startswith("/jobs/job-") or "api-version=" not in self.path:
                    return self.answer(404, {})
                name = path.rsplit("/", 1)[1]
                fake.polls.append(name)
                script = fake.statuses[int(name.split("-")[1])]
                seen = fake.polls.count(name)
                self.answer(200, {"name": name,
                                  "properties": {"status": script[min(seen, len(script)) - 1]}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def state(azurite_server):  # noqa: F811 (fixture)
    """A fresh state container in Azurite and a SAS for it (in place of the identity)."""
    container = azurite_server.new_container("trigger")
    sas = generate_container_sas(ACCOUNT, container, account_key=KEY,
                                 permission=ContainerSasPermissions(read=True, write=True,
                                                                    create=True, delete=True,
                                                                    list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    client = azurite_server.service().get_container_client(container)
    return {"url": f"{azurite_server.account_url}/{container}", "sas": sas, "client": client}


@pytest.fixture
def azure_ml():
    fakes: list[FakeAzureML] = []

    def make(statuses: list[list[str]], invoke_status: int = 200) -> FakeAzureML:
        fakes.append(FakeAzureML(statuses, invoke_status))
        return fakes[-1]

    yield make
    for fake in fakes:
        fake.close()


def definition() -> dict:
    template = json.loads(TRIGGER.read_text(encoding="utf-8"))
    [workflow] = [r for r in template["resources"] if r["type"] == "Microsoft.Logic/workflows"]
    return workflow["properties"]["definition"]


def parameters(state: dict, fake: FakeAzureML, max_attempts: int = 3) -> dict:
    """The workflow parameters trigger.json passes, with the fakes' URLs."""
    return {
        "scoringUri": f"{fake.url}/score",
        "modelUri": "azureml://datastores/workspaceblobstore/paths/stylempi/models/candy.pth",
        "outputUri": "azureml://datastores/workspaceblobstore/paths/stylempi/output",
        "stateContainerUrl": state["url"],
        "storageAccountId": STORAGE_ID,
        "subjectPrefix": "/blobServices/default/containers/uploads/blobs/incoming/",
        "subjectSuffix": ".mp4",
        "createdByApis": ["PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"],
        "jobsUrl": f"{fake.url}/jobs/",
        "managementAudience": "https://management.azure.com/",
        "maxJobAttempts": max_attempts,
        "jobPollMinutes": 5,
    }


def event(name: str, etag: str = "0x8DC0FFEE", api: str = "PutBlockList",
          topic: str = STORAGE_ID, container: str = "uploads") -> dict:
    """A BlobCreated event as Event Grid delivers it (Event Grid schema)."""
    return {
        "topic": topic,
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "id": str(uuid.uuid4()),
        "data": {"api": api, "eTag": etag, "contentType": "video/mp4", "blobType": "BlockBlob",
                 "url": f"https://uploadacct.blob.core.windows.net/{container}/{name}"},
        "dataVersion": "", "metadataVersion": "1", "eventTime": "2026-12-07T10:00:00Z",
    }


def deliver(state: dict, fake: FakeAzureML, events: list[dict], sas=None, until_limit=100, **kw):
    run = run_workflow(definition(), parameters(state, fake, **kw), events,
                       storage_sas=sas or (lambda url: state["sas"]), until_limit=until_limit)
    assert run.response and run.response["statusCode"] == 202, run.response
    return run


def blobs(state: dict, prefix: str) -> list[str]:
    return sorted(b.name for b in state["client"].list_blobs(name_starts_with=prefix))


def output_uri(invoke: dict) -> str:
    return invoke["properties"]["OutputData"]["styled"]["Uri"]


def test_answers_event_grids_validation(state, azure_ml):
    fake = azure_ml([["Completed"]])
    run = run_workflow(definition(), parameters(state, fake),
                       [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                         "data": {"validationCode": "abc-123"}}],
                       storage_sas=lambda url: state["sas"])
    assert run.response == {"statusCode": 200, "body": {"validationResponse": "abc-123"}}
    assert fake.invokes == []


def test_one_job_per_upload_and_a_preempted_job_is_resubmitted(state, azure_ml):
    # The first job runs, then fails (a preempted cluster); the second completes.
    fake = azure_ml([["Running", "Failed"], ["Running", "Completed"]])
    upload = event("incoming/a/clip.mp4")
    deliver(state, fake, [upload])
    assert len(fake.invokes) == 2, fake.invokes
    assert fake.polls == ["job-0", "job-0", "job-1", "job-1"]
    # The resubmitted job writes where the first one did: it resumes from its chunks.
    assert output_uri(fake.invokes[0]) == output_uri(fake.invokes[1])
    assert all(a.startswith("Bearer token-for ") for a in fake.authorizations)
    assert len(blobs(state, "claims/")) == 1 and blobs(state, "dead-letters/") == []

    deliver(state, fake, [upload])  # Event Grid delivers at least once
    assert len(fake.invokes) == 2, "a redelivered event started a second job"


def test_every_job_failing_dead_letters_the_upload_and_resending_it_starts_again(state, azure_ml):
    fake = azure_ml([["Failed"], ["Canceled"], ["NotResponding"], ["Completed"]])
    upload = event("incoming/clip.mp4")
    deliver(state, fake, [upload], max_attempts=3)
    assert len(fake.invokes) == 3
    [dead] = blobs(state, "dead-letters/failed-jobs/")
    metadata = state["client"].get_blob_client(dead).get_blob_properties().metadata
    # Metadata names are case-insensitive (HTTP headers); Azurite may change their case.
    metadata = {k.lower(): v for k, v in metadata.items()}
    assert metadata["status"] == "NotResponding" and metadata["attempts"] == "3", metadata
    assert blobs(state, "claims/") == [], "the claim of a given-up upload must be released"

    # docs/deploy.md's recovery: POST the dead letter's content to the callback URL.
    resent = json.loads(state["client"].download_blob(dead).readall())
    assert resent == [upload]
    deliver(state, fake, resent)
    assert len(fake.invokes) == 4 and len(blobs(state, "claims/")) == 1


def test_a_failed_invoke_is_dead_lettered_and_released(state, azure_ml):
    fake = azure_ml([["Completed"]], invoke_status=400)
    deliver(state, fake, [event("incoming/clip.mp4")])
    assert len(blobs(state, "dead-letters/failed-invokes/")) == 1
    assert blobs(state, "claims/") == []


def test_a_job_followed_past_the_loops_limit_is_dead_lettered(state, azure_ml):
    """A job that never ends (or a Jobs - Get that keeps failing) must not lose the upload."""
    fake = azure_ml([["Running"]])
    deliver(state, fake, [event("incoming/clip.mp4")], until_limit=5)
    assert len(fake.invokes) == 1 and len(fake.polls) == 4
    [dead] = blobs(state, "dead-letters/unfinished/")
    metadata = {k.lower(): v for k, v in
                state["client"].get_blob_client(dead).get_blob_properties().metadata.items()}
    assert metadata["job"] == "job-0" and metadata["status"] == "Running", metadata
    assert blobs(state, "claims/") == []


def test_a_failed_claim_is_dead_lettered(state, azure_ml):
    """A 403 on the claim (role assignments still propagating) must not lose the upload."""
    read_only = generate_container_sas(
        ACCOUNT, state["client"].container_name, account_key=KEY,
        permission=ContainerSasPermissions(read=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    fake = azure_ml([["Completed"]])
    upload = event("incoming/clip.mp4")
    deliver(state, fake, [upload],
            sas=lambda url: read_only if "/claims/" in url else state["sas"])
    assert fake.invokes == [], "no job without a claim"
    [dead] = blobs(state, "dead-letters/failed-claims/")
    assert json.loads(state["client"].download_blob(dead).readall()) == [upload]
    metadata = {k.lower(): v for k, v in
                state["client"].get_blob_client(dead).get_blob_properties().metadata.items()}
    assert metadata["job"] == "none" and metadata["attempts"] == "0", metadata
    # Nothing was claimed, so resending the event (once the role applies) starts the job.
    deliver(state, fake, [upload])
    assert len(fake.invokes) == 1


def test_same_name_in_two_folders_or_reuploaded_gets_its_own_output(state, azure_ml):
    fake = azure_ml([["Completed"]] * 3)
    deliver(state, fake, [event("incoming/a/clip.mp4")])
    deliver(state, fake, [event("incoming/b/clip.mp4")])
    deliver(state, fake, [event("incoming/a/clip.mp4", etag="0x8DC0FFEF")])  # a re-upload
    outputs = [output_uri(i) for i in fake.invokes]
    assert len(set(outputs)) == 3, outputs
    assert outputs[0] == ("azureml://datastores/workspaceblobstore/paths/stylempi/output/"
                          "incoming%2Fa%2Fclip.mp4/0x8DC0FFEE")
    work_dirs = set()
    for invoke in fake.invokes:
        inputs = invoke["properties"]["InputData"]
        name = inputs["output_name"]["Value"]
        assert name == "clip.mp4"
        # No work_dir input: stylempi keeps the work directory beside the result
        # (.NAME.stylempi, docs/deploy.md), so inside each upload's own folder.
        assert "work_dir" not in inputs
        work_dirs.add(f"{output_uri(invoke)}/.{name}.stylempi")
    assert len(work_dirs) == 3, work_dirs


@pytest.mark.parametrize("upload", [
    event("incoming/clip.mp4", topic=STORAGE_ID.replace("uploadacct", "otheracct")),
    event("incoming/clip.mp4", container="other"),
    event("elsewhere/clip.mp4"),
    event("incoming/clip.mkv"),
    event("incoming/clip.mp4", api="CreateFile"),  # HNS: an empty file, before its data
    event("incoming/x\nSTYLEMPI_INPUTS_END\ntouch X\n.mp4"),
], ids=["other-account", "other-container", "other-prefix", "other-suffix", "CreateFile",
        "line-break"])
def test_events_that_are_no_completed_upload_start_nothing(state, azure_ml, upload):
    fake = azure_ml([["Completed"]])
    deliver(state, fake, [upload])
    assert fake.invokes == [] and blobs(state, "") == []
