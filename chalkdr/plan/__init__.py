"""The provision plan: what AWS should look like for a topology, what it looks like, and the difference.

Pure functions only, no Prefect and no boto3. `desired_state(topology, observed)` says what the
failover plumbing must be (it needs a few observed facts the topology cannot know: ALB DNS
names, cluster ARNs, subnets); `plan_for(topology, observed)` compares resource by resource and
field by field. The flow reads AWS, calls these, shows the plan, and applies only the changes it
lists, stage by stage along the stage graph `apply_stages` gives, so that a second run against a
converged world is an empty plan and makes no mutating call at all.

One module per system (arc, route53, dynamodb, msk, aurora, alarms, eks), each with the same shape;
`chalkdr.plan.core` is what they share and `chalkdr.plan.systems` registers them.
"""

from chalkdr.plan.alarms import ALARM_DATAPOINTS_TO_ALARM
from chalkdr.plan.alarms import ALARM_EVALUATION_PERIODS
from chalkdr.plan.alarms import ALARM_PERIOD_S
from chalkdr.plan.alarms import AlarmSpec
from chalkdr.plan.alarms import ObservedAlarm
from chalkdr.plan.alarms import ObservedAlarms
from chalkdr.plan.alarms import alarm_prefix
from chalkdr.plan.arc import ArcClusterSpec
from chalkdr.plan.arc import ArcView
from chalkdr.plan.arc import ClusterEndpoint
from chalkdr.plan.arc import ControlPanelSpec
from chalkdr.plan.arc import ObservedArc
from chalkdr.plan.arc import ObservedArcCluster
from chalkdr.plan.arc import ObservedControlPanel
from chalkdr.plan.arc import ObservedRoutingControl
from chalkdr.plan.arc import ObservedSafetyRule
from chalkdr.plan.arc import RoutingControlSpec
from chalkdr.plan.arc import RoutingControlStatesSpec
from chalkdr.plan.arc import SafetyRuleSpec
from chalkdr.plan.arc import arc_view
from chalkdr.plan.arc import routing_control_names
from chalkdr.plan.arc import safety_rule_name
from chalkdr.plan.aurora import GlobalClusterSpec
from chalkdr.plan.aurora import ObservedAurora
from chalkdr.plan.aurora import ObservedDbCluster
from chalkdr.plan.aurora import ObservedGlobalCluster
from chalkdr.plan.aurora import SecondaryClusterSpec
from chalkdr.plan.core import MANAGED_TAG_KEY
from chalkdr.plan.core import MANAGED_TAGS
from chalkdr.plan.core import OWNER_TAG_KEY
from chalkdr.plan.core import RECOVERY_TAG
from chalkdr.plan.core import Action
from chalkdr.plan.core import Change
from chalkdr.plan.core import ChangeResult
from chalkdr.plan.core import Check
from chalkdr.plan.core import FieldDiff
from chalkdr.plan.core import Findings
from chalkdr.plan.core import Plan
from chalkdr.plan.core import PlanError
from chalkdr.plan.core import ResourceKind
from chalkdr.plan.core import Spec
from chalkdr.plan.core import Stage
from chalkdr.plan.core import StageDef
from chalkdr.plan.core import WaitPolicy
from chalkdr.plan.core import compare
from chalkdr.plan.core import critical_path_s
from chalkdr.plan.core import normalize_dns
from chalkdr.plan.core import ownership_tags
from chalkdr.plan.core import plan_table_rows
from chalkdr.plan.core import render_plan_markdown
from chalkdr.plan.core import resource_ref
from chalkdr.plan.core import tag_list
from chalkdr.plan.dynamodb import GlobalTableSpec
from chalkdr.plan.dynamodb import ObservedDynamoDb
from chalkdr.plan.dynamodb import ObservedTable
from chalkdr.plan.dynamodb import online_store_tables
from chalkdr.plan.eks import ObservedDeployment
from chalkdr.plan.eks import ObservedEks
from chalkdr.plan.eks import ObservedEksClusters
from chalkdr.plan.msk import MskEndpoint
from chalkdr.plan.msk import ObservedMsk
from chalkdr.plan.msk import ObservedMskCluster
from chalkdr.plan.msk import ObservedReplicator
from chalkdr.plan.msk import ReplicatorSpec
from chalkdr.plan.msk import replicator_name
from chalkdr.plan.msk import replicator_names
from chalkdr.plan.msk import reverse_replicator_name
from chalkdr.plan.msk import reverse_replicator_names
from chalkdr.plan.route53 import AliasTarget
from chalkdr.plan.route53 import CalculatedCheckSpec
from chalkdr.plan.route53 import HealthCheckSpec
from chalkdr.plan.route53 import ObservedAlb
from chalkdr.plan.route53 import ObservedHealthCheck
from chalkdr.plan.route53 import ObservedRecord
from chalkdr.plan.route53 import ObservedRoute53
from chalkdr.plan.route53 import RecordSpec
from chalkdr.plan.route53 import RoutingControlCheckSpec
from chalkdr.plan.route53 import caller_reference
from chalkdr.plan.route53 import caller_reference_prefix
from chalkdr.plan.route53 import caller_reference_prefixes
from chalkdr.plan.route53 import check_ref
from chalkdr.plan.route53 import health_check_name
from chalkdr.plan.route53 import ownership_record_name
from chalkdr.plan.route53 import ownership_value
from chalkdr.plan.route53 import record_owner
from chalkdr.plan.route53 import set_identifier
from chalkdr.plan.systems import SYSTEMS
from chalkdr.plan.systems import DesiredState
from chalkdr.plan.systems import ObservedState
from chalkdr.plan.systems import System
from chalkdr.plan.systems import apply_stages
from chalkdr.plan.systems import compute_plan
from chalkdr.plan.systems import desired_state
from chalkdr.plan.systems import plan_for
from chalkdr.plan.systems import stage_defs

__all__ = [
    "ALARM_DATAPOINTS_TO_ALARM",
    "ALARM_EVALUATION_PERIODS",
    "ALARM_PERIOD_S",
    "MANAGED_TAGS",
    "MANAGED_TAG_KEY",
    "OWNER_TAG_KEY",
    "RECOVERY_TAG",
    "SYSTEMS",
    "Action",
    "AlarmSpec",
    "AliasTarget",
    "ArcClusterSpec",
    "ArcView",
    "CalculatedCheckSpec",
    "Change",
    "ChangeResult",
    "Check",
    "ClusterEndpoint",
    "ControlPanelSpec",
    "DesiredState",
    "FieldDiff",
    "Findings",
    "GlobalClusterSpec",
    "GlobalTableSpec",
    "HealthCheckSpec",
    "MskEndpoint",
    "ObservedAlarm",
    "ObservedAlarms",
    "ObservedAlb",
    "ObservedArc",
    "ObservedArcCluster",
    "ObservedAurora",
    "ObservedControlPanel",
    "ObservedDbCluster",
    "ObservedDeployment",
    "ObservedDynamoDb",
    "ObservedEks",
    "ObservedEksClusters",
    "ObservedGlobalCluster",
    "ObservedHealthCheck",
    "ObservedMsk",
    "ObservedMskCluster",
    "ObservedRecord",
    "ObservedReplicator",
    "ObservedRoute53",
    "ObservedRoutingControl",
    "ObservedSafetyRule",
    "ObservedState",
    "ObservedTable",
    "Plan",
    "PlanError",
    "RecordSpec",
    "ReplicatorSpec",
    "ResourceKind",
    "RoutingControlCheckSpec",
    "RoutingControlSpec",
    "RoutingControlStatesSpec",
    "SafetyRuleSpec",
    "SecondaryClusterSpec",
    "Spec",
    "Stage",
    "StageDef",
    "System",
    "WaitPolicy",
    "alarm_prefix",
    "apply_stages",
    "arc_view",
    "caller_reference",
    "caller_reference_prefix",
    "caller_reference_prefixes",
    "check_ref",
    "compare",
    "compute_plan",
    "critical_path_s",
    "desired_state",
    "health_check_name",
    "normalize_dns",
    "online_store_tables",
    "ownership_record_name",
    "ownership_tags",
    "ownership_value",
    "plan_for",
    "plan_table_rows",
    "record_owner",
    "render_plan_markdown",
    "replicator_name",
    "replicator_names",
    "resource_ref",
    "reverse_replicator_name",
    "reverse_replicator_names",
    "routing_control_names",
    "safety_rule_name",
    "set_identifier",
    "stage_defs",
    "tag_list",
]
