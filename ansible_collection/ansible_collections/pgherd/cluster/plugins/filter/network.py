# Filters of the roles that listen or hold addresses on a host: which
# interface is on the network that holds a virtual address (the vip role,
# from `ip -j -4 addr show`), and which listening sockets belong to another
# program (the haproxy, pgbouncer and prometheus roles, from `ss -Hltnp`).
import ipaddress
import json


def _parse(address):
    """(ip, prefix or None) of `address` ("10.0.0.50" or "10.0.0.50/24"),
    None when it is not an IPv4 address with a prefix of 1 to 32."""
    text = str(address).strip()
    ip, _, prefix = text.partition("/")
    try:
        ip = ipaddress.IPv4Address(ip)
    except ValueError:
        return None
    if prefix:
        if not prefix.isdigit() or not 1 <= int(prefix) <= 32:
            return None
        return ip, int(prefix)
    return ip, None


def pgherd_vip_valid(address):
    """Whether `address` is an IPv4 address, with or without a prefix."""
    return _parse(address) is not None


def pgherd_vip_interface(ip_json, address):
    """{interface, prefix} of the interface whose network holds `address`
    (its own prefix when given), not counting the address itself, or {}
    when none does: the same choice as `pgherd vip` makes."""
    parsed = _parse(address)
    if parsed is None:
        return {}
    vip, given = parsed
    best = None
    for link in json.loads(ip_json or "[]"):
        for info in link.get("addr_info") or []:
            if info.get("family") != "inet":
                continue
            local, prefix = ipaddress.IPv4Address(info["local"]), int(info["prefixlen"])
            if local == vip or prefix >= 32:
                continue
            if vip in ipaddress.IPv4Network("%s/%d" % (local, prefix), strict=False):
                if best is None or prefix > best[1]:
                    best = (link["ifname"], prefix)
    if best is None:
        return {}
    return {"interface": best[0], "prefix": given or best[1]}


def pgherd_other_listeners(lines, program):
    """The lines of `ss -Hltnp` among `lines` (the others are the role's
    own `key: value` notes) for sockets a program other than `program`
    listens on."""
    return [line for line in lines if line.startswith("LISTEN") and ('"%s"' % program) not in line]


class FilterModule:
    def filters(self):
        return {
            "pgherd_other_listeners": pgherd_other_listeners,
            "pgherd_vip_valid": pgherd_vip_valid,
            "pgherd_vip_interface": pgherd_vip_interface,
        }
