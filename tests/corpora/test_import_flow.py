"""The `import-dataset` flow on the real Prefect test server: one index and one write task per
input file, and the same dataset as `stablerep dataset import`."""

import json
from pathlib import Path

from flows.corpora import ImportRequest, import_dataset_flow
from stablerep.corpora.importer import ImportConfig
from stablerep.shards import read_manifest, verify_dataset
from stablerep.stages import ImportJob, import_dataset


def _shards(root):
    return {s["index"]: s["sha256"] for s in read_manifest(str(root))["shards"]}


def test_the_flow_fans_out_a_task_per_input_and_builds_what_the_cli_builds(corpus, prefect_harness, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    cfg = ImportConfig(captions_per_shard=32)
    tars = sorted(p for p in Path(corpus.webdataset).iterdir() if p.suffix == ".tar")
    state = import_dataset_flow(ImportRequest(sources=[str(corpus.webdataset)], root=str(tmp_path / "flow"),
                                              config=cfg), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["images"] == len(corpus.ok_pairs) and summary["skipped"] == 0
    assert verify_dataset(str(tmp_path / "flow"), deep=True).ok
    import_dataset(ImportJob(sources=[str(corpus.webdataset)], out=str(tmp_path / "cli"), config=cfg, progress=False))
    assert _shards(tmp_path / "flow") == _shards(tmp_path / "cli")  # the same shards, byte for byte

    import anyio

    async def task_names():
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            return sorted(r.name for r in runs)

    names = anyio.run(task_names)
    assert sum(n.startswith("index-input-") for n in names) == len(tars)
    assert sum(n.startswith("write-input-shards-") for n in names) == len(tars)
    # a rerun commits nothing new
    again = import_dataset_flow(ImportRequest(sources=[str(corpus.webdataset)], root=str(tmp_path / "flow"),
                                              config=cfg))
    assert again["written"] == 0 and again["skipped"] == summary["shards"]
    assert json.loads((tmp_path / "flow" / "plan.json").read_text())["kind"] == "import"
