# Runs a pgherd module like any module and, when the target cannot execute
# the binary (built for another architecture), says so plainly instead of
# "Exec format error". The check costs nothing unless that failure happens.
from ansible.plugins.action.normal import ActionModule as NormalAction

# ELF e_machine values of the architectures Rust builds for.
ELF_MACHINES = {
    3: "i386",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390x",
    40: "arm",
    62: "x86_64",
    183: "aarch64",
    243: "riscv64",
    258: "loongarch64",
}


def binary_machine(path):
    """The architecture an ELF executable is built for, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except (OSError, TypeError):
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    return ELF_MACHINES.get(machine, "ELF machine %d" % machine)


class ActionModule(NormalAction):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if not result.get("failed") or "Exec format error" not in result.get("module_stderr", ""):
            return result
        module = self._task.action
        path = self._shared_loader_obj.module_loader.find_plugin(module)
        built = binary_machine(path) or "another architecture"
        uname = self._low_level_execute_command("uname -m")
        target = (uname.get("stdout") or "").strip() or "an unknown architecture"
        result["msg"] = (
            "%s is a native executable built for %s, and %s runs on %s: build the "
            "collection's modules for %s (see the pgherd.cluster README, \"Building "
            "and installing\") and install that build"
            % (module, built, (task_vars or {}).get("inventory_hostname", "the target"), target, target)
        )
        return result
