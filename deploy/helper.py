"""What the deploy/ scripts do in Python: SuperNode key pairs and the `flwr` connection entry.

    python deploy/helper.py node-key PATH              # PATH (private) + PATH.pub, EC P-384, OpenSSH
    python deploy/helper.py connection NAME ADDRESS [--root-certificates CA | --insecure] [--default]
        [--num-supernodes N --cpus-per-client C --gpus-per-client G]   # a simulation SuperLink

Flower 1.42 SuperNode authentication takes an EC key on a NIST curve in OpenSSH format: the
SuperNode signs with the private key (`--auth-supernode-private-key`), the SuperLink knows the
public key once `flwr supernode register PATH.pub` was run against it. `ssh-keygen -t ecdsa -b 384`
makes the same files; this needs no OpenSSH install.

The connection entry is the `[superlink.NAME]` table of `$FLWR_HOME/config.toml` (default
~/.flwr) that `flwr run . NAME` and `flwr supernode register ... NAME` read.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path


def node_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    Path(f"{path}.pub").write_bytes(public + f" {path.name}\n".encode())


def flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


def write_connection(name: str, address: str, root_certificates: str | None, insecure: bool,
                     default: bool, simulation: dict | None = None) -> Path:
    """Add or replace `[superlink.NAME]`, keeping every other table of config.toml.
    `simulation`: {num-supernodes, cpus, gpus} for a SuperLink started with --simulation."""
    import tomli_w  # a dependency of flwr

    path = flwr_home() / "config.toml"
    config = tomllib.loads(path.read_text()) if path.is_file() else {}
    links = config.setdefault("superlink", {})
    entry: dict = {"address": address}
    if insecure:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(Path(root_certificates).expanduser().resolve())
    if simulation:
        # No backend.init-args: Ray refuses num-cpus/num-gpus when it joins an existing cluster.
        entry["options"] = {"num-supernodes": simulation["num-supernodes"], "backend": {"client-resources": {
            "num-cpus": int(simulation["cpus"]), "num-gpus": float(simulation["gpus"])}}}
    links[name] = entry
    if default or "default" not in links:
        links["default"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(config))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/helper.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    key = sub.add_parser("node-key", help="write an EC P-384 key pair for SuperNode authentication")
    key.add_argument("path", type=Path)
    conn = sub.add_parser("connection", help="write [superlink.NAME] into $FLWR_HOME/config.toml")
    conn.add_argument("name")
    conn.add_argument("address", help="host:port of the SuperLink")
    tls = conn.add_mutually_exclusive_group(required=True)
    tls.add_argument("--root-certificates", help="the CA certificate that signed the SuperLink's")
    tls.add_argument("--insecure", action="store_true", help="plain HTTP (a quick local try only)")
    conn.add_argument("--default", action="store_true", help="also make it the default connection")
    conn.add_argument("--num-supernodes", type=int, help="simulation SuperLink: clients to simulate")
    conn.add_argument("--cpus-per-client", type=int, default=1, help="simulation: Ray CPUs per client")
    conn.add_argument("--gpus-per-client", type=float, default=0, help="simulation: Ray GPUs per client")
    args = parser.parse_args(argv)
    if args.command == "node-key":
        node_key(args.path)
        print(f"{args.path} (private, stays on the SuperNode)  {args.path}.pub (register it)")
    else:
        simulation = None if args.num_supernodes is None else {
            "num-supernodes": args.num_supernodes, "cpus": args.cpus_per_client, "gpus": args.gpus_per_client}
        path = write_connection(args.name, args.address, args.root_certificates, args.insecure, args.default,
                                simulation)
        print(f"{path}: [superlink.{args.name}] address = {args.address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
