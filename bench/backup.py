#!/usr/bin/env python3
"""Backups and restores of a 3-node cluster, through a repository every
member reaches (a local path) and through a repository host over TLS, on
the local machine.

    bench/backup.py [--runs N] [--rows N]

Starts the local etcd (scripts/demo.sh etcd); for each way, each run
deploys a 3-node cluster (db1-db3 on 127.0.0.11-13, its own cluster name
and stanza) under .work/bench-backup with playbooks/site.yml, fills a
table (--rows, 100000 by default), then times playbooks/backup.yml (full,
then incremental after more rows) and playbooks/restore.yml (latest, from
db1, every member rebuilt). The repository host is a `backup-host` in the
inventory's pgbackrest_repo group on this machine, pgBackRest's TLS server
on 127.0.0.1 under the name localhost, each member's own server beside it,
certificates made with openssl, as tests/tests/pgbackrest_repo_host.rs
has them. Both with start-fast (an immediate checkpoint). Prints a
Markdown table of medians. Removes what it made. Not a
test: nothing here asserts a time.
"""

import argparse
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import local
from local import REPO
from shape import inventory

ROOT = os.path.join(REPO, ".work/bench-backup")
NODES = ["db1", "db2", "db3"]
REPO_PORT = 26_632


def as_postgres(path):
    pw = pwd.getpwnam("postgres")
    os.chown(path, pw.pw_uid, pw.pw_gid)


def postgres_dir(path):
    os.makedirs(path, exist_ok=True)
    as_postgres(path)
    return path


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_pki(d):
    """A CA, and a certificate per name (CommonName the name, valid for
    localhost) for server and client use; keys for postgres."""
    postgres_dir(d)
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
            "-days", "2", "-subj", "/CN=bench-backup-ca")
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
                "basicConstraints=CA:FALSE\n")
    for name in ["backup-host", *NODES]:
        key, csr, pem = (os.path.join(d, f"{name}.{x}") for x in ("key", "csr", "pem"))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                "-out", pem, "-days", "2", "-extfile", ext)
        for f in (key, pem):
            as_postgres(f)
            os.chmod(f, 0o600)
    os.chmod(ca, 0o644)
    return ca


def serve(config, port):
    """pgBackRest's server with `config`, as postgres, once it listens."""
    proc = subprocess.Popen(["runuser", "-u", "postgres", "--", "pgbackrest",
                             f"--config={config}", "server"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    sys.exit(f"pgBackRest's server on port {port} does not listen")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    as_postgres(path)


def repository_host(stanza):
    """The repository host's and the members' servers; the settings that
    reach it, and the inventory that holds the host (the cluster is named
    after the stanza)."""
    ca = make_pki(os.path.join(ROOT, "pki"))
    pki = lambda name, x: os.path.join(ROOT, "pki", f"{name}.{x}")
    host = postgres_dir(os.path.join(ROOT, "backup-host"))
    repository = postgres_dir(os.path.join(host, "repository"))
    for sub in ("log", "lock"):
        postgres_dir(os.path.join(host, sub))
    tls = lambda prefix, name: (f"{prefix}-ca-file={ca}\n{prefix}-cert-file={pki(name, 'pem')}\n"
                                f"{prefix}-key-file={pki(name, 'key')}\n")
    conf = (f"[global]\nrepo1-path={repository}\nrepo1-retention-full=2\nstart-fast=y\n"
            f"log-path={host}/log\nlock-path={host}/lock\n"
            f"tls-server-address=127.0.0.1\ntls-server-port={REPO_PORT}\n"
            + tls("tls-server", "backup-host")
            + "".join(f"tls-server-auth={n}={stanza}\n" for n in NODES)
            + f"\n[{stanza}]\n")
    for i, node in enumerate(NODES, 1):
        node_root = os.path.join(ROOT, node)
        conf += (f"pg{i}-host=localhost\npg{i}-host-type=tls\npg{i}-host-port={REPO_PORT + i}\n"
                 f"pg{i}-host-config={node_root}/etc/pgbackrest-15-main.conf\n"
                 + tls(f"pg{i}-host", "backup-host")
                 + f"pg{i}-path={node_root}/data/15/main\n")
    write(os.path.join(host, "pgbackrest.conf"), conf)
    servers = [serve(os.path.join(host, "pgbackrest.conf"), REPO_PORT)]
    for i, node in enumerate(NODES, 1):
        d = postgres_dir(os.path.join(ROOT, f"server-{node}"))
        write(os.path.join(d, "server.conf"),
              f"[global]\nlog-path={d}\ntls-server-address=127.0.0.1\n"
              f"tls-server-port={REPO_PORT + i}\n" + tls("tls-server", node)
              + f"tls-server-auth=backup-host={stanza}\n")
        servers.append(serve(os.path.join(d, "server.conf"), REPO_PORT + i))
    settings = {"pgbackrest": {"repository": {"path": repository, "host": {
        "name": "localhost", "port": REPO_PORT, "cafile": ca,
        "certfile": os.path.join(ROOT, "pki", "{{ inventory_hostname }}.pem"),
        "keyfile": os.path.join(ROOT, "pki", "{{ inventory_hostname }}.key"),
        "config_path": "{{ pgherd_node_root }}"}}}}
    inv = os.path.join(ROOT, "repository-host.yml")
    with open(inv, "w") as f:
        f.write("all:\n  children:\n    pgbackrest_repo:\n      hosts:\n        backup-host:\n"
                f"          ansible_host: 127.0.0.1\n          pgherd_node_root: {host}\n"
                f"          pg_cluster: {stanza}\n")
    return settings, ["-i", inv], servers


def clean(cluster):
    local.kill_under(ROOT + "/")
    shutil.rmtree(ROOT, ignore_errors=True)
    local.forget(f"/service/{cluster}/")


def one_run(tmp, way, run, rows):
    cluster = f"backup-bench-{os.getpid()}-{way.split()[0]}-{run}"
    stanza = cluster
    clean(cluster)
    os.makedirs(ROOT)
    inv = inventory(os.path.join(tmp, f"inv-{way}-{run}"), cluster)
    # Backups start at once (an immediate checkpoint), not after the next
    # regular one: both ways alike.
    extra, more_inv = {"pgbackrest_stanza": stanza}, []
    if way == "repository host":
        settings, more_inv, _servers = repository_host(stanza)
        extra["pgherd_settings_extra"] = settings
    else:
        postgres_dir(os.path.join(ROOT, "pgbackrest"))
        extra["pgherd_settings_extra"] = {"pgbackrest": {"global_options": {"start-fast": "y"}}}
    ev = ["-e", json.dumps(extra)]
    local.playbook(ROOT, inv, "site.yml", *ev)
    for q in ("create table filler (id bigint primary key, note text)",
              f"insert into filler select g, md5(g::text) from generate_series(1, {rows}) g"):
        if not local.psql(ROOT, "db1", q):
            sys.exit(f"{q} failed")
    times = {"full": local.playbook(ROOT, inv, "backup.yml", *ev, *more_inv)}
    local.psql(ROOT, "db1", f"insert into filler select g, md5(g::text) "
                            f"from generate_series({rows} + 1, {rows} + {rows} / 10) g")
    times["incr"] = local.playbook(ROOT, inv, "backup.yml", *ev, *more_inv,
                                   "-e", "backup_type=incr")
    times["restore"] = local.playbook(ROOT, inv, "restore.yml", *ev, "-e", "restore_from=db1")
    clean(cluster)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100000)
    a = parser.parse_args()
    own_etcd = local.start_etcd()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for way in ("local path", "repository host"):
            runs = [one_run(tmp, way, run, a.rows) for run in range(a.runs)]
            results[way] = {k: [r[k] for r in runs] for k in runs[0]}
    local.stop_etcd(own_etcd)
    median = statistics.median
    print(f"| what (local, 3 nodes, {a.rows} rows) | local path | repository host | ratio | runs (host) |")
    print("|---|---|---|---|---|")
    for what, label in (("full", "backup.yml full"), ("incr", "backup.yml incr (+10% rows)"),
                        ("restore", "restore.yml latest, 3 members rebuilt")):
        p, h = median(results["local path"][what]), median(results["repository host"][what])
        runs = ", ".join(f"{x:.2f}" for x in results["repository host"][what])
        print(f"| {label} | {p:.2f} s | {h:.2f} s | {h / p:.2f}× | {runs} |")


if __name__ == "__main__":
    main()
