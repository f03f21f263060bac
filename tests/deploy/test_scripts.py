"""deploy/ credentials and connection entries, checked with the tools that consume them: openssl
for the certificates, flwr's own key loaders, tomllib for $FLWR_HOME/config.toml. Fast."""

import os
import subprocess
import tomllib

import pytest
from deploy_support import BIN, ROOT
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "FEDSAFE_DEPLOY_DIR": str(tmp_path / "deploy"), "FLWR_HOME": str(tmp_path / "flwr"),
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def script(name, *args, env):
    return subprocess.run(["bash", str(ROOT / "deploy" / name), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout


def test_certificates_name_every_host_and_chain_to_the_ca(env, tmp_path):
    script("certs.sh", "superlink.example.org", "10.1.2.3", env=env)
    certs = tmp_path / "deploy" / "certs"
    text = subprocess.run(["openssl", "x509", "-in", certs / "server.crt", "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    for name in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:superlink.example.org", "IP Address:10.1.2.3"):
        assert name in text
    subprocess.run(["openssl", "verify", "-CAfile", certs / "ca.crt", certs / "server.crt"], check=True,
                   capture_output=True)
    assert oct((certs / "server.key").stat().st_mode & 0o777) == "0o600"
    # a new host re-signs the server certificate with the same CA
    ca = (certs / "ca.crt").read_bytes()
    script("certs.sh", "other.example.org", env=env)
    assert (certs / "ca.crt").read_bytes() == ca


def test_node_keys_are_what_flower_loads(env, tmp_path):
    script("node-key.sh", "0", "1", env=env)
    keys = tmp_path / "deploy" / "keys"
    private = load_ssh_private_key((keys / "node-1").read_bytes(), None)  # as flower-supernode does
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert try_load_public_key(keys / "node-1.pub")  # as `flwr supernode register` does
    assert oct((keys / "node-1").stat().st_mode & 0o777) == "0o600"
    before = (keys / "node-0").read_bytes()
    script("node-key.sh", "0", env=env)
    assert (keys / "node-0").read_bytes() == before  # never overwritten


def test_connection_entry_keeps_other_connections(env, tmp_path):
    home = tmp_path / "flwr"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
                                      "options.num-supernodes = 10\n")
    script("certs.sh", env=env)
    script("connect.sh", "10.1.2.3:9093", env=env)
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["superlink"]["local"]["options"]["num-supernodes"] == 10
    assert config["superlink"]["default"] == "fedsafe"
    entry = config["superlink"]["fedsafe"]
    assert entry == {"address": "10.1.2.3:9093",
                     "root-certificates": str(tmp_path / "deploy" / "certs" / "ca.crt")}
    script("connect.sh", "127.0.0.1:9093", "--insecure", env=env)
    assert tomllib.loads((home / "config.toml").read_text())["superlink"]["fedsafe"] == {
        "address": "127.0.0.1:9093", "insecure": True}
