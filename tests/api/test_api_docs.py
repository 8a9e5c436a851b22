"""docs/api.md stays honest: its request bodies are sent to the service it describes and must be
taken, and its example answers are held to what the service answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from store.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def shell_commands(text: str) -> list[str]:
    """The commands of the doc's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        commands += [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    return commands


def posts(text: str) -> list[tuple[str, dict, dict]]:
    """(path, headers, JSON body) of every `curl -X POST ... -d '...'` in the doc."""
    found = []
    for command in shell_commands(text):
        route = re.search(r"-X POST localhost:8000(/\S*)", command)
        body = re.search(r"-d '(.*)'", command)
        if route and body:
            headers = dict(re.findall(r"-H '([\w-]+): ([^']*)'", command))
            found.append((route.group(1), headers, json.loads(body.group(1))))
    return found


def json_blocks(text: str) -> list[dict]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def test_the_doc_has_the_examples_this_test_reads() -> None:
    text = DOC.read_text()
    assert {path for path, _, _ in posts(text)} >= {"/jobs", "/jobs/$JOB/continue"}
    assert len(json_blocks(text)) >= 2


def test_every_post_example_is_taken_by_the_service(embedded, make_model, tiny_checkpoint) -> None:
    from store import jobs
    from store.db import session_scope
    from store.settings import get_settings

    model = make_model(tiny_checkpoint)
    with session_scope(get_settings()) as session:  # the continue example needs an ended job
        jobs.claim_job(session, model["job_id"], "w")
        jobs.finish_job(session, model["job_id"], jobs.SUCCEEDED)
    for path, headers, body in posts(DOC.read_text()):
        path = path.replace("$JOB", model["job_id"])
        if body.get("model_id") == "'$MODEL'":  # the doc splices a shell variable into the JSON
            body["model_id"] = model["model_id"]
        answer = embedded.client.post(path, json=body, headers=headers)
        assert answer.status_code in (200, 201), (path, body, answer.text)


def test_the_example_job_has_the_fields_the_service_answers(embedded) -> None:
    job_example = next(b for b in json_blocks(DOC.read_text()) if "total_steps" in b)
    asked = {k: job_example["config"][k] for k in ("dataset", "resolution", "steps")}
    created = embedded.client.post("/jobs", json={"kind": "train", "config": asked})
    answer = created.json()
    assert created.status_code == 201 and set(job_example) == set(answer)
    shown = {k: v for k, v in job_example["config"].items() if k != "..."}
    assert {k: answer["config"][k] for k in shown} == shown  # the resolved preset's values


def test_the_example_error_is_the_one_the_service_gives(embedded) -> None:
    error = next(b for b in json_blocks(DOC.read_text()) if "errors" in b)
    got = re.search(r"\(got (\d+)\)", error["detail"])
    assert got is not None
    config = {"dataset": "digits", "resolution": int(got.group(1))}
    answer = embedded.client.post("/jobs", json={"kind": "train", "config": config})
    assert answer.status_code == 422
    assert answer.json() == error


@pytest.mark.parametrize("claim", ["expires_in", "valid"])
def test_the_checkpoint_url_lifetime_is_the_setting(claim: str) -> None:
    text = DOC.read_text()
    seconds = Settings.model_fields["checkpoint_url_seconds"].default
    said = re.findall(r'"expires_in": (\d+)' if claim == "expires_in" else r"(\d+) s\)", text)
    assert said and {int(s) for s in said} == {seconds}
