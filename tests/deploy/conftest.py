"""A real federation on loopback for the deployment tests: a SuperLink with TLS and SuperNode
authentication, three registered SuperNodes (partitions 0..2) and one key nobody registered.
Every process runs in its own process group and is stopped by PID when the module is done.
"""

import pytest
from deploy_support import NUM_NODES, LocalFederation


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("federation")
    # One thread per SuperNode: three nodes share this machine's cores, as Ray's clients do.
    fed = LocalFederation(root, NUM_NODES, env={"FEDSAFE_CACHE": str(root / "cache"), "PYTHONUNBUFFERED": "1",
                                                "OMP_NUM_THREADS": "1"})
    try:
        fed.make_credentials(extra_keys=1)  # keys/node-3 is never registered
        fed.start_superlink()
        fed.register(range(NUM_NODES))
        for k in range(NUM_NODES):
            fed.start_supernode(k)
        fed.wait_online(NUM_NODES)
        yield fed
    finally:
        fed.stop()
