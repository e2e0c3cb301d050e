#!/usr/bin/python3
"""A stanza of the pgBackRest repository on this host as Prometheus metrics,
in a file for node exporter's textfile collector: when the newest good
backup of each type ended and its size, when the newest WAL segment reached
the repository, the stanza's status. Ages are computed by Prometheus
(time() - the timestamp). Written whole, then renamed: a scrape never reads
half a file.

    pgbackrest_metrics.py STANZA CONFIG_PATH REPOSITORY USER OUT_FILE
"""
import json
import os
import subprocess
import sys
import time


def newest_wal_time(repository, stanza):
    """The modification time of the newest file under the stanza's archive
    (its newest archive id, its newest timeline-and-log directory), or None."""
    base = os.path.join(repository, "archive", stanza)
    try:
        ids = sorted((e for e in os.scandir(base) if e.is_dir()),
                     key=lambda e: [int(p) if p.isdigit() else p for p in e.name.split("-")])
        if not ids:
            return None
        logs = sorted((e for e in os.scandir(ids[-1].path) if e.is_dir()), key=lambda e: e.name)
        for log in reversed(logs):
            times = [e.stat().st_mtime for e in os.scandir(log.path) if e.is_file()]
            if times:
                return max(times)
    except OSError:
        return None
    return None


def main(stanza, config_path, repository, user, out):
    started = time.time()
    run = subprocess.run(
        ["runuser", "-u", user, "--", "pgbackrest", f"--config-path={config_path}",
         f"--stanza={stanza}", "--output=json", "info"],
        capture_output=True, text=True, timeout=120, check=False)
    try:
        info = json.loads(run.stdout)[0] if run.returncode == 0 else {}
    except (ValueError, IndexError):
        info = {}
    label = 'stanza="%s"' % stanza
    lines = [
        "# HELP pgbackrest_info_up Whether pgbackrest info answered for the stanza.",
        "# TYPE pgbackrest_info_up gauge",
        "pgbackrest_info_up{%s} %d" % (label, 1 if info else 0),
        "# HELP pgbackrest_stanza_status_code pgBackRest's status code of the stanza (0: ok, 2: no valid backups).",
        "# TYPE pgbackrest_stanza_status_code gauge",
        "pgbackrest_stanza_status_code{%s} %d" % (label, info.get("status", {}).get("code", 99)),
    ]
    newest = {}
    for backup in info.get("backup", []):
        if backup.get("error"):
            continue
        kind = backup.get("type", "?")
        stop = backup.get("timestamp", {}).get("stop", 0)
        if stop >= newest.get(kind, {}).get("timestamp", {}).get("stop", -1):
            newest[kind] = backup
    lines += [
        "# HELP pgbackrest_backup_last_end_timestamp_seconds When the newest good backup of the type ended.",
        "# TYPE pgbackrest_backup_last_end_timestamp_seconds gauge",
    ]
    for kind, backup in sorted(newest.items()):
        lines.append('pgbackrest_backup_last_end_timestamp_seconds{%s,type="%s"} %d'
                     % (label, kind, backup["timestamp"]["stop"]))
    lines += [
        "# HELP pgbackrest_backup_last_size_bytes The database size the newest good backup of the type holds.",
        "# TYPE pgbackrest_backup_last_size_bytes gauge",
    ]
    for kind, backup in sorted(newest.items()):
        lines.append('pgbackrest_backup_last_size_bytes{%s,type="%s"} %d'
                     % (label, kind, backup.get("info", {}).get("size", 0)))
    wal = newest_wal_time(repository, stanza)
    lines += [
        "# HELP pgbackrest_wal_archive_last_timestamp_seconds When the newest WAL segment reached the repository.",
        "# TYPE pgbackrest_wal_archive_last_timestamp_seconds gauge",
    ]
    if wal is not None:
        lines.append("pgbackrest_wal_archive_last_timestamp_seconds{%s} %d" % (label, wal))
    lines += [
        "# HELP pgbackrest_metrics_timestamp_seconds When these metrics were read.",
        "# TYPE pgbackrest_metrics_timestamp_seconds gauge",
        "pgbackrest_metrics_timestamp_seconds{%s} %d" % (label, started),
    ]
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    if not info:
        sys.stderr.write("pgbackrest info failed: %s\n" % (run.stderr or run.stdout).strip()[-500:])
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
