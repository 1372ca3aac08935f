"""Create (or update) the Docker work pools `docker-cpu` and `docker-gpu` on the Prefect server
that PREFECT_API_URL names; `deployments/stack.sh up` runs it when STACK_DOCKER=1.

    python deployments/docker_pools.py [--gpus all|none|N]

Each pool's base job template is prefect-docker's default with what belongs to the hosts:
- S3 access for every container: AWS_ENDPOINT_URL (and AWS_DEFAULT_REGION) as they are set here;
  AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are saved as Prefect Secret blocks and the template
  holds only references to them, which the worker resolves when it starts each container. The
  credentials are thus in no deployment, parameter, image or command line.
- docker-gpu: a request for the host's GPUs (device_requests, as `docker run --gpus all`) unless
  --gpus none, and an 8 GB /dev/shm for loader workers and NCCL; docker-cpu: 2 GB /dev/shm.
Deployment job variables (image, network_mode, volumes, env) merge on top of this template.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

SECRETS = {"AWS_ACCESS_KEY_ID": "stablerep-s3-access-key-id",
           "AWS_SECRET_ACCESS_KEY": "stablerep-s3-secret-access-key"}
PLAIN = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def save_secrets() -> dict[str, str]:
    """Secret blocks for the credentials in this environment; env entries that reference them."""
    from prefect.blocks.system import Secret

    present = [name for name in SECRETS if os.environ.get(name)]
    if not present:
        return {}
    if len(present) != len(SECRETS):
        raise SystemExit(f"error: set both {' and '.join(SECRETS)} (or neither)")
    env = {}
    for name, block in SECRETS.items():
        Secret(value=os.environ[name]).save(block, overwrite=True)
        env[name] = "{{ prefect.blocks.secret." + block + " }}"
    return env


def pool_template(env: dict[str, str], gpus: str | None) -> dict:
    from prefect_docker.worker import DockerWorker

    template = DockerWorker.get_default_base_job_template()
    # The env variable's default: the worker merges it with the deployment's env (and the flow
    # run's), then resolves the block references, for every flow run.
    template["variables"]["properties"]["env"]["default"] = env
    create = {"shm_size": "8g" if gpus is not None else "2g"}
    if gpus not in (None, "none"):
        count = -1 if gpus == "all" else int(gpus)
        create["device_requests"] = [{"driver": "nvidia", "count": count, "capabilities": [["gpu"]]}]
    template["variables"]["properties"]["container_create_kwargs"]["default"] = create
    return template


async def upsert_pool(name: str, template: dict) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=name, type="docker", base_job_template=template))
            return
        await client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", default="all", help="GPUs each docker-gpu container requests: all, none or a count")
    args = parser.parse_args(argv)
    if args.gpus not in ("all", "none") and not args.gpus.isdigit():
        print(f"error: --gpus must be all, none or a count, not {args.gpus!r}", file=sys.stderr)
        return 2
    if not os.environ.get("PREFECT_API_URL"):
        print("error: set PREFECT_API_URL (otherwise the pools land in a temporary server)", file=sys.stderr)
        return 2
    # The worker hands its own Prefect settings to every container; PREFECT_HOME must be the
    # container user's, not the worker host's path.
    env = {"PREFECT_HOME": "/home/stablerep/.prefect"}
    env.update({name: os.environ[name] for name in PLAIN if os.environ.get(name)})
    env.update(save_secrets())
    asyncio.run(upsert_pool("docker-cpu", pool_template(env, None)))
    asyncio.run(upsert_pool("docker-gpu", pool_template(env, args.gpus)))
    print(f"docker pools: docker-cpu, docker-gpu (GPUs: {args.gpus}); S3 env: {', '.join(sorted(k for k in env if k.startswith('AWS_'))) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
