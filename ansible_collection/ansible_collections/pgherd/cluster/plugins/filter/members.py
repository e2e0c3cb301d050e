# Where a cluster's members connect from, for the instance module's
# member_addresses: each member host's ansible_host (its inventory name
# without one). A connection between two loopback addresses of one machine
# leaves from 127.0.0.1 (Linux picks the loopback interface's primary
# address), so a loopback member brings 127.0.0.1 along.
import ipaddress


def pgherd_member_addresses(hosts, hostvars):
    out = []
    for host in hosts:
        address = str((hostvars.get(host) or {}).get("ansible_host") or host)
        found = [address]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is not None and ip.version == 4 and ip.is_loopback:
            found.append("127.0.0.1")
        for a in found:
            if a not in out:
                out.append(a)
    return out


def _readable(hv, name):
    """A host's variable, or None when it is not defined or cannot be
    resolved from another host (one built from hostvars itself)."""
    try:
        return hv.get(name)
    except Exception:  # Ansible's undefined-variable errors
        return None


def pgherd_patroni_clusters(hosts, hostvars):
    """The Patroni clusters of `hosts` (one entry per pg_cluster, from the
    first of its hosts): where the patroni module runs for each and with
    what. Settings are the host's pgherd_settings_file when the inventory
    names one (the instance module keeps the settings there on every
    node), else its pgherd_settings; credentials from patroni_restapi_auth
    and patroni_etcd_auth."""
    out = []
    for host in hosts:
        hv = hostvars.get(host) or {}
        cluster = _readable(hv, "pg_cluster")
        if not cluster or any(c["cluster"] == str(cluster) for c in out):
            continue
        entry = {"host": host, "cluster": str(cluster)}
        settings = _readable(hv, "pgherd_settings_file") or _readable(hv, "pgherd_settings")
        if settings:
            entry["settings"] = settings
        for prefix, auth in (("restapi", "patroni_restapi_auth"), ("etcd", "patroni_etcd_auth")):
            given = _readable(hv, auth) or {}
            for part in ("username", "password"):
                if given.get(part):
                    entry[prefix + "_" + part] = given[part]
        out.append(entry)
    return out


def pgherd_pgbackrest_members(hosts, hostvars, result="pg_node"):
    """[{host, config, path}] for a repository host's stanza: each member's
    inventory name (its certificate's name), and the pgBackRest
    configuration and data directory its instance task returned (registered
    as `result`: its `instance`). Empty unless every member returned them: a run limited to
    some members leaves the stanza's section as it is."""
    out = []
    for host in hosts:
        node = (hostvars[host].get(result) or {}).get("instance") or {}
        if not node.get("pgbackrest_config") or not node.get("data_dir"):
            return []
        out.append({"host": host, "config": node["pgbackrest_config"], "path": node["data_dir"]})
    return out


class FilterModule:
    def filters(self):
        return {
            "pgherd_member_addresses": pgherd_member_addresses,
            "pgherd_pgbackrest_members": pgherd_pgbackrest_members,
            "pgherd_patroni_clusters": pgherd_patroni_clusters,
        }
