# The controller's side of every pgherd module: a task is checked against
# the module's argument spec (exported by the module's build into
# plugins/modules/NAME.py) before anything is sent to the host, so that a
# misspelled option or a wrong type fails at once, naming the option; then
# the host gets the module's build for its architecture (bin/ARCH/NAME:
# x86_64 and aarch64, static), known from its facts or asked once with
# `uname -m` and kept as the fact pgherd_host_architecture. A host of
# another architecture, or a binary it cannot execute, is said plainly
# instead of "Exec format error".
import dataclasses
import hashlib
import importlib
import json
import os
import shlex

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

# The collection's bin/ directory: one subdirectory of builds per
# architecture.
BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bin")

# Where a host keeps the builds it was sent, in the home of the user the
# module runs as (through become, root's or the become user's): one file
# per module and build, owned by that user, mode 0700. A task sends the
# build only when the host does not hold it, and the module reads its
# arguments from stdin: one round trip instead of six (a temporary
# directory, the build and the arguments copied, run, removed).
CACHE = '"$HOME/.cache/pgherd"'
# The run's exit status when the host does not hold the build (or has no
# usable home): the build is sent, or the task falls back to Ansible's
# own way.
NOT_CACHED = 97

# What uname -m and Ansible's facts call the architectures built for.
ARCH_NAMES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


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


def shipped_architectures():
    """The architectures this collection holds builds for."""
    try:
        return sorted(d for d in os.listdir(BIN) if os.path.isdir(os.path.join(BIN, d)))
    except OSError:
        return []


_DIGESTS = {}


def build_digest(path):
    """sha256 of a build (once per controller process and build)."""
    if path not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[path] = hashlib.sha256(f.read()).hexdigest()
    return _DIGESTS[path]


def cached_run_script(cached):
    """Runs the cached build on the arguments of stdin, or exits
    NOT_CACHED when the home or the build is not there as it must be."""
    return (
        '[ -n "$HOME" ] && [ "$HOME" != / ] || exit %d; b=%s; '
        '[ -f "$b" ] && [ -O "$b" ] && [ -x "$b" ] || exit %d; exec "$b" -'
        % (NOT_CACHED, cached, NOT_CACHED)
    )


def cache_install_script(name, cached):
    """Keeps the build of stdin at `cached` (written aside, then renamed)
    and removes the module's older builds."""
    return (
        'umask 077; [ -n "$HOME" ] && [ "$HOME" != / ] || exit %d; d=%s; b=%s; mkdir -p "$d" && '
        't=$(mktemp "$d/.incoming.XXXXXX") && cat > "$t" && chmod 0700 "$t" && mv -f "$t" "$b" && '
        'for f in "$d"/%s-*; do [ "$f" = "$b" ] || rm -f "$f"; done'
        % (NOT_CACHED, CACHE, cached, shlex.quote(name))
    )


class ActionModule(NormalAction):
    _pgherd_binary = None

    def _pgherd_fast_path(self, wrap_async):
        """Whether the build runs from the host's cache with its arguments
        on stdin: the connection can pipe data through become, and the task
        is not asynchronous."""
        if self._pgherd_binary is None or wrap_async or self._task.async_val:
            return False
        if getattr(self._connection, "transport", None) == "local" and not self._connection.become:
            return True
        try:
            return bool(self._connection.is_pipelining_enabled(False))
        except Exception:  # noqa: BLE001 - an older connection plugin: Ansible's own way
            return False

    def _execute_module(self, module_name=None, module_args=None, tmp=None, task_vars=None, persist_files=False,
                        delete_remote_tmp=None, wrap_async=False, **kwargs):
        def ansibles_own_way():
            return super(ActionModule, self)._execute_module(module_name=module_name, module_args=module_args,
                                                             task_vars=task_vars, wrap_async=wrap_async, **kwargs)

        if not self._pgherd_fast_path(wrap_async):
            return ansibles_own_way()
        task_vars = task_vars or {}
        module_name = module_name or self._task.action
        module_args = self._task.args if module_args is None else module_args
        self._update_module_args(module_name, module_args, task_vars, **kwargs)
        built = self._configure_module(module_name=module_name, module_args=module_args, task_vars=task_vars)
        if isinstance(built, tuple) and len(built) == 4:
            # ansible-core before 2.19.
            return ansibles_own_way()
        from ansible.module_utils.common.json import Direction, get_module_encoder
        from ansible.vars.clean import remove_internal_keys

        bits, _ = built
        profile = bits.serialization_profile
        encoder = get_module_encoder(profile, Direction.CONTROLLER_TO_MODULE)
        arguments = json.dumps(module_args, cls=encoder).encode("utf-8")
        name = os.path.basename(self._pgherd_binary)
        cached = '%s/%s-%s' % (CACHE, shlex.quote(name), build_digest(self._pgherd_binary)[:20])
        environment = self._compute_environment_string()
        run = ("%s sh -c %s" % (environment, shlex.quote(cached_run_script(cached)))).strip()
        res = self._low_level_execute_command(run, sudoable=True, in_data=arguments)
        if res.get("rc") == NOT_CACHED:
            install = "sh -c %s" % shlex.quote(cache_install_script(name, cached))
            sent = self._low_level_execute_command(install, sudoable=True, in_data=bits.b_module_data)
            if sent.get("rc") == 0:
                res = self._low_level_execute_command(run, sudoable=True, in_data=arguments)
            if sent.get("rc") != 0 or res.get("rc") == NOT_CACHED:
                return ansibles_own_way()
        data = self._parse_returned_data(res, profile)
        remove_internal_keys(data)
        return data

    def _host_architecture(self, task_vars):
        """The target's architecture, as uname -m says it, and whether it
        was asked (then worth keeping as a fact)."""
        if not self._task.delegate_to:
            given = task_vars.get("pgherd_host_architecture")
            facts = task_vars.get("ansible_facts") or {}
            known = given or facts.get("pgherd_host_architecture") or facts.get("architecture")
            if known:
                return str(known), False
        uname = self._low_level_execute_command("uname -m")
        return (uname.get("stdout") or "").strip() or "an unknown architecture", True

    def _configure_module(self, module_name, module_args, task_vars):
        built = super()._configure_module(module_name, module_args, task_vars)
        if self._pgherd_binary is None:
            return built
        with open(self._pgherd_binary, "rb") as f:
            data = f.read()
        if isinstance(built, tuple) and len(built) == 4:
            # ansible-core before 2.19: (style, shebang, data, path).
            style, shebang, _, _ = built
            return style, shebang, data, self._pgherd_binary
        module, _ = built
        return dataclasses.replace(module, b_module_data=data), self._pgherd_binary

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        module = self._task.resolved_action or self._task.action
        if not module.startswith("pgherd.cluster."):
            module = "pgherd.cluster." + module.rsplit(".", 1)[-1]
        host = task_vars.get("inventory_hostname", "the host")
        problems = controller_problems(module, self._task.args)
        if problems:
            return {
                "failed": True,
                "changed": False,
                "msg": "%s: %s (checked on the controller: nothing was sent to %s)"
                % (module, "; ".join(problems), host),
            }
        name = module.rsplit(".", 1)[-1]
        seen, asked = self._host_architecture(task_vars)
        arch = ARCH_NAMES.get(seen)
        shipped = shipped_architectures()
        binary = os.path.join(BIN, arch, name) if arch else None
        if binary is None or not os.path.isfile(binary):
            return {
                "failed": True,
                "changed": False,
                "msg": "%s: %s runs on %s, and this collection holds builds for %s only: "
                "pgherd's modules are built for x86_64 and aarch64 (see the pgherd.cluster "
                "README, \"Building and installing\"); nothing was sent to %s"
                % (module, host, seen, ", ".join(shipped) or "no architecture", host),
            }
        self._pgherd_binary = binary
        result = super().run(tmp, task_vars)
        if asked and not self._task.delegate_to:
            result.setdefault("ansible_facts", {})["pgherd_host_architecture"] = seen
        if not result.get("failed") or "Exec format error" not in result.get("module_stderr", ""):
            return result
        built = binary_machine(binary) or "another architecture"
        result["msg"] = (
            "%s is a native executable built for %s, and %s runs on %s: build the "
            "collection's modules for %s (see the pgherd.cluster README, \"Building "
            "and installing\") and install that build"
            % (module, built, host, seen, seen)
        )
        return result
