"""What the local benchmarks share: playbooks of the repository run on a
local inventory whose nodes live under a root of the benchmark's own, SQL
on a node through its socket, and the processes under a root killed."""

import os
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAYBOOK = os.path.join(REPO, ".venv/bin/ansible-playbook")
PSQL = "/usr/lib/postgresql/15/bin/psql"


def env():
    e = dict(os.environ)
    e["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, "ansible_collection")
    return e


def playbook(root, inv, name, *extra):
    """Runs a playbook of the repository with the nodes under `root`;
    returns its seconds, or exits with its output when it fails."""
    start = time.monotonic()
    proc = subprocess.run(
        [PLAYBOOK, "-i", inv, os.path.join(REPO, "playbooks", name),
         "-e", f"pgherd_repo={REPO}", "-e", f"pgherd_local_root={root}", *extra],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{name} {' '.join(extra)} failed:\n{proc.stdout[-3000:]}")
    return seconds


def psql(root, node, query, port=5432):
    """`query` on `node` (its socket under `root`) as postgres: whether it
    succeeded."""
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", PSQL, "-XAtq", "-h", os.path.join(root, node, "run"),
         "-p", str(port), "-c", query],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def pids_under(path):
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def kill_under(path):
    """SIGKILL to every process whose command line names `path`, until
    none is left."""
    deadline = time.monotonic() + 20
    while pids := pids_under(path):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            sys.exit(f"processes under {path} do not die: {pids}")
        time.sleep(0.05)


def start_etcd():
    """The local etcd of scripts/demo.sh, and the collection built; whether
    this started the etcd (then stop_etcd stops it at the end)."""
    import socket
    subprocess.run([os.path.join(REPO, "scripts/build-collection.sh")], check=True,
                   stdout=subprocess.DEVNULL)
    with socket.socket() as s:
        s.settimeout(1)
        running = s.connect_ex(("127.0.0.1", 2379)) == 0
    subprocess.run([os.path.join(REPO, "scripts/demo.sh"), "etcd"], check=True,
                   stdout=subprocess.DEVNULL)
    return not running


def stop_etcd(started):
    """Stops the etcd start_etcd started, leaving the machine as found."""
    if started:
        subprocess.run([os.path.join(REPO, "scripts/demo.sh"), "down"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def forget(*prefixes):
    for prefix in prefixes:
        subprocess.run(["etcdctl", "--endpoints=http://127.0.0.1:2379", "del", "--prefix", prefix],
                       stdout=subprocess.DEVNULL, check=True)


class Writer(threading.Thread):
    """Calls `write` (one acknowledged row, or False) again and again,
    `pause` seconds after a failure; the times of the acknowledged writes
    by `clock` (time.time to compare them with logs)."""

    def __init__(self, write, clock=time.monotonic, pause=0.02):
        super().__init__(daemon=True)
        self.acked = []
        self.stop = threading.Event()
        self.write = write
        self.clock = clock
        self.pause = pause
        self.start()

    def run(self):
        while not self.stop.is_set():
            if self.write():
                self.acked.append(self.clock())
            else:
                time.sleep(self.pause)

    def stalls(self, since, until, over=0.5):
        """The times without an acknowledged write longer than `over`
        seconds in [since, until], in order."""
        times = [since] + [t for t in self.acked if since <= t <= until] + [until]
        return [round(b - a, 2) for a, b in zip(times, times[1:]) if b - a > over]

    def gap(self, since, until):
        """The longest time without an acknowledged write in [since, until]."""
        start, end = self.longest_gap(since, until)
        return end - start

    def longest_gap(self, since, until):
        """The start and end of the longest time without an acknowledged
        write in [since, until]."""
        times = [since] + [t for t in self.acked if since <= t <= until] + [until]
        return max(zip(times, times[1:]), key=lambda p: p[1] - p[0])


def local_writer(root, nodes, port=5432):
    """A Writer inserting into bench_written on any of the local `nodes`
    (their sockets under `root`) that takes writes."""
    hosts = ",".join(os.path.join(root, n, "run") for n in nodes)
    target = (f"host={hosts} port={port} dbname=postgres target_session_attrs=read-write "
              "connect_timeout=2")
    return Writer(lambda: subprocess.run(
        ["runuser", "-u", "postgres", "--", PSQL, "-XAtq", target,
         "-c", "insert into bench_written values (now())"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0)
