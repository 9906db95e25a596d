"""Fault undo against Route 53 (moto over a real socket): transient failures are retried with
backoff until the undo succeeds; a permanent failure fails at once and leaves the marker for the
sweep. Failures are injected at the transport with a botocore `before-send` hook on the clients'
own event system, with botocore's own retries set to a single attempt so that each refusal
reaches the undo."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from prefect import flow

from chalkdr.clients import AwsClients
from chalkdr.errors import PermanentAwsError
from chalkdr.errors import TransientAwsError
from chalkdr.settings import ClientSettings
from chalkdr.settings import RetrySettings
from chalkdr.topology import load_topology
from tasks.faults import DRILL_TAG
from tasks.faults import FLOW_RUN_TAG
from tasks.faults import InvertHealthCheck
from tasks.faults import _sweep_experiments
from tasks.faults import check_fis_template
from tasks.faults import undo_fault
from tasks.faults import undo_with_retries

pytestmark = [pytest.mark.usefixtures("prefect_backend")]
ONE_ATTEMPT = ClientSettings(max_attempts=1)


class _Raw:
    """The minimum botocore reads from a raw HTTP response."""

    def __init__(self, body: bytes) -> None:
        self._body = io.BytesIO(body)

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self._body.read()


class Refuse:
    """A before-send handler for UpdateHealthCheck: refuses the next `times` sends with `code`,
    lets the rest through to the server, and counts every send."""

    def __init__(self, code: str, status: int) -> None:
        self.code, self.status = code, status
        self.times = 0
        self.sends = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        self.sends += 1
        if self.times <= 0:
            return None
        self.times -= 1
        body = (
            b'<?xml version="1.0"?><ErrorResponse><Error><Type>Sender</Type>'
            + f"<Code>{self.code}</Code><Message>refused by the test</Message>".encode()
            + b"</Error><RequestId>t</RequestId></ErrorResponse>"
        )
        return AWSResponse(request.url, self.status, {}, _Raw(body))


@flow(name="undo-under-test")
def undo_in_a_flow(fault: InvertHealthCheck) -> list[str]:
    return undo_fault(fault)


def health_check() -> str:
    r53 = boto3.client("route53", region_name="us-east-1")
    return str(
        r53.create_health_check(
            CallerReference=f"t-{uuid.uuid4().hex}",
            HealthCheckConfig={
                "Type": "HTTPS",
                "FullyQualifiedDomainName": "prod-east.query.example.com",
                "Port": 443,
                "ResourcePath": "/healthz",
                "RequestInterval": 30,
                "FailureThreshold": 3,
            },
        )["HealthCheck"]["Id"]
    )


def inverted_and_tags(hc_id: str) -> tuple[bool, dict[str, str]]:
    r53 = boto3.client("route53", region_name="us-east-1")
    config = r53.get_health_check(HealthCheckId=hc_id)["HealthCheck"]["HealthCheckConfig"]
    tags = r53.list_tags_for_resource(ResourceType="healthcheck", ResourceId=hc_id)["ResourceTagSet"]["Tags"]
    return bool(config.get("Inverted")), {t["Key"]: t["Value"] for t in tags}


def injected(refuse: Refuse) -> tuple[InvertHealthCheck, str]:
    hc_id = health_check()
    clients = AwsClients(
        settings=ONE_ATTEMPT, event_hooks=[("before-send.route53.UpdateHealthCheck", refuse)]
    )
    fault = InvertHealthCheck(clients, hc_id, "us-east-1", "dtest-undo", flow_run_id=str(uuid.uuid4()))
    fault.inject()
    assert inverted_and_tags(hc_id) == (
        True,
        {DRILL_TAG: "dtest-undo", "chalk-dr:fault": "inverted", FLOW_RUN_TAG: fault.flow_run_id},
    )
    refuse.sends = 0
    return fault, hc_id


class TestUndo:
    def test_a_throttled_undo_is_retried_until_it_restores(self, moto_server: str) -> None:
        refuse = Refuse("Throttling", 400)
        fault, hc_id = injected(refuse)
        refuse.times = 2
        restored = undo_in_a_flow(fault)
        assert restored == [f"route53 health check {hc_id}: Inverted reset to false (drill dtest-undo)"]
        assert refuse.sends == 3  # two refusals, then the update that went through
        assert inverted_and_tags(hc_id) == (False, {})

    def test_a_permanent_failure_fails_at_once_and_keeps_the_marker(self, moto_server: str) -> None:
        refuse = Refuse("AccessDenied", 403)
        fault, hc_id = injected(refuse)
        refuse.times = 10
        state = undo_in_a_flow(fault, return_state=True)
        assert state.is_failed()
        with pytest.raises(
            PermanentAwsError, match=f"route53:UpdateHealthCheck on {hc_id} failed: AccessDenied"
        ):
            state.result()
        assert refuse.sends == 1  # no retry of what retrying cannot fix
        inverted, tags = inverted_and_tags(hc_id)
        assert inverted and tags[DRILL_TAG] == "dtest-undo" and tags[FLOW_RUN_TAG] == fault.flow_run_id
        # The marker is what a later undo (the sweep's) restores from.
        refuse.times = 0
        assert undo_in_a_flow(fault) == [
            f"route53 health check {hc_id}: Inverted reset to false (drill dtest-undo)"
        ]
        assert inverted_and_tags(hc_id) == (False, {})

    def test_retries_are_bounded(self, moto_server: str) -> None:
        refuse = Refuse("Throttling", 400)
        fault, hc_id = injected(refuse)
        refuse.times = 10
        quick = RetrySettings(task_retries=2, task_retry_delays_s=(0.05, 0.1), task_retry_jitter_factor=0.0)

        @flow(name="undo-bounded")
        def bounded() -> list[str]:
            return undo_with_retries("undo under test", fault.undo, settings=quick)

        state = bounded(return_state=True)
        with pytest.raises(TransientAwsError, match="Throttling"):
            state.result()
        assert refuse.sends == 3  # the first attempt and two retries, then it gives up
        assert inverted_and_tags(hc_id)[0]  # still inverted, marker kept
        assert inverted_and_tags(hc_id)[1][DRILL_TAG] == "dtest-undo"


# -- FIS: only this environment's, reversible faults; templates a drill creates are removed --------

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "topology.example.yaml"


def fis_template(region: str, action: str, tags: dict[str, str]) -> str:
    fis = boto3.client("fis", region_name=region)
    return str(
        fis.create_experiment_template(
            clientToken=uuid.uuid4().hex,
            description="t",
            roleArn="arn:aws:iam::123456789012:role/fis",
            stopConditions=[{"source": "none"}],
            actions={"a": {"actionId": action, "parameters": {"duration": "PT1M"}}},
            tags=tags,
        )["experimentTemplate"]["id"]
    )


class TestFisTemplates:
    def test_an_operators_template_runs_only_when_marked_for_the_environment_and_reversible(
        self, moto_server: str
    ) -> None:
        t = load_topology(EXAMPLE)
        region, env = t.primary.aws_region, t.environment
        clients = AwsClients()
        marked = {"chalk-dr:managed": "true", "chalk-dr:environment": env}
        ok = fis_template(region, "aws:fis:wait", marked)
        assert check_fis_template(t, clients, ok) == []
        other_env = fis_template(region, "aws:fis:wait", {**marked, "chalk-dr:environment": "staging"})
        unmarked = fis_template(region, "aws:fis:wait", {})
        for tpl in (other_env, unmarked):
            (problem,) = check_fis_template(t, clients, tpl)
            assert problem == (
                f"FIS template {tpl} in {region} is not tagged for chalk-dr and {env} "
                f"(chalk-dr:managed=true, chalk-dr:environment={env}): "
                "a drill runs only templates marked for its environment"
            )
        lethal = fis_template(region, "aws:ec2:terminate-instances", marked)
        (problem,) = check_fis_template(t, clients, lethal)
        assert problem.startswith(
            f"FIS template {lethal} in {region} runs actions a drill may not run: aws:ec2:terminate-instances"
        )

    def test_the_sweep_reads_every_page_and_touches_only_its_environments_templates(
        self, moto_server: str
    ) -> None:
        t = load_topology(EXAMPLE)
        region, env = t.primary.aws_region, t.environment
        ours = {DRILL_TAG: "d-old", "chalk-dr:managed": "true", "chalk-dr:environment": env}
        theirs = {**ours, "chalk-dr:environment": "staging"}
        # More than one page (the sweep asks for 100 a page): ours are on the last one.
        others = [fis_template(region, "aws:fis:wait", theirs) for _ in range(101)]
        mine = [fis_template(region, "aws:fis:wait", ours) for _ in range(2)]
        swept = _sweep_experiments(AwsClients(), region, env)
        assert sorted(r.line for r in swept) == sorted(
            f"FIS experiment template {tpl} in {region}: deleted (created by a drill)" for tpl in mine
        )
        fis = boto3.client("fis", region_name=region)
        left = {
            tpl["id"]
            for page in fis.get_paginator("list_experiment_templates").paginate()
            for tpl in page["experimentTemplates"]
        }
        assert left == set(others)
