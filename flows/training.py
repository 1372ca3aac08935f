"""Train an encoder (StableRep, StableRep+, SimCLR or CLIP) on a shard dataset, on one machine or
on several nodes (the paper's 4 nodes x 8 GPUs: ``nnodes: 4, nproc_per_node: 8``).

With ``nnodes > 1`` the flow is a parent: it starts one flow run of the node deployment
(`train-encoder-node/gpu-node`, on the gpu pool) per node, all at once; each runs torchrun with this
node's ranks, and the nodes meet at the c10d rendezvous ``rdzv_endpoint``. The parent waits for
all of them; when one fails it cancels the others (a torchrun whose peer died would otherwise
wait in its collectives) and fails. A rerun resumes from the newest checkpoint in ``run_dir``,
which all nodes must share (an s3:// URL or a shared filesystem).
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.child_runs import cancel_runs, start_child_run, wait_for_runs
from stablerep.config import load_config
from tasks.training import publish_training, torchrun_options, train_encoder, training_summary


class TrainRequest(BaseModel):
    """A training run: a preset plus overrides, a dataset and where the run lives."""

    model_config = ConfigDict(extra="forbid")
    data: str = Field(description="shard dataset root (local or s3://)")
    run_dir: str = Field(description="run directory: config, metrics, checkpoints")
    preset: str = Field("tiny_cpu", description="a preset name (stablerep/presets/NAME.yaml) or a YAML path")
    overrides: list[str] = Field(default_factory=list, description="key=value, e.g. loss.method=simclr")
    launcher: Literal["subprocess", "torchrun", "inline"] = "subprocess"
    nproc_per_node: int = Field(1, ge=1, description="torchrun ranks (GPUs) on each node")
    nnodes: int = Field(1, ge=1, description="nodes, each a flow run of node_deployment (launcher torchrun)")
    rdzv_endpoint: str | None = Field(None, description="host:port of the c10d rendezvous, on one node's host")
    rdzv_timeout_s: float = Field(600, gt=0, description="how long nodes wait for each other to join")
    node_deployment: str = Field("train-encoder-node/gpu-node", description="the deployment each node runs as")
    timeout_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _nodes(self) -> TrainRequest:
        if self.nnodes > 1 and self.launcher != "torchrun":
            raise ValueError(f"nnodes={self.nnodes} needs launcher 'torchrun', not {self.launcher!r}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes={self.nnodes} needs rdzv_endpoint (host:port on one node's host)")
        return self


@flow(name="train-encoder", log_prints=True)
def train_encoder_flow(request: TrainRequest) -> dict[str, Any]:
    """Validate the config before any work, then train (a retry resumes from the last checkpoint)."""
    run = load_config(request.preset, request.overrides)
    if request.nnodes > 1:
        return _train_on_nodes(request, run)
    return train_encoder(run, request.data, request.run_dir, launcher=request.launcher,
                         nproc_per_node=request.nproc_per_node, timeout_s=request.timeout_s)


def _train_on_nodes(request: TrainRequest, run) -> dict[str, Any]:
    """Start one node flow run per node, wait for all; one failure cancels the rest."""
    from prefect.context import get_run_context

    logger = get_run_logger()
    job = str(get_run_context().flow_run.id)  # the rendezvous id: a rerun never meets a stale node
    params = request.model_dump(mode="json")
    nodes = {start_child_run(request.node_deployment, key=f"node-{rank}", name=f"node-{rank}",
                             parameters={"request": params, "node_rank": rank, "rdzv_id": job}): rank
             for rank in range(request.nnodes)}
    logger.info("%d nodes x %d ranks started as %s; rendezvous at %s", request.nnodes, request.nproc_per_node,
                request.node_deployment, request.rdzv_endpoint)
    failed: dict = {}  # flow run id -> what went wrong

    def check(node) -> bool:
        if node.state.is_completed():
            return True
        failed[node.id] = f"node {nodes[node.id]} (flow run {node.id}) {node.state.name}: {node.state.message or ''}"
        return False  # stop waiting: the others are cancelled below

    try:
        wait_for_runs(list(nodes), check)
    except BaseException:  # the parent itself is cancelled or crashes: take the nodes with it
        cancel_runs(list(nodes), "the parent training flow run stopped")
        raise
    if failed:
        first = next(iter(failed.values())).strip()
        states = cancel_runs([i for i in nodes if i not in failed], f"another node failed: {first}")
        others = ", ".join(f"node {nodes[i]} {state}" for i, state in states.items())
        raise RuntimeError(f"multi-node training failed: {first}; {others or 'no other node left'}. "
                           f"Checkpoints in {request.run_dir} are kept: a rerun resumes from the newest")
    summary = training_summary(request.run_dir)
    publish_training(run, request.run_dir, summary)
    return {**summary, "nnodes": request.nnodes, "nproc_per_node": request.nproc_per_node}


@flow(name="train-encoder-node", log_prints=True)
def train_encoder_node_flow(request: TrainRequest, node_rank: int, rdzv_id: str) -> dict[str, Any]:
    """One node of a multi-node training run: torchrun with ``nproc_per_node`` ranks that joins the
    rendezvous. No retry of its own: a lone node cannot rejoin a group whose peers went on."""
    run = load_config(request.preset, request.overrides)
    options = torchrun_options(request.nproc_per_node, request.nnodes, request.rdzv_endpoint, rdzv_id,
                               request.rdzv_timeout_s, node_rank)
    print(f"node {node_rank} of {request.nnodes}: torchrun {' '.join(options)}")
    return train_encoder.with_options(retries=0)(
        run, request.data, request.run_dir, launcher="torchrun", timeout_s=request.timeout_s,
        torchrun=options, publish=False)
