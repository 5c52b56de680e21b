"""One place that turns a `[sessions] redis_url` into a redis-py asyncio client.

- `redis://`, `rediss://`, `unix://`: one Redis server (`Redis.from_url`).
- `redis+sentinel://[[user]:password@]host:port[,host:port…]/master[?db=0&sentinel_password=…]`
  (`rediss+sentinel://` for TLS): the master that the Sentinels name, through
  redis-py's `Sentinel(...).master_for(master)`. A failover shows as connection errors
  for a moment (hops answer the busy END), then the client asks the Sentinels again and
  talks to the new master by itself. The password is the data nodes'; the Sentinels'
  own is `sentinel_password` (none by default).
- `redis+cluster://[[user]:password@]host:port[,host:port…]` (`rediss+cluster://` for
  TLS), or any `redis://host:port` with `cluster = True` (`[sessions] cluster`): a Redis
  Cluster through redis-py's `RedisCluster`, the given nodes used only to discover the
  rest. Every key a script or a transaction touches shares one hash tag (one slot).

Every Redis user in the gateway (session store, demo backend, campaigns, menu reload
announcements, the command-line tools, the test harness) makes its client here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_SENTINEL_PORT = 26379

AnyRedis = aioredis.Redis | RedisCluster
"""What `make_client` returns; both speak the same command methods."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed Redis URL (what `make_client` connects to)."""

    kind: str
    """`single`, `sentinel` or `cluster`."""
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    master: str = ""
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)


def parse_redis_url(url: str, *, cluster: bool = False) -> RedisTarget:
    """Raises ValueError (with a reason, never the password) for a malformed URL."""
    scheme = url.partition("://")[0].lower()
    if scheme not in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"redis_url: unknown scheme {scheme!r} (redis, rediss, unix, redis+sentinel, redis+cluster)")
        if not cluster:
            return RedisTarget("single", url)
        if scheme == "unix":
            raise ValueError("redis_url: a Redis Cluster is reached over TCP, not a unix socket")
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, has_password, password = userinfo.partition(":")
    default_port = DEFAULT_SENTINEL_PORT if scheme in SENTINEL_SCHEMES else 6379
    hosts = tuple(_host_port(item, default_port) for item in hostlist.split(",") if item)
    if not hosts:
        raise ValueError("redis_url: no host given")
    options = dict(parse_qsl(parts.query))
    path = parts.path.strip("/")
    master = ""
    db = int(options.pop("db", "0") or 0)
    if scheme in SENTINEL_SCHEMES:
        master, _, db_part = path.partition("/")
        if not master:
            raise ValueError("redis_url: a redis+sentinel:// URL names its master: redis+sentinel://host:26379/mymaster")
        if db_part:
            db = int(db_part)
    elif path:
        db = int(path)
    if db and (scheme in CLUSTER_SCHEMES or cluster):
        raise ValueError("redis_url: a Redis Cluster has database 0 only")
    return RedisTarget(
        "sentinel" if scheme in SENTINEL_SCHEMES else "cluster",
        url,
        hosts=hosts,
        master=master,
        username=unquote(username) or None,
        password=unquote(password) if has_password else options.pop("password", None),
        db=db,
        tls=scheme.startswith("rediss"),
        options=options,
    )


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    return host, int(port or default_port)


def make_client(url: str, *, cluster: bool = False, **kwargs: Any) -> AnyRedis:
    """The client for `url`; `kwargs` are connection options (timeouts, `retry`,
    `max_connections`, `health_check_interval`) applied to every data connection."""
    target = parse_redis_url(url, cluster=cluster)
    if target.kind == "single":
        return aioredis.Redis.from_url(url, **kwargs)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.tls:
        auth["ssl"] = True
    if target.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        kwargs.pop("health_check_interval", None)  # not a cluster option
        return RedisCluster(startup_nodes=nodes, **auth, **kwargs)
    sentinel_kwargs: dict[str, Any] = {
        key: kwargs[key] for key in ("socket_timeout", "socket_connect_timeout") if kwargs.get(key) is not None
    }
    sentinel_kwargs.setdefault("socket_timeout", 0.5)  # a dead Sentinel must not hold a reconnect
    sentinel_kwargs.setdefault("socket_connect_timeout", 0.5)
    if target.options.get("sentinel_password"):
        sentinel_kwargs["password"] = target.options["sentinel_password"]
    if target.options.get("sentinel_username"):
        sentinel_kwargs["username"] = target.options["sentinel_username"]
    if target.tls:
        sentinel_kwargs["ssl"] = True
    sentinel = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(target.master, redis_class=_SentinelMaster, db=target.db, **auth, **kwargs)
    client.sentinel = sentinel
    return client


class _SentinelMaster(aioredis.Redis):
    """The master behind Sentinels; closing it closes the connections to the
    Sentinels too (redis-py leaves them open)."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def connection_pool_of(client: Any) -> Any:
    """The pool whose connection class the session store may extend (None on a
    cluster, where every node has a pool of its own)."""
    return None if is_cluster(client) else getattr(client, "connection_pool", None)


class NodeClients:
    """A plain client on the master that holds a key, for commands that must run on
    the connection that made a write (`WAIT` counts the replicas holding that
    connection's writes; a cluster client would send it to some other node). On one
    server or behind Sentinels that is the client itself; on a cluster, one small
    client per master, made when first needed."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._by_node: dict[str, aioredis.Redis] = {}

    def for_key(self, key: str) -> Any:
        if not is_cluster(self._client):
            return self._client
        return self._for_node(self._client.get_node_from_key(key))

    async def masters(self) -> list[Any]:
        """A plain client per master (the client itself when not a cluster)."""
        if not is_cluster(self._client):
            return [self._client]
        await self._client.initialize()
        return [self._for_node(node) for node in self._client.get_primaries()]

    def _for_node(self, node: Any) -> Any:
        found = self._by_node.get(node.name)
        if found is None:
            kwargs = {k: v for k, v in node.connection_kwargs.items() if k in _NODE_OPTIONS}
            found = aioredis.Redis(host=node.host, port=node.port, max_connections=64, **kwargs)
            self._by_node[node.name] = found
        return found

    async def close(self) -> None:
        clients, self._by_node = list(self._by_node.values()), {}
        for client in clients:
            await client.aclose()


_NODE_OPTIONS = frozenset({
    "username", "password", "socket_timeout", "socket_connect_timeout", "ssl", "ssl_ca_certs", "ssl_certfile",
    "ssl_keyfile", "ssl_cert_reqs", "retry", "health_check_interval",
})


async def load_scripts_for_pipeline(client: Any, *scripts: Any) -> None:
    """Before `queue_script` puts `AsyncScript`s on a pipeline: each loaded on every
    master (a cluster pipeline neither loads scripts nor takes redis-py's script
    calls; a promoted replica has an empty script cache). One round trip, once per
    batch. A failover in between fails that one batch with NOSCRIPT; its caller
    retries."""
    for script in scripts:
        await client.script_load(script.script)


def queue_script(pipe: Any, script: Any, keys: list[Any], args: list[Any]) -> None:
    """Queue one call of a loaded script on a pipeline, plain or cluster (routed by
    its keys, which must share one slot)."""
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
