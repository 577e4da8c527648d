"""The preset dictionary for wire compression, written by this project.

ACP bodies are small (a few hundred bytes), too small for a compressor to
learn from; a preset dictionary gives it the protocol's recurring keys and
values up front. Everything here is our own: common ACP keys, typical values
and sample messages across many agent domains, so no one catalogue's wording
is favoured. The dictionary is packed with msgpack exactly as bodies are, so
a key like ``respond_format`` matches byte for byte, header included.

The content of dictionary 1 is frozen: frames in flight and in Redis refer to
it by id. Improve it by adding a dictionary, never by editing one.

Dictionary 2, the one new frames use, is dictionary 1's content behind zstd
entropy tables (a "full" dictionary). With raw content, zstd builds default
sequence tables for every frame; with tables in the dictionary the fast
strategy reuses them, and compressing a 370-byte envelope costs 28% less. The tables are
statistics of messages this project wrote (the samples below and the
``agents/`` catalogue); ``bench/dictionary.py`` shows how they were made and
what each dictionary gives.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import msgpack

__all__ = ["DICTIONARY_ID", "DICTIONARY_IDS", "dictionary", "dictionary_bytes", "sample_bodies"]

#: the dictionary new frames are compressed with
DICTIONARY_ID = 2
#: every dictionary a decoder knows
DICTIONARY_IDS = (1, 2)

_WORDS = [
    "true",
    "false",
    "null",
    "none",
    "ok",
    "error",
    "warning",
    "info",
    "critical",
    "high",
    "medium",
    "low",
    "minor",
    "major",
    "blocker",
    "pending",
    "queued",
    "running",
    "completed",
    "complete",
    "failed",
    "succeeded",
    "skipped",
    "blocked",
    "cancelled",
    "in_progress",
    "done",
    "todo",
    "ready",
    "active",
    "inactive",
    "healthy",
    "degraded",
    "unhealthy",
    "down",
    "up",
    "stable",
    "testing",
    "unstable",
    "passed",
    "passing",
    "failing",
    "green",
    "amber",
    "red",
    "improving",
    "decreasing",
    "increasing",
    "flat",
    "current",
    "outdated",
    "approved",
    "rejected",
    "draft",
    "review",
    "merged",
    "open",
    "closed",
    "verified",
    "unverified",
    "compliant",
    "non_compliant",
    "enabled",
    "disabled",
    "optimal",
    "acceptable",
    "poor",
    "excellent",
    "good",
    "fair",
    "professional",
    "production",
    "staging",
    "development",
    "prod",
    "dev",
    "local",
    "cloud",
    "on_prem",
    "hybrid",
    "primary",
    "replica",
    "broadcast_standard",
    "STRUCTURED_JSON",
    "JSON",
    "MARKDOWN",
    "TEXT",
    "PLAIN_TEXT",
    "YAML",
    "SUMMARY",
    "REPORT",
    "DETAILED",
    "BRIEF",
    "STATUS",
    "STATUS_ALL",
    "ASSIGN",
    "REVIEW",
    "AUDIT",
    "ANALYZE",
    "DEPLOY",
    "BUILD",
    "TEST",
    "REPORT",
    "SYNC",
    "PLAN",
    "DESIGN",
    "OPTIMIZE",
    "VALIDATE",
    "MIGRATE",
    "INTEGRATE",
    "ESCALATE",
    "HANDOFF",
    "QUERY",
    "UPDATE",
    "CREATE",
    "DELETE",
    "GENERATE",
    "ACK",
    "NACK",
    "CANCEL",
    "PING",
    "PONG",
    "RETRY",
    "RESUME",
    "PAUSE",
    "HEARTBEAT",
]

_KEYS = [
    "cmd",
    "to",
    "from",
    "agent",
    "agents",
    "task",
    "tasks",
    "workflow",
    "phase",
    "phases",
    "step",
    "steps",
    "stage",
    "stages",
    "parallel",
    "sequential",
    "delivers",
    "deliverables",
    "deliver",
    "outputs",
    "inputs",
    "input",
    "output",
    "respond_format",
    "hash",
    "component_id",
    "component",
    "components",
    "project",
    "project_id",
    "site_id",
    "page_id",
    "service_id",
    "pipeline_id",
    "model_id",
    "dataset_id",
    "job_id",
    "task_id",
    "request_id",
    "ticket_id",
    "user_id",
    "app_id",
    "repo",
    "branch",
    "commit",
    "req",
    "requirements",
    "constraints",
    "deps",
    "dependencies",
    "success_criteria",
    "acceptance_criteria",
    "scope",
    "priority",
    "deadline",
    "owner",
    "assignee",
    "assigned",
    "reviewer",
    "status",
    "state",
    "health",
    "progress",
    "summary",
    "details",
    "notes",
    "context",
    "reason",
    "rationale",
    "decision",
    "outcome",
    "result",
    "results",
    "report",
    "report_type",
    "type",
    "kind",
    "format",
    "version",
    "schema_version",
    "name",
    "title",
    "description",
    "id",
    "ids",
    "key",
    "value",
    "values",
    "metrics",
    "metric",
    "score",
    "quality_score",
    "confidence",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "coverage",
    "latency",
    "avg_latency",
    "p50",
    "p95",
    "p99",
    "throughput",
    "rate",
    "error_rate",
    "success_rate",
    "uptime",
    "availability",
    "count",
    "total",
    "completed",
    "in_progress",
    "blocked",
    "failed",
    "running",
    "pending",
    "passed",
    "skipped",
    "cost",
    "cost_usd",
    "budget",
    "spend",
    "tokens",
    "input_tokens",
    "output_tokens",
    "duration",
    "duration_ms",
    "elapsed",
    "timestamp",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "eta",
    "window",
    "period",
    "interval",
    "recommendations",
    "optimization",
    "optimizations",
    "issues",
    "findings",
    "risks",
    "risk",
    "risk_level",
    "severity",
    "vulnerabilities",
    "compliance",
    "remediation",
    "remediation_progress",
    "gaps",
    "compliance_gaps",
    "actions",
    "next_steps",
    "blockers",
    "dependencies_met",
    "integration",
    "integration_health",
    "critical_path",
    "infrastructure",
    "environment",
    "region",
    "cluster",
    "nodes",
    "instances",
    "replicas",
    "cpu",
    "memory",
    "storage",
    "disk",
    "network",
    "bandwidth",
    "queue",
    "queue_depth",
    "lag",
    "processing_lag",
    "backlog",
    "ingestion_rate",
    "batch_size",
    "data_flow",
    "data_platform",
    "pipelines",
    "pipeline",
    "analytics",
    "queries",
    "queries_day",
    "warehouse",
    "data_lake",
    "cost_trend",
    "performance",
    "security",
    "testing",
    "deployment",
    "monitoring",
    "alerts",
    "incidents",
    "tests",
    "test_results",
    "build_status",
    "deploy_status",
    "release",
    "version_tag",
    "artifacts",
    "files",
    "changes",
    "frontend",
    "backend",
    "api",
    "api_layer",
    "data_layer",
    "database",
    "schema",
    "tables",
    "endpoints",
    "services",
    "users",
    "sessions",
    "requests",
    "responses",
    "errors",
    "warnings",
    "logs",
    "events",
    "traces",
    "spans",
    "platform",
    "platforms",
    "channels",
    "audience",
    "content",
    "assets",
    "media",
    "images",
    "video",
    "audio",
    "copy",
    "specs",
    "spec",
    "parameters",
    "params",
    "config",
    "settings",
    "options",
    "features",
    "flags",
    "targets",
    "goals",
    "ideas",
    "frames",
    "themes",
    "patterns",
    "insights",
    "evidence",
    "sources",
    "references",
    "links",
    "questions",
    "answers",
    "asks",
    "position",
    "question",
    "verify",
    "query",
    "filters",
    "sort",
    "limit",
    "offset",
    "page",
]

_TERMS = """
api_gateway load_balancer message_queue event_bus cache_layer cdn object_storage data_warehouse
feature_store vector_index search_index auth_service user_service payment_service notification_service
analytics_pipeline etl_pipeline streaming_pipeline batch_job cron_job scheduler worker_pool
kubernetes docker terraform helm ci_cd github_actions monitoring alerting logging tracing dashboards
postgres mysql mongodb redis kafka spark airflow dbt snowflake bigquery clickhouse elasticsearch
python typescript javascript react nextjs nodejs golang rust swift kotlin graphql rest grpc websocket
unit_tests integration_tests e2e_tests load_tests regression_tests smoke_tests test_coverage
code_review pull_request static_analysis dependency_audit threat_model penetration_test
encryption_at_rest encryption_in_transit access_control rate_limiting input_validation audit_log
sql_injection xss csrf ssrf weak_session_mgmt secrets_exposure misconfiguration
gdpr hipaa soc2 pci_dss iso_27001 data_retention_policy privacy_policy consent_management
user_research personas journey_map wireframes prototype design_system style_guide usability_test
accessibility wcag contrast keyboard_navigation screen_reader responsive_layout dark_mode
market_research competitive_analysis positioning pricing go_to_market launch_plan roadmap
user_acquisition retention churn conversion funnel engagement activation revenue growth
campaign newsletter blog_post social_media video_script podcast_episode landing_page copywriting
seo keywords backlinks traffic impressions clicks ctr cpc roi ltv cac mrr arr
script_outline storyboard draft final_cut master mix edit render export publish
requirements_doc technical_spec architecture_diagram api_spec openapi_spec data_model erd
migration_plan rollback_plan runbook incident_report postmortem sla slo sli error_budget
capacity_planning cost_optimization autoscaling right_sizing reserved_instances spot_instances
model_training fine_tuning evaluation inference embeddings prompt_engineering rag retrieval
dataset labeling data_quality drift bias fairness explainability hyperparameters checkpoint
experiment hypothesis variant control sample_size significance confidence_interval
stakeholders sponsor team_lead product_manager engineering_manager designer analyst
sprint milestone backlog epic story ticket estimate velocity burndown retrospective standup
weekly daily monthly quarterly annual q1 q2 q3 q4 2024 2025 2026 _2024 _2025 _2026 v1 v2 v1.0 v2.0
healthy_status ok_status nominal within_budget over_budget on_track at_risk off_track
ms seconds minutes hours days weeks GB TB MB KB /day /hour /s req/s rps qps usd $ % x
"""


# Sample bodies in the three ACP shapes, written for this dictionary.
_SAMPLES: list[dict[str, Any]] = [
    {"cmd": "STATUS", "component_id": "checkout_service", "respond_format": "STRUCTURED_JSON"},
    {
        "cmd": "DEPLOY",
        "component_id": "payments_api",
        "environment": {"region": "eu-west-1", "cluster": "prod-a", "replicas": 6},
        "release": {"version_tag": "v2.14.0", "artifacts": ["docker_image", "helm_chart"]},
        "deliverables": ["rollout_report", "rollback_plan"],
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "cmd": "ANALYZE",
        "component_id": "recommendation_model",
        "metrics": {"accuracy": 0.91, "precision": 0.88, "recall": 0.84, "latency": "45ms"},
        "dataset_id": "clickstream_q3",
        "outputs": ["error_analysis", "feature_importance"],
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "cmd": "REVIEW",
        "component_id": "login_form",
        "scope": ["accessibility", "performance", "security"],
        "constraints": ["wcag_2_2_aa", "lcp_under_2s"],
        "deliverables": ["findings", "patch_suggestions"],
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "cmd": "TEST",
        "component_id": "mobile_onboarding",
        "test_results": {"passed": 412, "failed": 3, "skipped": 9, "coverage": 0.87},
        "failures": ["test_push_permission", "test_deep_link_resume"],
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "cmd": "OPTIMIZE",
        "component_id": "search_index",
        "performance": {"p50": "35ms", "p95": "180ms", "throughput": "1.2k/s"},
        "infrastructure": {
            "nodes": 3,
            "memory": "64GB",
            "storage_used": "1.8TB",
            "compute_cost": "$95/day",
        },
        "targets": {"p95": "100ms"},
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "cmd": "GENERATE",
        "component_id": "launch_campaign",
        "content_specs": {
            "audience": "developers",
            "tone": "direct",
            "length": "short",
            "channels": ["blog", "newsletter"],
        },
        "deliverables": ["draft_copy", "headline_variants"],
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "cmd": "AUDIT",
        "component_id": "billing_service",
        "scan_results": {"critical": 0, "high": 2, "medium": 7, "low": 15},
        "findings": ["outdated_dependency", "missing_rate_limit"],
        "compliance": {"soc2": 0.91, "gdpr": 0.88},
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "cmd": "ASSIGN",
        "to": "backend_engineer",
        "component_id": "order_history_api",
        "req": {
            "fn": ["list_orders", "get_order"],
            "constraints": ["paginated", "p95_under_200ms"],
        },
        "deps": ["database_schema"],
        "deliver": ["endpoint", "openapi_spec", "tests"],
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "cmd": "PLAN",
        "project_id": "data_migration",
        "requirements": ["zero_downtime", "rollback_ready"],
        "success_criteria": ["row_counts_match", "checksums_match"],
        "deadline": "2026-12-15",
        "respond_format": "STRUCTURED_JSON",
    },
    {
        "build_status": {"running": 4, "completed": 118, "failed": 2, "success_rate": 0.98},
        "deployment": {"environment": "production", "version": "v3.2.1", "health": "healthy"},
        "recommendations": ["cache_dependencies", "split_slow_tests"],
        "hash": "devops_status",
    },
    {
        "model_status": {
            "training": "completed",
            "accuracy": 0.93,
            "drift": "low",
            "latency": "22ms",
        },
        "serving": {"replicas": 4, "error_rate": 0.002, "throughput": "850/s"},
        "optimization": ["quantize_weights", "batch_requests"],
        "hash": "ml_status",
    },
    {
        "frontend_status": {"lighthouse": 94, "bundle_size": "182KB", "lcp": "1.6s", "cls": 0.02},
        "accessibility": {"violations": 1, "level": "AA"},
        "next_steps": ["lazy_load_images", "fix_contrast_issue"],
        "hash": "frontend_status",
    },
    {
        "qa_status": {
            "test_coverage": 0.86,
            "open_bugs": {"critical": 0, "high": 3, "medium": 11},
            "regressions": 1,
        },
        "release_readiness": "blocked",
        "blockers": ["payment_timeout_bug"],
        "hash": "qa_status",
    },
    {
        "project_status": {"components_total": 9, "completed": 5, "in_progress": 3, "blocked": 1},
        "integration_health": {
            "api_layer": "stable",
            "data_layer": "testing",
            "frontend": "stable",
        },
        "critical_path": ["auth_service", "payment_flow"],
        "hash": "project_status",
    },
    {
        "security_status": {"risk_level": "low", "remediation_progress": 0.8, "open_findings": 4},
        "compliance_gaps": ["key_rotation_policy"],
        "recommendations": ["enable_mfa", "rotate_credentials"],
        "hash": "security_status",
    },
    {
        "content_status": {"drafts": 6, "published": 14, "engagement_rate": 0.047, "reach": 18200},
        "performance": {"ctr": 0.031, "conversion_rate": 0.012},
        "optimization": ["test_headlines", "post_at_peak_hours"],
        "hash": "content_status",
    },
    {
        "infrastructure_status": {"cpu": 0.62, "memory": 0.71, "disk": 0.48, "uptime": 0.9995},
        "alerts": {"critical": 0, "warning": 2},
        "cost": {"daily": "$412", "trend": "stable"},
        "hash": "infra_status",
    },
    {
        "workflow": "feature_delivery",
        "design": {"agent": "ux-designer", "delivers": "wireframes"},
        "build": {
            "parallel": [
                {"agent": "frontend-developer", "task": "implement_ui"},
                {"agent": "backend-developer", "task": "implement_api"},
            ]
        },
        "verify": {
            "sequential": [
                {"agent": "qa-engineer", "task": "regression_suite"},
                {"agent": "security-auditor", "task": "security_review"},
            ]
        },
        "release": {"agent": "devops-engineer", "delivers": "production_deploy"},
    },
    {
        "project": "mobile_launch",
        "phases": [
            {"phase": "research", "agents": ["product-strategist"]},
            {
                "phase": "build",
                "agents": ["mobile-developer", "backend-developer"],
                "parallel": True,
            },
            {
                "phase": "launch",
                "agents": ["marketing-strategist", "devops-engineer"],
                "parallel": True,
            },
        ],
    },
    {
        "decision": "choose_message_broker",
        "sequential_review": [
            {"agent": "systems-architect", "asks": "Which option meets the latency goal?"},
            {"agent": "cost-analyst", "asks": "What does each cost at peak load?"},
        ],
        "outcome": "adopt_streams_with_consumer_groups",
    },
]


@functools.cache
def dictionary_bytes() -> bytes:
    """Raw-content dictionary: words and keys first, whole sample bodies last.

    zstd finds nearer (later) content cheaper to reference, so the most
    message-like material sits at the end.
    """
    parts = [msgpack.packb(w) for w in dict.fromkeys(_TERMS.split() + _WORDS + _KEYS)]
    parts.extend(msgpack.packb(sample) for sample in _SAMPLES)
    return b"".join(parts)


def sample_bodies() -> list[dict[str, Any]]:
    """The sample messages in dictionary 1 (copies): training data for tools."""
    return copy.deepcopy(_SAMPLES)


# zstd's entropy header of dictionary 2 (magic, id, literal and sequence tables,
# repeat offsets), as ``bench/dictionary.py --make-entropy`` printed it with
# libzstd 1.5.7 (backports.zstd 1.8). Frozen.
_ENTROPY_2 = bytes.fromhex(
    "37a430ec6e279a0851107844c639ccc033620940e2d56c3dbe49a3138ef31194"
    "4f81bc497ce5c7c3b2fa7051fdaabffcec2144824d325a694913d94b2216c053"
    "89b9850ef511528e07361bf6f78a2b1f8186e27aeb12c07495c8f30010381010"
    "8945467281c5170004e0ca94500f0b0862381c86510c030000000000000038cc"
    "3100000000000018007403000044a6eaa80485e17224c6631846a22005143040"
    "5400000000010000000400000008000000"
)


def dictionary(dict_id: int) -> tuple[bytes, bool]:
    """``(data, full)`` for a known dictionary id: the bytes, and whether they are
    a full zstd dictionary (entropy tables, then content) or raw content."""
    if dict_id == 1:
        return dictionary_bytes(), False
    if dict_id == 2:
        return _ENTROPY_2 + dictionary_bytes(), True
    raise KeyError(f"unknown dictionary id {dict_id}")
