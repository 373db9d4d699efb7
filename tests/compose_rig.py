"""Run docker-compose.yml's services as local processes, without Docker.

Each service's command runs with the environment the file gives it (.env.example standing in
for .env), the container's /app mapped to the repository and /results to a test folder. Where
the machine allows it (root and iproute2), every service gets its own network namespace on a
bridge, with its own address and an /etc/hosts (ip netns exec mounts /etc/netns/NAME/hosts)
that resolves the service names to those addresses: master and workers talk across a real
network path. Otherwise all services share the loopback and the names map to 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from locust_procs import clean_env

ROOT = Path(__file__).resolve().parent.parent
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """Compose's .env syntax: KEY=value, # comments, inline ' #' comments on unquoted values."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if value[:1] in "\"'":
            value = value[1:value.index(value[0], 1)]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out


def interpolate(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def can_use_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and sys.platform == "linux"


@dataclass
class Rig:
    results: Path
    variables: dict[str, str]
    namespaces: bool
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    addresses: dict[str, str] = field(default_factory=dict)  # service -> IP
    procs: list[subprocess.Popen] = field(default_factory=list)
    _netns: list[str] = field(default_factory=list)
    _links: list[str] = field(default_factory=list)

    # -- network -----------------------------------------------------------------------
    def _ip(self, *args: str, ns: str | None = None) -> None:
        cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def setup_network(self, hosts: list[str]) -> None:
        """One namespace per host name; names resolve to their addresses in every namespace."""
        if not self.namespaces:
            self.addresses = {h: "127.0.0.1" for h in hosts}
            return
        octet = 10 + int(self.tag[:2], 16) % 200
        bridge = f"tsbr{self.tag}"
        self._ip("link", "add", bridge, "type", "bridge")
        self._links.append(bridge)
        self._ip("addr", "add", f"10.{octet}.0.1/24", "dev", bridge)
        self._ip("link", "set", bridge, "up")
        for i, host in enumerate(hosts, start=2):
            ns, veth = f"ts{self.tag}-{host}", f"tsv{self.tag}{i}"
            self._ip("netns", "add", ns)
            self._netns.append(ns)
            self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._links.append(veth)
            self._ip("link", "set", veth, "master", bridge, "up")
            self._ip("addr", "add", f"10.{octet}.0.{i}/24", "dev", "eth0", ns=ns)
            self._ip("link", "set", "eth0", "up", ns=ns)
            self._ip("link", "set", "lo", "up", ns=ns)
            self.addresses[host] = f"10.{octet}.0.{i}"
        lines = ["127.0.0.1 localhost"] + [f"{ip} {host}" for host, ip in self.addresses.items()]
        for host in hosts:
            folder = Path("/etc/netns") / f"ts{self.tag}-{host}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text("\n".join(lines) + "\n")

    # -- services ------------------------------------------------------------------------
    def command(self, service: dict) -> list[str]:
        """The service's command, interpolated, with container paths mapped to local ones."""
        out: list[str] = []
        for arg in service["command"]:
            arg = interpolate(str(arg), self.variables)
            arg = arg.replace("/results", str(self.results)).replace("/app/", f"{ROOT}/")
            if not self.namespaces:  # no per-namespace /etc/hosts: host names in URLs and
                for host in self.addresses:  # --master-host mean 127.0.0.1
                    arg = re.sub(rf"(?<=//){re.escape(host)}(?=[:/]|$)", "127.0.0.1", arg)
                    if out and out[-1] == "--master-host" and arg == host:
                        arg = "127.0.0.1"
            out.append(arg)
        if out[0] in ("python", "locust"):
            out[0] = str(Path(sys.executable).parent / out[0]) if out[0] == "locust" else sys.executable
        return out

    def environment(self, service: dict) -> dict[str, str]:
        env = clean_env(keys={}) | self.variables
        for key, value in (service.get("environment") or {}).items():
            env[key] = interpolate(str(value), self.variables).replace("/app/", f"{ROOT}/").replace(
                "/app", str(ROOT))
        return env

    def wrap(self, host: str, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", f"ts{self.tag}-{host}", *cmd] if self.namespaces else cmd

    def start(self, host: str, service: dict, log: Path) -> subprocess.Popen:
        with open(log, "w") as out:
            proc = subprocess.Popen(self.wrap(host, self.command(service)), cwd=ROOT, env=self.environment(service),
                                    stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def run(self, host: str, cmd: list[str], service: dict, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(self.wrap(host, cmd), cwd=ROOT, env=self.environment(service), capture_output=True,
                              text=True, timeout=timeout)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for ns in self._netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
