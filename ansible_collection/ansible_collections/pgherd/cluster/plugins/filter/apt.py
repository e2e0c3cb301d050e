# Filters of the packages role: the packages wanted, pinned as apt writes
# them, and those dpkg says are not installed at a matching version (what
# check mode predicts when apt itself cannot, on a host without
# python3-apt); Patroni's pip requirement pinned.
import fnmatch


def pgherd_apt_pinned(wanted):
    """`name=version` for each wanted package with a version, `name` else."""
    return [p["name"] + ("=" + p["version"] if p.get("version") else "") for p in wanted]


def pgherd_apt_installed(dpkg_lines):
    """{package: version} of the installed packages in the lines of
    `dpkg-query -W -f '${Package} ${Version} ${db:Status-Status}\\n'`."""
    installed = {}
    for line in dpkg_lines:
        fields = line.split(" ")
        if len(fields) >= 3 and fields[2] == "installed":
            installed[fields[0]] = fields[1]
    return installed


def pgherd_apt_missing(wanted, dpkg_lines):
    """The wanted packages (pinned) not installed at a matching version;
    a version may hold `*`, as apt allows."""
    installed = pgherd_apt_installed(dpkg_lines)
    missing = []
    for p, pinned in zip(wanted, pgherd_apt_pinned(wanted)):
        have = installed.get(p["name"])
        if have is None or (p.get("version") and not fnmatch.fnmatchcase(have, p["version"])):
            missing.append(pinned)
    return missing


def pgherd_pip_pinned(requirement, project, version):
    """`requirement` pinned to `version` when it names `project` (with or
    without extras: `patroni[etcd3]`), as it is otherwise."""
    name = requirement.split("[", 1)[0].strip()
    if name.lower() == project.lower() and "=" not in requirement and "<" not in requirement and ">" not in requirement:
        return requirement.strip() + "==" + version
    return requirement


class FilterModule:
    def filters(self):
        return {
            "pgherd_apt_pinned": pgherd_apt_pinned,
            "pgherd_apt_installed": pgherd_apt_installed,
            "pgherd_apt_missing": pgherd_apt_missing,
            "pgherd_pip_pinned": pgherd_pip_pinned,
        }
