# Files a run would write, known before any task touches them: a host's
# probe (pgherd_files_probe's shell, run with the other reads of a role)
# says what it holds, and only the files that differ go to a copy or
# template task. A run with nothing to write makes no per-file round trip.
import hashlib

# sh -c, each argument a path: one line per existing path, with its
# sha256 ("-" for a directory), owner, group and octal mode.
PROBE = (
    'for f; do if [ -d "$f" ]; then s=-; elif [ -f "$f" ]; then '
    's=$(sha256sum < "$f" | cut -c1-64); else continue; fi; '
    'printf "F\\t%s\\t%s\\t%s\\n" "$f" "$s" "$(stat --printf "%U\\t%G\\t%a" "$f")"; done'
)


def pgherd_files_probe(paths, before="", args=()):
    """A command's argv that reports `paths`: after `before`, shell run
    first with `args` as its positional parameters, which it shifts away."""
    return ["sh", "-c", before + PROBE + "; true", "sh"] + [str(a) for a in args] + [str(p) for p in paths]


def _held(probe_output):
    held = {}
    for line in str(probe_output or "").splitlines():
        parts = line.split("\t")
        if len(parts) == 6 and parts[0] == "F":
            held[parts[1]] = {"sha256": parts[2], "owner": parts[3], "group": parts[4], "mode": parts[5]}
    return held


def _sha256_of(item):
    if item.get("content_sha256"):
        return item["content_sha256"]
    if item.get("src"):
        digest = hashlib.sha256()
        try:
            with open(item["src"], "rb") as f:
                for block in iter(lambda: f.read(65536), b""):
                    digest.update(block)
        except OSError:
            return None  # The copy task says what is wrong with it.
        return digest.hexdigest()
    return "-"


def pgherd_files_to_write(items, probe_output):
    """The items ({dest, owner, group, mode} with src, a controller file,
    or content_sha256, or neither for a directory) that the host does not
    hold as they are: missing, other contents, owner, group or mode."""
    held = _held(probe_output)
    out = []
    for item in items:
        h = held.get(item["dest"])
        same = (
            h is not None
            and h["sha256"] == _sha256_of(item)
            and h["owner"] == str(item["owner"])
            and h["group"] == str(item["group"])
            and int(h["mode"], 8) == int(str(item["mode"]), 8)
        )
        if not same:
            out.append(item)
    return out


def pgherd_sha256(text):
    """sha256 of a text as written to a file (UTF-8)."""
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


class FilterModule:
    def filters(self):
        return {
            "pgherd_files_probe": pgherd_files_probe,
            "pgherd_files_to_write": pgherd_files_to_write,
            "pgherd_sha256": pgherd_sha256,
        }
