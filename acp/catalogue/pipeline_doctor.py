"""A Python agent in under 25 lines: the demo's traffic target, shipped in the package
(``agents/pipeline-doctor.md`` names it as its entrypoint). Run it, then ask it:

acp worker pipeline-doctor --redis redis://127.0.0.1:6379/0
acp send pipeline-doctor --wait --json '{"cmd": "PIPELINE_STATUS", "component_id": "etl",
    "data_flow": {"quality_score": 0.82, "processing_lag": "25m"}}'
"""

from acp.agents import Agent, Context
from acp.protocol import PipelineStatusCommand

agent = Agent("pipeline-doctor", tier="haiku", complexity="low")


@agent.command(PipelineStatusCommand)
async def diagnose(cmd: PipelineStatusCommand, ctx: Context) -> dict[str, object]:
    findings = []
    score = cmd.data_flow.quality_score
    if score is not None and score < 0.9:
        findings.append(f"quality score {score:.0%} is below 90%")
    lag = str(cmd.data_flow.processing_lag or "0m")
    if lag.endswith("m") and lag[:-1].isdigit() and int(lag[:-1]) > 15:
        findings.append(f"processing lag {lag} is over 15 minutes")
    ctx.log.info("diagnosed", component=cmd.component_id, findings=len(findings))
    return {"component_id": cmd.component_id, "healthy": not findings, "findings": findings}
