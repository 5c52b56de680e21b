"""Start and stop a throwaway `redis-server` on a free loopback port.

Used by the test suite and the benchmark, which must never depend on a Redis someone
else runs (CI's machine may have none): each starts its own, keeps nothing on disk,
and stops it when done.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable


def free_port(below: int = 65536) -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (under `below`)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < below:
            return port


class RedisServer:
    """A `redis-server` child process on 127.0.0.1, stoppable and restartable on the
    same port (tests use that to prove the gateway recovers by itself)."""

    def __init__(self, port: int | None = None, *, extra: tuple[str, ...] = (), sentinel: str | None = None) -> None:
        """`extra`: more redis-server options; `sentinel`: run as a Sentinel with this
        configuration (written to a file of its own: Sentinels rewrite it)."""
        executable = shutil.which("redis-server")
        if executable is None:
            msg = "redis-server is not installed: `apt-get install redis-server` (the tests and the benchmark start their own)."
            raise RuntimeError(msg)
        self.executable = executable
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="ussd-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self._extra = extra
        self._password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        self._sentinel = sentinel

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start the server and wait until it accepts connections (at most 10 s)."""
        if self._process is not None and self._process.poll() is None:
            return self
        head = [self.executable]
        if self._sentinel is not None:
            conf = f"{self._dir.name}/sentinel.conf"
            if not os.path.exists(conf):
                with open(conf, "w") as file:
                    file.write(self._sentinel)
            head += [conf, "--sentinel"]
        self._process = subprocess.Popen(
            [
                *head,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--daemonize", "no",
                "--loglevel", "warning",
                *self._extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def stop(self) -> None:
        """Stop the server now (SIGKILL: the tests want an abrupt loss)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a paused server must die too
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers, the
        way a hung Redis or a black-holed network looks to a client."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server answer again (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def cli(self, *command: str) -> str:
        """One command through `redis-cli` (its reply as text)."""
        auth = ("--no-auth-warning", "-a", self._password) if self._password else ()
        return _redis_cli("-p", str(self.port), *auth, *command, timeout=10)

    def info(self, section: str) -> dict[str, str]:
        text = self.cli("INFO", section)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _redis_cli(*args: str, timeout: float = 30) -> str:
    executable = shutil.which("redis-cli")
    if executable is None:
        raise RuntimeError("redis-cli is not installed: `apt-get install redis-server` (it ships both)")
    done = subprocess.run([executable, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args[:3])}…: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _wait(what: str, check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} within {seconds:g} s")


class LocalCluster:
    """A Redis Cluster of `masters` redis-servers (each with `replicas` replicas) on
    loopback ports, created by `redis-cli --cluster create` and ready (`cluster_state:ok`
    on every node) when `start` returns."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        # A node's cluster bus listens on its port + 10000.
        self.nodes = [RedisServer(free_port(below=55536), extra=("--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
                                         "--cluster-config-file", "nodes.conf"))
                      for _ in range(masters * (1 + replicas))]
        self.replicas = replicas

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])

    def start(self) -> "LocalCluster":
        try:
            for node in self.nodes:
                node.start()
            _redis_cli("--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
                       "--cluster-replicas", str(self.replicas), "--cluster-yes", timeout=60)
            for node in self.nodes:
                _wait(f"cluster node {node.port} did not report cluster_state:ok",
                      lambda n=node: "cluster_state:ok" in n.cli("CLUSTER", "INFO"))
            for node in self.nodes:  # a replica that never synced could not take over
                _wait(f"cluster node {node.port} did not finish its first sync",
                      lambda n=node: n.info("replication").get("master_link_status", "up") == "up", seconds=30)
        except BaseException:
            self.close()
            raise
        return self

    def master_of(self, key: str) -> RedisServer:
        """The node that serves `key`'s slot now."""
        live = next(node for node in self.nodes if node.running)
        slot = int(live.cli("CLUSTER", "KEYSLOT", key).strip())
        for line in live.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(node for node in self.nodes if node.port == port)
        raise RuntimeError(f"no master serves slot {slot}")

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        """The nodes replicating `master` now."""
        lines = [line.split() for line in master.cli("CLUSTER", "NODES").splitlines() if line.strip()]
        own_id = next(fields[0] for fields in lines if "myself" in fields[2])
        ports = {int(fields[1].split("@")[0].rsplit(":", 1)[1]) for fields in lines if fields[3] == own_id}
        return [node for node in self.nodes if node.port in ports]

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


SENTINEL_MASTER = "ussd"


def _field(line: str, name: str) -> int:
    """`slaves` in `name=ussd,status=ok,address=…,slaves=1,sentinels=3` (0 if absent)."""
    for item in line.split(","):
        key, _, value = item.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return 0


class LocalSentinels:
    """A master, its replicas and three Sentinels watching it, on loopback ports.

    The Sentinels judge the master down after `down_after_ms` without an answer and
    agree (quorum 2) to promote the replica. Debian's package has no `redis-sentinel`
    binary of its own: `redis-server sentinel.conf --sentinel` is the same program."""

    def __init__(self, replicas: int = 1, *, down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 password: str | None = None) -> None:
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        self.master = RedisServer(extra=auth)
        self.replicas = [RedisServer(extra=auth) for _ in range(replicas)]
        self.sentinels: list[RedisServer] = []
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def data_nodes(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{auth}" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{SENTINEL_MASTER}"

    def start(self) -> "LocalSentinels":
        try:
            self.master.start()
            for replica in self.replicas:
                replica.start()
                replica.cli("REPLICAOF", "127.0.0.1", str(self.master.port))
            for replica in self.replicas:
                _wait("a replica did not catch up with its master",
                      lambda r=replica: r.info("replication").get("master_link_status") == "up")
            for _ in range(3):
                sentinel = RedisServer(sentinel=self._sentinel_conf())
                self.sentinels.append(sentinel.start())
            _wait("the Sentinels did not see each other and the replicas",
                  lambda: all(_field(s.info("sentinel").get("master0", ""), "sentinels") >= 3 and
                              _field(s.info("sentinel").get("master0", ""), "slaves") >= len(self.replicas)
                              for s in self.sentinels))
        except BaseException:
            self.close()
            raise
        return self

    def _sentinel_conf(self) -> str:
        lines = [
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} {self.down_after_ms}",
            f"sentinel failover-timeout {SENTINEL_MASTER} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {SENTINEL_MASTER} {self.password}")
        return "\n".join(lines) + "\n"

    def current_master_port(self) -> int:
        reply = _redis_cli("-p", str(self.sentinels[0].port), "SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER, timeout=5)
        return int(reply.split()[1])

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.data_nodes if node.port == port)

    def close(self) -> None:
        for server in [*self.sentinels, *self.data_nodes]:
            server.close()

    def __enter__(self) -> "LocalSentinels":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
