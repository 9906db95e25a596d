"""Tasks for Amazon EKS and its Kubernetes API: each cluster ACTIVE, Chalk's Deployments ready.

Verify only. Provision never creates or scales anything here (clusters and Chalk's workloads
are Chalk's); it reports whether the data plane the failover plumbing points at is there.
"""

from __future__ import annotations

from botocore.exceptions import ClientError
from kubernetes.client.exceptions import ApiException
from prefect import task
from prefect.cache_policies import NO_CACHE

from chalkdr.classify import aws_call
from chalkdr.classify import classify_kube_error
from chalkdr.clients import AwsClients
from chalkdr.errors import ChalkDrError
from chalkdr.plan import ObservedDeployment
from chalkdr.plan import ObservedEks
from chalkdr.topology import RegionConfig
from tasks.retry import retry_options

__all__ = ["read_eks"]


@task(task_run_name="read-eks-{region.aws_region}", cache_policy=NO_CACHE, **retry_options())
def read_eks(clients: AwsClients, region: RegionConfig) -> ObservedEks:
    """The cluster's status and the ready counts of the query-server and persistence Deployments.

    A missing cluster or Deployment is an observation (the plan reports it), not a failure;
    an unreachable API server is recorded as the check's error after retries of transient faults.
    """
    eks = region.eks
    with aws_call("eks", "DescribeCluster", f"{region.aws_region}/{eks.cluster_name}"):
        try:
            status = clients.eks(region.aws_region).describe_cluster(name=eks.cluster_name)["cluster"][
                "status"
            ]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            return ObservedEks(cluster=eks.cluster_name, region=region.aws_region, status=None)
    if status != "ACTIVE":
        return ObservedEks(cluster=eks.cluster_name, region=region.aws_region, status=status)
    try:
        kube = clients.kube(eks.cluster_name, region.aws_region)
    except ChalkDrError as exc:
        return ObservedEks(cluster=eks.cluster_name, region=region.aws_region, status=status, error=str(exc))
    apps = kube.apps()
    deployments = []
    for name in (eks.query_server_deployment, eks.persistence_deployment):
        try:
            dep = apps.read_namespaced_deployment(name, eks.namespace, _request_timeout=kube.request_timeout)
        except ApiException as exc:
            if exc.status == 404:
                deployments.append(ObservedDeployment(name=name, found=False))
                continue
            raise classify_kube_error(exc, operation="read_namespaced_deployment", resource=name) from exc
        except Exception as exc:  # urllib3 connection errors: transient, retried by the task
            raise classify_kube_error(exc, operation="read_namespaced_deployment", resource=name) from exc
        deployments.append(
            ObservedDeployment(
                name=name,
                found=True,
                replicas=dep.spec.replicas or 0,
                # The API server omits zero counts (Go omitempty): None means 0.
                ready_replicas=(dep.status.ready_replicas or 0) if dep.status else 0,
            )
        )
    return ObservedEks(
        cluster=eks.cluster_name, region=region.aws_region, status=status, deployments=tuple(deployments)
    )
