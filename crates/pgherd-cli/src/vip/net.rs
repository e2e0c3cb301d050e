//! The host's side of `pgherd vip`: its IPv4 addresses (`ip -j -4
//! addr`), the interface whose network holds the virtual address, and
//! `ip` itself.

use std::net::Ipv4Addr;
use std::process::Command;

use pgherd_core::error::{Error, Result};
use serde::Deserialize;

/// One IPv4 address of an interface, as `ip -j -4 addr` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct IfAddr {
    pub interface: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

/// The addresses in `ip -j -4 addr`'s output.
pub fn parse_ip_json(text: &str) -> Result<Vec<IfAddr>> {
    #[derive(Deserialize)]
    struct Link {
        ifname: String,
        #[serde(default)]
        addr_info: Vec<Info>,
    }
    #[derive(Deserialize)]
    struct Info {
        #[serde(default)]
        family: String,
        #[serde(default)]
        local: String,
        #[serde(default)]
        prefixlen: u8,
    }
    let links: Vec<Link> = serde_json::from_str(text)
        .map_err(|e| Error::Other(format!("cannot read the output of ip -j -4 addr: {e}")))?;
    Ok(links
        .into_iter()
        .flat_map(|l| {
            let name = l.ifname;
            l.addr_info.into_iter().filter_map(move |a| {
                (a.family == "inet").then_some(())?;
                Some(IfAddr {
                    interface: name.clone(),
                    ip: a.local.parse().ok()?,
                    prefix: a.prefixlen,
                })
            })
        })
        .collect())
}

fn in_network(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The interface (and its network's prefix) whose network holds `vip`:
/// not counting the virtual address itself, which this host may hold.
pub fn network_of(addrs: &[IfAddr], vip: Ipv4Addr) -> Option<(String, u8)> {
    addrs
        .iter()
        .filter(|a| a.ip != vip && a.prefix < 32 && in_network(vip, a.ip, a.prefix))
        .max_by_key(|a| a.prefix)
        .map(|a| (a.interface.clone(), a.prefix))
}

/// This host's IPv4 addresses.
pub fn addresses() -> Result<Vec<IfAddr>> {
    let out = Command::new("ip")
        .args(["-j", "-4", "addr", "show"])
        .output()
        .map_err(|e| Error::Other(format!("cannot run ip (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "ip -j -4 addr show failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_ip_json(&String::from_utf8_lossy(&out.stdout))
}

/// Runs `ip` with `args`; its error output when it fails.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Other(format!("cannot run ip (iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_JSON: &str = r#"[
      {"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
      {"ifindex":2,"ifname":"host0","addr_info":[
        {"family":"inet","local":"10.231.0.11","prefixlen":24},
        {"family":"inet","local":"10.231.0.100","prefixlen":24,"secondary":true}]},
      {"ifindex":3,"ifname":"eth1","addr_info":[{"family":"inet","local":"192.168.7.2","prefixlen":30}]},
      {"ifindex":4,"ifname":"down0"}
    ]"#;

    #[test]
    fn the_interface_is_the_one_whose_network_holds_the_address() {
        let addrs = parse_ip_json(IP_JSON).unwrap();
        assert_eq!(addrs.len(), 4);
        let table = [
            ("10.231.0.100", Some(("host0", 24))),
            ("10.231.0.200", Some(("host0", 24))),
            ("192.168.7.1", Some(("eth1", 30))),
            ("192.168.7.5", None),
            ("127.0.0.99", Some(("lo", 8))),
            ("172.16.0.1", None),
        ];
        for (vip, expected) in table {
            assert_eq!(
                network_of(&addrs, vip.parse().unwrap()),
                expected.map(|(i, p)| (i.to_string(), p)),
                "{vip}"
            );
        }
        assert!(parse_ip_json("not json").is_err());
    }
}
