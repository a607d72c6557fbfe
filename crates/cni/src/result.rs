//! The CNI ADD result: the pod's addresses, read from the 0.3.0+ (and legacy 0.2.0) formats.

use std::net::IpAddr;

use serde_json::Value;

/// What ADD produced: the pod's addresses and the full result as the last plugin printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachResult {
    /// Addresses with their prefix lengths: those on interfaces inside the sandbox (the pod's
    /// network namespace), or every address of the result when none names a sandbox interface.
    pub ips: Vec<(IpAddr, u8)>,
    /// The result JSON (kept verbatim in the cache and passed as `prevResult`).
    pub raw: Value,
}

impl AttachResult {
    /// Reads the addresses out of a result. Unparsable entries are skipped, not fatal.
    pub fn from_raw(raw: Value) -> AttachResult {
        let ips = sandbox_ips(&raw);
        AttachResult { ips, raw }
    }

    /// The pod IP: the first IPv4 address, else the first address.
    pub fn pod_ip(&self) -> Option<IpAddr> {
        self.ips
            .iter()
            .map(|(ip, _)| *ip)
            .find(IpAddr::is_ipv4)
            .or_else(|| self.ips.first().map(|(ip, _)| *ip))
    }
}

fn sandbox_ips(raw: &Value) -> Vec<(IpAddr, u8)> {
    let Some(ips) = raw.get("ips").and_then(Value::as_array) else {
        // CNI 0.1.0/0.2.0: {"ip4": {"ip": "10.0.0.2/24"}, "ip6": {...}}.
        return ["ip4", "ip6"]
            .iter()
            .filter_map(|k| raw.get(k)?.get("ip")?.as_str())
            .filter_map(parse_cidr)
            .collect();
    };
    let interfaces = raw
        .get("interfaces")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let in_sandbox = |entry: &Value| {
        let Some(idx) = entry.get("interface").and_then(Value::as_u64) else {
            return false;
        };
        usize::try_from(idx)
            .ok()
            .and_then(|i| interfaces.get(i))
            .and_then(|iface| iface.get("sandbox"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let address = |entry: &Value| entry.get("address")?.as_str().and_then(parse_cidr);
    let sandboxed: Vec<_> = ips
        .iter()
        .filter(|e| in_sandbox(e))
        .filter_map(address)
        .collect();
    if sandboxed.is_empty() {
        ips.iter().filter_map(address).collect()
    } else {
        sandboxed
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, prefix)) => (ip, prefix.parse().ok()?),
        None => {
            let ip: IpAddr = s.parse().ok()?;
            return Some((ip, if ip.is_ipv4() { 32 } else { 128 }));
        }
    };
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prefers_sandbox_interface_and_ipv4() {
        let r = AttachResult::from_raw(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "10.0.0.1/24", "interface": 0},
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 2}
            ]
        }));
        assert_eq!(
            r.ips,
            vec![
                ("fd00::5".parse().unwrap(), 64),
                ("10.0.0.5".parse().unwrap(), 24)
            ]
        );
        assert_eq!(r.pod_ip(), Some("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn falls_back_to_all_ips_and_legacy_format() {
        let r = AttachResult::from_raw(json!({"ips": [{"address": "fd00::7/64"}]}));
        assert_eq!(r.pod_ip(), Some("fd00::7".parse().unwrap()));
        let r = AttachResult::from_raw(json!({"ip4": {"ip": "10.1.0.9/16"}}));
        assert_eq!(r.ips, vec![("10.1.0.9".parse().unwrap(), 16)]);
        let r = AttachResult::from_raw(json!({"cniVersion": "1.0.0"}));
        assert_eq!(r.pod_ip(), None);
        assert_eq!(parse_cidr("10.0.0.1/33"), None);
    }
}
