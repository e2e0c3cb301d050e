# The controller's side of every pgherd module: a task is checked against
# the module's argument spec (exported by the module's build into
# plugins/modules/NAME.py) before anything is sent to the host, so that a
# misspelled option or a wrong type fails at once, naming the option; then
# the module runs like any module. When the host cannot execute the binary
# (built for another architecture), that is said plainly instead of "Exec
# format error".
import importlib

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import UnsupportedError
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

MASK = "********"


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


def argument_spec(module):
    """The exported argument spec of pgherd.cluster.MODULE."""
    name = module.rsplit(".", 1)[-1]
    docs = importlib.import_module("ansible_collections.pgherd.cluster.plugins.modules." + name)
    return docs.ARGUMENT_SPEC


def unsupported_messages(options, unsupported):
    """The module's own wording for unknown options, one message per
    level: `unsupported option X in 'a.b'; supported options are: ...`."""
    by_place = {}
    for item in unsupported:
        path = list(item) if isinstance(item, tuple) else [item]
        by_place.setdefault(tuple(path[:-1]), []).append(path[-1])
    messages = []
    for place, names in sorted(by_place.items()):
        level = options
        for key in place:
            level = (level.get(key) or {}).get("options") or {}
        supported = sorted(
            name + (" (aliases: %s)" % ", ".join(o["aliases"]) if o.get("aliases") else "")
            for name, o in level.items()
        )
        messages.append(
            "unsupported option%s %s%s; supported options are: %s"
            % (
                "s" if len(names) > 1 else "",
                ", ".join(".".join(place + (n,)) for n in sorted(names)),
                " in '%s'" % ".".join(place) if place else "",
                ", ".join(supported),
            )
        )
    return messages


def controller_problems(module, args):
    """What is wrong with a task's options, each message naming the option;
    secrets (no_log options) masked."""
    spec = dict(argument_spec(module))
    options = spec.pop("argument_spec")
    validator = ArgumentSpecValidator(
        options,
        mutually_exclusive=spec.get("mutually_exclusive"),
        required_together=spec.get("required_together"),
        required_if=spec.get("required_if"),
    )
    result = validator.validate(dict(args))
    secrets = sorted((str(v) for v in result._no_log_values if str(v)), key=len, reverse=True)
    problems = unsupported_messages(options, result.unsupported_parameters)
    for error in result.errors.errors:
        if not isinstance(error, UnsupportedError):
            problems.append(error.msg)
    masked = []
    for message in problems:
        for secret in secrets:
            message = message.replace(secret, MASK)
        masked.append(message)
    return masked


class ActionModule(NormalAction):
    def run(self, tmp=None, task_vars=None):
        module = self._task.resolved_action or self._task.action
        if not module.startswith("pgherd.cluster."):
            module = "pgherd.cluster." + module.rsplit(".", 1)[-1]
        problems = controller_problems(module, self._task.args)
        if problems:
            return {
                "failed": True,
                "changed": False,
                "msg": "%s: %s (checked on the controller: nothing was sent to %s)"
                % (module, "; ".join(problems), (task_vars or {}).get("inventory_hostname", "the host")),
            }
        result = super().run(tmp, task_vars)
        if not result.get("failed") or "Exec format error" not in result.get("module_stderr", ""):
            return result
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
