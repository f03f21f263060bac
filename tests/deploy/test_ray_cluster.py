"""A simulation too big for one machine runs on a multi-node Ray cluster: Flower's Ray backend
joins the cluster named by RAY_ADDRESS (deploy/ray-superlink.sh). Here the cluster is one
`ray start --head` on loopback, in its own temp dir and process group, stopped by PID: never
`ray stop`, which would stop every Ray cluster of this user on the machine."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from deploy_support import BIN, LocalFederation, Proc, free_port, write_run_config

from fedsafe.check_run import problems

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head(tmp_path):
    # Ray's socket paths must stay under ~107 characters: a short temp dir, not tmp_path.
    temp = Path(tempfile.mkdtemp(prefix="fedsafe-ray-"))
    port = free_port()
    command = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
               "--temp-dir", str(temp), "--num-cpus", "3", "--object-store-memory", str(100 * 2**20),
               "--include-dashboard", "false", "--disable-usage-stats",
               # every listening port chosen here: another Ray on this machine keeps its defaults
               "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
    head = Proc("ray-head", command, {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                                      "RAY_USAGE_STATS_ENABLED": "0"}, tmp_path / "ray-head.log")
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in head.text():
            assert head.alive() and time.monotonic() < deadline, head.text()[-3000:]
            time.sleep(0.3)
        session = temp / "session_latest"
        yield f"127.0.0.1:{port}", session
    finally:
        head.stop()
        shutil.rmtree(temp, ignore_errors=True)


def test_simulation_joins_an_existing_ray_cluster(ray_head, tiny_model_dir, tmp_path):
    address, session = ray_head
    config = write_run_config(tmp_path / "run.toml", tiny_model_dir, tmp_path / "runs",
                              **{"num-server-rounds": 1, "posthoc.enabled": False})
    with LocalFederation(tmp_path / "federation", 3, simulation=True, ray_address=address,
                         env={"FEDSAFE_CACHE": str(tmp_path / "cache")}) as fed:
        fed.start()
        text, run_dir = fed.run(config, timeout=400)

    assert run_dir is not None, text[-3000:]
    assert problems(run_dir) == [], text[-3000:]
    logs = session / "logs"
    # the simulation's Ray driver and its ClientApp actors ran inside the cluster started above
    assert list(logs.glob("python-core-driver-*.log")), sorted(p.name for p in logs.iterdir())
    assert len(list(logs.glob("python-core-worker-*.log"))) >= 1
