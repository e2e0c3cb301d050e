# The same controller-side checks as the instance module's action plugin.
from ansible_collections.pgherd.cluster.plugins.action.instance import ActionModule  # noqa: F401
