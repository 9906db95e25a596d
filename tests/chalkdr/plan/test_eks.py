"""EKS in the plan: verified (cluster ACTIVE, Deployments ready), never changed."""

from __future__ import annotations

from typing import Any

from chalkdr.plan import ObservedDeployment
from chalkdr.plan import plan_for


def _with_deployments(w: Any, obs: Any, region: str, *deployments: ObservedDeployment, **fields: Any) -> Any:
    clusters = dict(obs.eks.clusters)
    clusters[region] = clusters[region].model_copy(update={"deployments": deployments, **fields})
    return w.updated(obs, "eks", clusters=clusters)


class TestEksChecks:
    def test_unready_deployments_and_inactive_clusters_fail_the_check(self, w: Any) -> None:
        t = w.topology()
        obs = _with_deployments(
            w,
            w.facts(t),
            "us-west-2",
            ObservedDeployment(name="chalk-query-server", found=True, replicas=2, ready_replicas=1),
            ObservedDeployment(name="chalk-persistence-worker", found=False),
            status="UPDATING",
        )
        checks = {c.region: c for c in plan_for(t, obs).checks}
        assert checks["us-east-1"].ok
        assert (
            checks["us-east-1"].detail
            == "ACTIVE; chalk-query-server 2/2 ready; chalk-persistence-worker 1/1 ready"
        )
        assert not checks["us-west-2"].ok
        assert checks["us-west-2"].detail == (
            "cluster UPDATING; chalk-query-server 1/2 ready; chalk/chalk-persistence-worker not found"
        )

    def test_a_passive_deployment_scaled_to_zero_is_ready(self, w: Any) -> None:
        t = w.topology()
        obs = w.facts(t)
        west = obs.eks.clusters["us-west-2"]
        passive = ObservedDeployment(
            name="chalk-persistence-worker", found=True, replicas=0, ready_replicas=0
        )
        plan = plan_for(t, _with_deployments(w, obs, "us-west-2", west.deployments[0], passive))
        assert [c.ok for c in plan.checks] == [True, True]

    def test_an_unreadable_or_missing_cluster_fails_the_check(self, w: Any) -> None:
        t = w.topology()
        obs = w.facts(t)
        clusters = dict(obs.eks.clusters)
        clusters["us-east-1"] = clusters["us-east-1"].model_copy(update={"error": "connection refused"})
        clusters["us-west-2"] = clusters["us-west-2"].model_copy(update={"status": None})
        checks = plan_for(t, w.updated(obs, "eks", clusters=clusters)).checks
        assert [(c.ok, c.detail) for c in checks] == [
            (False, "connection refused"),
            (False, "cluster not found"),
        ]
