"""The sandbox's Kubernetes: one kmock API server per region, plus the controllers kmock lacks.

kmock's `KubernetesEmulator` is a faithful store over real HTTP (404/409 Status bodies, every
request recorded), but it has no controllers and knows nothing about built-in subresources.
For a failover drill three gaps matter, and each is filled the way the real API server and
kube-controller-manager behave:

- `deployments/{name}/scale` answers GET/PATCH/PUT with an `autoscaling/v1` Scale object (the
  kubernetes client's `read/patch/replace_namespaced_deployment_scale`), never the Deployment;
- a replica controller makes `status.*Replicas` and the Pods follow `spec.replicas` after
  `ready_delay` real seconds, whether the spec changed through `scale` or a Deployment patch,
  and bumps `metadata.generation` / `status.observedGeneration` like the real controllers; a
  Pod deleted through the API stops counting as ready at once and is replaced (ready again)
  after the same delay, as a ReplicaSet would;
- `labelSelector` on list requests filters (equality- and set-based syntax);
- a HorizontalPodAutoscaler controller (autoscaling/v2), the part of kube-controller-manager's
  `pkg/controller/podautoscaler/horizontal.go` (`reconcileAutoscaler`) that needs no metrics:
  with the target Deployment's spec.replicas at 0 and minReplicas > 0 "scaling is disabled"
  (desired 0, no rescale); above maxReplicas the desired count is maxReplicas, below minReplicas
  it is minReplicas, and the controller writes it to the Deployment's scale (then the replica
  controller makes it ready after `ready_delay`); within the bounds it needs metrics, and there
  is no metrics server, so it leaves the replicas alone (ScalingActive False,
  FailedGetResourceMetric, desiredReplicas kept, as `setCurrentReplicasAndMetricsInStatus`
  does). Status is written in autoscaling/v2's shape: currentReplicas (omitted when 0),
  desiredReplicas, lastScaleTime and the AbleToScale / ScalingActive / ScalingLimited
  conditions. It runs every `hpa_sync_s` real seconds (kube-controller-manager's
  `--horizontal-pod-autoscaler-sync-period` is 15 s; the sandbox default is shorter). HPA writes
  are validated as the API server validates them (`pkg/apis/autoscaling/validation`): minReplicas
  at least 1, maxReplicas at least 1 and not below minReplicas, scaleTargetRef kind and name
  required, else 422 Invalid.

Like the real API server (Go `omitempty`), zero-valued replica counts are absent from
`status`, so the kubernetes client reads `ready_replicas` as None, not 0.

Every authenticated request is recorded in the ground truth (`kube.request`) with the attributes
Kubernetes' authorizer decides on (kubernetes.io, "Authorization", *Review your request
attributes* and *Determine the request verb*): verb, API group, resource, subresource, namespace
and name, so a test can check a Role grants what the flows do and no more (the sandbox does not
enforce RBAC itself: every authenticated caller is its cluster's creator, as EKS's
`bootstrapClusterCreatorAdminPermissions` makes the creating principal an administrator).

kmock is asyncio-based: each RegionalKube runs its own event loop on a daemon thread, so that
synchronous kubernetes-client code in the test or flow thread never blocks the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import KW_ONLY
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any

import httpx
import kmock
from typing_extensions import override

from sandbox.truth import GroundTruth

__all__ = ["KubeRequest", "RegionalKube", "label_selector_matches", "request_verb"]

DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
HPAS = kmock.resource("autoscaling", "v2", "horizontalpodautoscalers")
PODS = kmock.resource("", "v1", "pods")
NAMESPACES = kmock.resource("", "v1", "namespaces")

# The controller's cadence: short next to any ready_delay worth simulating, cheap when idle.
_TICK_S = 0.02

# kmock.Server patches aiohttp's class-wide resolver on enter and undoes it on exit, and the undo
# must be strictly LIFO across every server in the process. Regions stopped in any order on their
# own threads cannot promise that, so the patch is undone right after start under this lock (the
# sandbox addresses its emulators by 127.0.0.1:port and never needs the fake-hostname resolver).
_RESOLVER_LOCK = threading.Lock()


@dataclass(frozen=True)
class KubeRequest:
    """One request the emulator received, as a test asserts on it (headers case-insensitive)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: httpx.Headers
    body: bytes


def request_verb(method: str, *, named: bool, watch: bool) -> str:
    """The verb Kubernetes authorizes a resource request as (kubernetes.io, "Authorization",
    *Determine the request verb*): POST create; GET and HEAD get for one object, list for a
    collection, watch with `?watch=true`; PUT update; PATCH patch; DELETE delete for one object,
    deletecollection for a collection."""
    m = method.upper()
    if m in ("GET", "HEAD"):
        return "watch" if watch else ("get" if named else "list")
    if m == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(m, m.lower())


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_requirements(selector: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b!=c` -> [`a in (x,y)`, `b!=c`]."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p.strip() for p in parts if p.strip()]


_SET_REQ = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ_REQ = re.compile(r"^(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)$")
_EXISTS_REQ = re.compile(r"^(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)$")


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; raises ValueError on a selector the API would reject."""
    for req in _split_requirements(selector):
        if m := _SET_REQ.match(req):
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            present = m["key"] in labels and labels[m["key"]] in values
            if present != (m["op"] == "in"):
                return False
        elif m := _EQ_REQ.match(req):
            equal = labels.get(m["key"]) == m["value"]
            if equal != (m["op"] != "!="):
                return False
        elif m := _EXISTS_REQ.match(req):
            if (m["key"] in labels) == bool(m["neg"]):
                return False
        else:
            raise ValueError(f"unable to parse requirement: {req!r}")
    return True


class _Emulator(kmock.KubernetesEmulator):
    """KubernetesEmulator whose Deployment writes go to the sandbox's reactions.

    The stock emulator merges any PATCH body into the stored object before any reaction runs,
    whatever the subresource: a Scale body (kind, apiVersion, metadata) would overwrite the
    Deployment's own, and a spec change would be answered before the controller could bump
    `metadata.generation`. Scale requests and Deployment PATCH/PUT therefore skip that generic
    path and are answered by the reactions RegionalKube registers, like the real API server's
    registry for apps/v1 deployments.
    """

    verify_token: Callable[[str], str | None] | None = None  # None: every bearer accepted
    truth: GroundTruth | None = None  # where authenticated requests are recorded
    cluster: str = ""

    @override
    async def _handle(self, request: kmock.Request) -> Any:
        if self.verify_token is not None:
            scheme, _, token = str(request.headers.get("Authorization", "")).partition(" ")
            problem = "no bearer token" if scheme.lower() != "bearer" else self.verify_token(token.strip())
            if problem is not None:
                # The API server's answer to a token its authenticator refuses: 401 Unauthorized.
                raise kmock.KubernetesError(
                    status=401, reason="Unauthorized", message=f"Unauthorized: {problem}"
                )
        self._record(request)
        if request.resource == DEPLOYMENTS and request.name is not None:
            own = request.subresource == "scale" or (
                request.subresource is None and request.method.value in ("PATCH", "PUT")
            )
            if own:
                return await kmock.RawHandler._handle(self, request)
        if (
            request.resource == HPAS
            and request.subresource is None
            and request.method.value in ("POST", "PATCH", "PUT")
        ):
            return await kmock.RawHandler._handle(self, request)  # validated like the API server
        return await super()._handle(request)

    def _record(self, request: kmock.Request) -> None:
        """The request's authorization attributes, as `kube.request` in the ground truth."""
        if self.truth is None:
            return
        if request.resource is None or not request.resource.plural:
            self.truth.record(
                "kube.request",
                cluster=self.cluster,
                verb=str(request.method.value).lower(),
                non_resource_url=request.url.path,
            )
            return
        self.truth.record(
            "kube.request",
            cluster=self.cluster,
            verb=request_verb(
                str(request.method.value),
                named=request.name is not None,
                watch=str(request.params.get("watch", "")).lower() in ("true", "1"),
            ),
            api_group=request.resource.group or "",
            resource=request.resource.plural,
            subresource=request.subresource,
            namespace=request.namespace,
            name=request.name,
        )

    def live(self, resource: kmock.resource, namespace: str | None = None) -> dict[str, kmock.Object]:
        """Live (not soft-deleted) objects of a resource by name, optionally in one namespace."""
        return {
            name: obj
            for (res, ns, name), obj in self.objects.items()
            if res == resource and (namespace is None or ns == namespace) and not obj.deleted
        }

    async def store(
        self, resource: kmock.resource, namespace: str, name: str, patch: Any, *, replace: bool = False
    ) -> dict[str, Any]:
        """Patch (merge or JSON patch), replace or create an object and tell watchers, as an API write.

        Returns the stored object. ValueError/TypeError/jsonpatch errors mean an invalid patch.
        """
        async with self._lock:
            key = (resource, namespace, name)
            existed = key in self.objects and not self.objects[key].deleted
            if not existed or replace:
                if key in self.objects:
                    self.objects[key].create(dict(patch))
                else:
                    self.objects[key] = dict(patch)
            else:
                self.objects[key].patch(patch)
            raw: dict[str, Any] = self.objects[key].raw
            await self._buses[resource].put({"type": "MODIFIED" if existed else "ADDED", "object": raw})
            return raw

    async def remove(self, resource: kmock.resource, namespace: str, name: str) -> None:
        async with self._lock:
            obj = self.objects[resource, namespace, name]
            raw = obj.raw
            obj.delete()
            await self._buses[resource].put({"type": "DELETED", "object": raw})


def _deployment_status(ready: int, generation: int, desired: int) -> dict[str, Any]:
    """A Deployment status as the API serves it: zero counts omitted (Go omitempty)."""
    counts = {"replicas": ready, "updatedReplicas": ready, "readyReplicas": ready, "availableReplicas": ready}
    available = ready >= desired
    return {
        "observedGeneration": generation,
        **{k: (v if v else None) for k, v in counts.items()},
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                "lastUpdateTime": _now_iso(),
                "lastTransitionTime": _now_iso(),
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": "ReplicaSet has successfully progressed.",
                "lastUpdateTime": _now_iso(),
                "lastTransitionTime": _now_iso(),
            },
        ],
    }


def _deployment(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    status = _deployment_status(replicas, 1, replicas)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name},
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "creationTimestamp": _now_iso(),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": f"chalk/{name}:sandbox"}]},
            },
        },
        "status": {k: v for k, v in status.items() if v is not None},
    }


def _pod(deployment: str, namespace: str, template_hash: str) -> dict[str, Any]:
    name = f"{deployment}-{template_hash}-{secrets.token_hex(3)[:5]}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": deployment, "pod-template-hash": template_hash},
            "uid": str(uuid.uuid4()),
            "creationTimestamp": _now_iso(),
        },
        "spec": {"containers": [{"name": deployment, "image": f"chalk/{deployment}:sandbox"}]},
        "status": {
            "phase": "Running",
            "startTime": _now_iso(),
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        },
    }


@dataclass(eq=False)
class _ReplicaController:
    """Deployment + ReplicaSet controllers in one: status and Pods follow spec after a delay.

    Level-triggered like the real ones: it compares spec.replicas with what it last saw; a
    change restarts the delay (a scale 2 -> 0 -> 2 within the delay never drops readiness).
    The delay is symmetric on purpose: a scale to zero takes `ready_delay` to drain, a scale up
    `ready_delay` to become ready. All methods run on the emulator's event loop.
    """

    emu: _Emulator
    _: KW_ONLY
    cluster: str
    namespace: str
    ready_delay: float
    truth: GroundTruth | None
    # name -> (desired replicas, since monotonic)
    _targets: dict[str, tuple[int, float]] = field(default_factory=dict, init=False)
    _hashes: dict[str, str] = field(default_factory=dict, init=False)

    def template_hash(self, name: str) -> str:
        return self._hashes.setdefault(name, secrets.token_hex(5)[:9])

    def notice(self) -> None:
        """Record spec changes and bump metadata.generation, as the API server does on a spec write."""
        for name, obj in self.emu.live(DEPLOYMENTS, self.namespace).items():
            desired = int(obj.raw.get("spec", {}).get("replicas", 1))
            seen = self._targets.get(name)
            if seen is not None and seen[0] == desired:
                continue
            self._targets[name] = (desired, time.monotonic())
            if seen is not None:
                meta = obj.raw.get("metadata", {})
                obj.patch({"metadata": {"generation": int(meta.get("generation", 1)) + 1}})

    async def reconcile(self) -> None:
        self.notice()
        now = time.monotonic()
        for name, obj in self.emu.live(DEPLOYMENTS, self.namespace).items():
            desired, since = self._targets.get(name, (None, now))
            if desired is None:
                continue
            raw = obj.raw
            generation = int(raw.get("metadata", {}).get("generation", 1))
            status = raw.get("status", {})
            ready = int(status.get("readyReplicas") or 0)
            pods = len(self._pods(name))
            if pods < ready:
                # Pods deleted behind the controller's back stop being ready at once; their
                # replacements, like any new pod, are ready only after the delay.
                observed = int(status.get("observedGeneration") or generation)
                await self.emu.store(
                    DEPLOYMENTS,
                    self.namespace,
                    name,
                    {"status": _deployment_status(pods, observed, desired)},
                )
                self._targets[name] = (desired, now)
                self._record(name, pods)
                continue
            if now - since < self.ready_delay:
                continue
            if ready == desired and pods == desired and status.get("observedGeneration") == generation:
                continue
            await self._reconcile_pods(name, desired)
            new_status = _deployment_status(desired, generation, desired)
            await self.emu.store(DEPLOYMENTS, self.namespace, name, {"status": new_status})
            if ready != desired:
                self._record(name, desired)

    def _record(self, deployment: str, ready: int) -> None:
        if self.truth is not None:
            self.truth.record("kube.ready", cluster=self.cluster, deployment=deployment, ready_replicas=ready)

    def _pods(self, deployment: str) -> list[tuple[str, kmock.Object]]:
        return [
            (name, obj)
            for name, obj in self.emu.live(PODS, self.namespace).items()
            if obj.raw.get("metadata", {}).get("labels", {}).get("app") == deployment
        ]

    async def _reconcile_pods(self, deployment: str, desired: int) -> None:
        pods = self._pods(deployment)
        for name, _ in pods[desired:][::-1]:  # newest first, like a ReplicaSet scaling down
            await self.emu.remove(PODS, self.namespace, name)
        for _ in range(desired - len(pods)):
            pod = _pod(deployment, self.namespace, self.template_hash(deployment))
            await self.emu.store(PODS, self.namespace, pod["metadata"]["name"], pod)

    async def run(self, *also: Callable[[], Any]) -> None:
        """The controllers' loop: this one, then the others that share it (the HPA controller)."""
        while True:
            await self.reconcile()
            for step in also:
                await step()
            await asyncio.sleep(_TICK_S)


def _hpa_invalid(hpa: Mapping[str, Any]) -> str | None:
    """The API server's validation of an autoscaling/v2 HorizontalPodAutoscaler spec, or None."""
    spec = hpa.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    problems = [f"spec.scaleTargetRef.{key}: Required value" for key in ("kind", "name") if not ref.get(key)]
    minimum, maximum = spec.get("minReplicas"), spec.get("maxReplicas")
    if minimum is not None and (not isinstance(minimum, int) or minimum < 1):
        problems.append(f"spec.minReplicas: Invalid value: {minimum}: must be greater than or equal to 1")
    if not isinstance(maximum, int) or maximum < 1:
        problems.append(f"spec.maxReplicas: Invalid value: {maximum}: must be greater than 0")
    elif isinstance(minimum, int) and maximum < minimum:
        problems.append(
            f"spec.maxReplicas: Invalid value: {maximum}: must be greater than or equal to `minReplicas`"
        )
    return ", ".join(problems) or None


def _condition(kind: str, status: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if status else "False", "reason": reason, "message": message}


@dataclass(eq=False)
class _HpaController:
    """The metrics-free part of the HorizontalPodAutoscaler controller (see the module docstring)."""

    emu: _Emulator
    replicas: _ReplicaController
    _: KW_ONLY
    cluster: str
    namespace: str
    sync_s: float
    truth: GroundTruth | None
    _last: float = field(default=0.0, init=False)

    async def reconcile(self) -> None:
        now = time.monotonic()
        if now - self._last < self.sync_s:
            return
        self._last = now
        deployments = self.emu.live(DEPLOYMENTS, self.namespace)
        for name, hpa in self.emu.live(HPAS, self.namespace).items():
            raw = hpa.raw
            spec, status = raw.get("spec") or {}, dict(raw.get("status") or {})
            ref = spec.get("scaleTargetRef") or {}
            target = deployments.get(ref.get("name", "")) if ref.get("kind") == "Deployment" else None
            if target is None:
                conditions = [
                    _condition(
                        "AbleToScale",
                        False,
                        "FailedGetScale",
                        f"the HPA controller was unable to get the target's current scale: "
                        f'{str(ref.get("kind", "")).lower()}s "{ref.get("name")}" not found',
                    )
                ]
                await self._write_status(name, status, {"conditions": conditions})
                continue
            current = int(target.raw.get("spec", {}).get("replicas", 1))
            minimum, maximum = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1)
            able = _condition(
                "AbleToScale",
                True,
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale",
            )
            if current == 0 and minimum != 0:
                desired, rescale = 0, False
                conditions = [
                    able,
                    _condition(
                        "ScalingActive",
                        False,
                        "ScalingDisabled",
                        "scaling is disabled since the replica count of the target is zero",
                    ),
                ]
            elif current > maximum or current < minimum:
                desired, rescale = (maximum, True) if current > maximum else (minimum, True)
                limited = (
                    ("TooManyReplicas", "more than the maximum")
                    if current > maximum
                    else (
                        "TooFewReplicas",
                        "less than the minimum",
                    )
                )
                conditions = [
                    _condition(
                        "AbleToScale",
                        True,
                        "SucceededRescale",
                        f"the HPA controller was able to update the target scale to {desired}",
                    ),
                    _condition(
                        "ScalingLimited",
                        True,
                        limited[0],
                        f"the desired replica count is {limited[1]} replica count",
                    ),
                ]
            else:
                desired, rescale = int(status.get("desiredReplicas") or 0), False
                conditions = [
                    able,
                    _condition(
                        "ScalingActive",
                        False,
                        "FailedGetResourceMetric",
                        "the HPA was unable to compute the replica count: no metrics server in the sandbox",
                    ),
                ]
            new: dict[str, Any] = {
                "currentReplicas": current or None,
                "desiredReplicas": desired,
                "conditions": conditions,
            }
            if rescale:
                await self.emu.store(
                    DEPLOYMENTS,
                    self.namespace,
                    target.raw["metadata"]["name"],
                    {"spec": {"replicas": desired}},
                )
                self.replicas.notice()
                new["lastScaleTime"] = _now_iso()
                if self.truth is not None:
                    self.truth.record(
                        "kube.hpa_rescale",
                        cluster=self.cluster,
                        hpa=name,
                        deployment=target.raw["metadata"]["name"],
                        replicas_from=current,
                        replicas_to=desired,
                    )
            await self._write_status(name, status, new)

    async def _write_status(self, name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Store the status when it changed. Conditions are set one type at a time, as the
        controller's setCondition does: the others stay, and one keeps its lastTransitionTime
        while its status and reason do not change."""
        stamp = _now_iso()
        by_type = {c.get("type"): c for c in old.get("conditions") or []}
        for cond in new.get("conditions", []):
            prior = by_type.get(cond["type"])
            same = prior is not None and (prior.get("status"), prior.get("reason")) == (
                cond["status"],
                cond["reason"],
            )
            since = prior.get("lastTransitionTime", stamp) if same and prior is not None else stamp
            by_type[cond["type"]] = {**cond, "lastTransitionTime": since}
        order = ("AbleToScale", "ScalingActive", "ScalingLimited")
        conditions = sorted(
            by_type.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else 9
        )
        merged = {**old, **{k: v for k, v in new.items() if k != "conditions"}, "conditions": conditions}
        merged = {k: v for k, v in merged.items() if v is not None}
        if merged == old:
            return
        # a merge patch: None removes a field (currentReplicas 0 is omitted, as Go's omitempty)
        patch = {**{k: None for k in old if k not in merged}, **merged}
        await self.emu.store(HPAS, self.namespace, name, {"status": patch})


class _NoResolver:
    """Stands in for kmock.Server's resolver patch once it has been undone."""

    async def __aexit__(self, *exc: object) -> None:
        return None


@contextlib.asynccontextmanager
async def _serve_http(emu: _Emulator) -> AsyncIterator[kmock.Server]:
    server = kmock.Server(emu)
    with _RESOLVER_LOCK:
        await server.__aenter__()
        interceptor = server._managed_interceptor
        if interceptor is not None:
            await interceptor.__aexit__(None, None, None)
        server._managed_interceptor = _NoResolver()  # type: ignore[assignment]
    try:
        yield server
    finally:
        await server.__aexit__(None, None, None)


class RegionalKube:
    """One region's EKS API server: Namespace, Deployments and their Pods, over real HTTP."""

    def __init__(
        self,
        *,
        cluster_name: str,
        namespace: str,
        deployments: Mapping[str, int],
        ready_delay: float = 0.3,
        truth: GroundTruth | None = None,
        verify_token: Callable[[str], str | None] | None = None,
        hpa_sync_s: float = 0.1,
    ) -> None:
        self._verify_token = verify_token
        self._hpa_sync_s = hpa_sync_s
        self.cluster_name = cluster_name
        self.namespace = namespace
        self._deployments = dict(deployments)
        self._ready_delay = ready_delay
        self._truth = truth
        self._emu: _Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._url: str | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sandbox-kube-{cluster_name}", daemon=True)

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError(f"RegionalKube {self.cluster_name} is not started")
        return self._url

    def start(self) -> RegionalKube:
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError(f"RegionalKube {self.cluster_name} did not start within 30 s")
        if self._startup_error is not None:
            raise RuntimeError(f"RegionalKube {self.cluster_name} failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed by a concurrent stop
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(10)

    def ready_replicas(self, name: str) -> int:
        """status.readyReplicas of a Deployment as the API would serve it now (0 when absent)."""

        async def read() -> int:
            assert self._emu is not None
            obj = self._emu.live(DEPLOYMENTS, self.namespace).get(name)
            if obj is None:
                raise KeyError(f"no Deployment {self.namespace}/{name} in {self.cluster_name}")
            return int(obj.raw.get("status", {}).get("readyReplicas") or 0)

        if self._loop is None:
            raise RuntimeError(f"RegionalKube {self.cluster_name} is not started")
        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(10)

    @property
    def requests(self) -> list[KubeRequest]:
        """Every request the API server received, oldest first."""
        if self._emu is None:
            return []
        return [
            KubeRequest(
                method=str(req.method.value),
                path=req.url.path,
                query=dict(req.params),
                headers=httpx.Headers(dict(req.headers)),
                body=bytes(req.body),
            )
            for req in list(self._emu)
        ]

    # -- the event-loop thread ---------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - surfaced to start() instead of dying silently
            self._startup_error = exc
        finally:
            self._started.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        emu = _Emulator()
        emu.verify_token = self._verify_token
        emu.truth, emu.cluster = self._truth, self.cluster_name
        controller = _ReplicaController(
            emu,
            cluster=self.cluster_name,
            namespace=self.namespace,
            ready_delay=self._ready_delay,
            truth=self._truth,
        )
        hpa = _HpaController(
            emu,
            controller,
            cluster=self.cluster_name,
            namespace=self.namespace,
            sync_s=self._hpa_sync_s,
            truth=self._truth,
        )
        self._seed(emu, controller)
        self._react(emu, controller)
        self._emu = emu
        async with emu, _serve_http(emu) as server:
            self._url = f"http://127.0.0.1:{server.port}"
            task = asyncio.create_task(
                controller.run(hpa.reconcile), name=f"kube-controller-{self.cluster_name}"
            )
            self._started.set()
            try:
                await self._stopping.wait()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _seed(self, emu: _Emulator, controller: _ReplicaController) -> None:
        ns = self.namespace
        emu.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False)
        emu.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"status"})
        emu.resources["apps/v1/deployments"] = kmock.ResourceInfo(
            kind="Deployment", namespaced=True, subresources={"scale", "status"}
        )
        emu.objects[NAMESPACES, None, ns] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now_iso()},
            "status": {"phase": "Active"},
        }
        for name, replicas in self._deployments.items():
            emu.objects[DEPLOYMENTS, ns, name] = _deployment(name, ns, replicas)
            for _ in range(replicas):
                pod = _pod(name, ns, controller.template_hash(name))
                emu.objects[PODS, ns, pod["metadata"]["name"]] = pod
        controller.notice()

    def _react(self, emu: _Emulator, controller: _ReplicaController) -> None:
        ns = self.namespace

        def deployment_or_404(request: kmock.Request) -> kmock.Object:
            obj = emu.live(DEPLOYMENTS, request.namespace).get(request.name or "")
            if obj is None:
                raise kmock.KubernetesError(
                    status=404,
                    reason="NotFound",
                    message=f'deployments.apps "{request.name}" not found',
                    details={"name": request.name, "group": "apps", "kind": "deployments"},
                )
            return obj

        def scale_of(obj: kmock.Object) -> dict[str, Any]:
            raw = obj.raw
            meta = raw.get("metadata", {})
            labels = raw.get("spec", {}).get("selector", {}).get("matchLabels", {})
            return {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {
                    "name": meta.get("name"),
                    "namespace": meta.get("namespace"),
                    "uid": meta.get("uid"),
                    "creationTimestamp": meta.get("creationTimestamp"),
                },
                "spec": {"replicas": int(raw.get("spec", {}).get("replicas", 1))},
                "status": {
                    "replicas": int(raw.get("status", {}).get("replicas") or 0),
                    "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
                },
            }

        async def read_scale(request: kmock.Request) -> dict[str, Any]:
            return scale_of(deployment_or_404(request))

        def invalid(request: kmock.Request, kind: str, exc: Exception) -> kmock.KubernetesError:
            return kmock.KubernetesError(
                status=422,
                reason="Invalid",
                message=f'{kind} "{request.name}" is invalid: {exc}',
                details={"name": request.name, "kind": kind.split(".")[0].lower()},
            )

        def requested(request: kmock.Request, current: dict[str, Any], kind: str) -> dict[str, Any]:
            """What a PATCH (merge/strategic/JSON patch of `current`) or a PUT asks for."""
            try:
                if request.method.value == "PATCH":
                    patched = kmock.Object(current)
                    patched.patch(request.data)
                    return dict(patched.raw)
                return dict(request.data)
            except Exception as exc:  # any malformed patch is the client's 422
                raise invalid(request, kind, exc) from exc

        async def write_scale(request: kmock.Request) -> dict[str, Any]:
            body = requested(request, scale_of(deployment_or_404(request)), "Scale.autoscaling")
            replicas = body.get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid(
                    request,
                    "Scale.autoscaling",
                    ValueError(
                        f"spec.replicas: Invalid value: {replicas!r}: must be greater than or equal to 0"
                    ),
                )
            await emu.store(
                DEPLOYMENTS, request.namespace or ns, request.name or "", {"spec": {"replicas": replicas}}
            )
            controller.notice()
            return scale_of(deployment_or_404(request))

        async def write_deployment(request: kmock.Request) -> dict[str, Any]:
            """PATCH (merge/strategic/JSON patch) or PUT of a Deployment; status is not writable here."""
            current = deployment_or_404(request).raw
            body = requested(request, current, "Deployment.apps")
            body["status"] = current.get("status", {})
            await emu.store(DEPLOYMENTS, request.namespace or ns, request.name or "", body, replace=True)
            controller.notice()
            return deployment_or_404(request).raw

        def list_selected(request: kmock.Request) -> dict[str, Any]:
            selector = request.params.get("labelSelector", "")
            items = []
            resource = request.resource if request.resource is not None else kmock.resource()
            for obj in emu.live(resource, request.namespace).values():
                labels = obj.raw.get("metadata", {}).get("labels", {})
                try:
                    if label_selector_matches(selector, labels):
                        items.append(obj.raw)
                except ValueError as exc:
                    raise kmock.KubernetesError(
                        status=400, reason="BadRequest", message=str(exc), details={"causes": [str(exc)]}
                    ) from exc
            return {"metadata": {"resourceVersion": "..."}, "items": items}

        def namespaces(request: kmock.Request) -> dict[str, Any]:
            """kmock parses /api/v1/namespaces/{name} as a namespace prefix, not a Namespace object."""
            live = emu.live(NAMESPACES)
            name = request.url.path.rstrip("/").removeprefix("/api/v1/namespaces").strip("/")
            if not name:
                return {
                    "apiVersion": "v1",
                    "kind": "NamespaceList",
                    "metadata": {},
                    "items": [o.raw for o in live.values()],
                }
            if name not in live:
                raise kmock.KubernetesError(
                    status=404,
                    reason="NotFound",
                    message=f'namespaces "{name}" not found',
                    details={"name": name, "kind": "namespaces"},
                )
            return live[name].raw

        async def write_hpa(request: kmock.Request) -> dict[str, Any]:
            """Create (POST), patch or replace an HPA, refusing what the API server's validation refuses."""
            namespace = request.namespace or ns
            if request.method.value == "POST":
                body = dict(request.data or {})
                name = str((body.get("metadata") or {}).get("name") or "")
                if name in emu.live(HPAS, namespace):
                    raise kmock.KubernetesError(
                        status=409,
                        reason="AlreadyExists",
                        message=f'horizontalpodautoscalers.autoscaling "{name}" already exists',
                        details={"name": name, "group": "autoscaling", "kind": "horizontalpodautoscalers"},
                    )
                meta = body.setdefault("metadata", {})
                meta.update(
                    namespace=namespace,
                    uid=str(uuid.uuid4()),
                    creationTimestamp=_now_iso(),
                    generation=1,
                )
                body.setdefault("spec", {}).setdefault("minReplicas", 1)  # the API server's default
                body.setdefault("status", {"desiredReplicas": 0})
                replace = True
            else:
                current = emu.live(HPAS, namespace).get(request.name or "")
                if current is None:
                    raise kmock.KubernetesError(
                        status=404,
                        reason="NotFound",
                        message=f'horizontalpodautoscalers.autoscaling "{request.name}" not found',
                        details={
                            "name": request.name,
                            "group": "autoscaling",
                            "kind": "horizontalpodautoscalers",
                        },
                    )
                body = requested(request, current.raw, "HorizontalPodAutoscaler.autoscaling")
                body["status"] = current.raw.get("status", {})
                name, replace = request.name or "", True
            problem = _hpa_invalid(body)
            if problem is not None:
                raise invalid(request, "HorizontalPodAutoscaler.autoscaling", ValueError(problem))
            return await emu.store(HPAS, namespace, name, body, replace=replace)

        emu["get", re.compile(r"/api/v1/namespaces(/[^/]+)?/?")] << namespaces
        (
            emu[HPAS, {kmock.method.POST, kmock.method.PATCH, kmock.method.PUT}, kmock.subresource(None)]
            << write_hpa
        )
        scale = emu[DEPLOYMENTS, kmock.subresource("scale")]
        scale["get"] << read_scale
        scale[{kmock.method.PATCH, kmock.method.PUT}] << write_scale
        emu[DEPLOYMENTS, {kmock.method.PATCH, kmock.method.PUT}, kmock.subresource(None)] << write_deployment
        emu[kmock.action.LIST][lambda req: "labelSelector" in req.params] << list_selected
