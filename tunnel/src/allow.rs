//! `--allow`: which addresses the client dials for the server. A comma-separated list of
//! `CIDR:PORT` rules — `10.0.0.0/8:22`, `192.168.1.5:2375`, `[::1]/128:*`, `127.0.0.1:8000-8100`;
//! a bare address is a /32 (or /128); `*` is any port. The default is the loopback host only.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// The default `--allow`: the client's own loopback host, any port.
pub const DEFAULT: &str = "127.0.0.0/8:*,[::1]/128:*";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    net: IpNet,
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    rules: Vec<Rule>,
}

impl Allow {
    pub fn parse(spec: &str) -> Result<Allow, String> {
        let mut rules = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (net, port) = item.rsplit_once(':').ok_or_else(|| {
                format!("--allow {item:?}: expected CIDR:PORT (e.g. 10.0.0.0/8:22 or 127.0.0.1:*)")
            })?;
            let net = net.trim_start_matches('[').replacen(']', "", 1);
            let net: IpNet = match net.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => net
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("--allow {item:?}: {net:?} is not an address or CIDR"))?,
            };
            let ports = if port == "*" {
                (1, u16::MAX)
            } else if let Some((a, b)) = port.split_once('-') {
                let a = parse_port(item, a)?;
                let b = parse_port(item, b)?;
                if a > b {
                    return Err(format!("--allow {item:?}: port range {a}-{b} is reversed"));
                }
                (a, b)
            } else {
                let p = parse_port(item, port)?;
                (p, p)
            };
            rules.push(Rule { net, ports });
        }
        if rules.is_empty() {
            return Err("--allow is empty: give at least one CIDR:PORT".into());
        }
        Ok(Allow { rules })
    }

    pub fn permits(&self, ip: IpAddr, port: u16) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.rules
            .iter()
            .any(|r| r.net.contains(&ip) && (r.ports.0..=r.ports.1).contains(&port))
    }
}

impl Default for Allow {
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        Allow::parse(DEFAULT).expect("the default --allow parses")
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let net = match r.net {
                IpNet::V6(n) => format!("[{}]/{}", n.addr(), n.prefix_len()),
                IpNet::V4(n) => n.to_string(),
            };
            if r.ports == (1, u16::MAX) {
                write!(f, "{net}:*")?;
            } else if r.ports.0 == r.ports.1 {
                write!(f, "{net}:{}", r.ports.0)?;
            } else {
                write!(f, "{net}:{}-{}", r.ports.0, r.ports.1)?;
            }
        }
        Ok(())
    }
}

fn parse_port(item: &str, p: &str) -> Result<u16, String> {
    p.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("--allow {item:?}: {p:?} is not a port (1-65535 or *)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        let a = Allow::parse("10.0.0.0/8:22, 192.168.1.5:2375,[::1]/128:*,127.0.0.1:8000-8100")
            .unwrap();
        assert!(a.permits("10.1.2.3".parse().unwrap(), 22));
        assert!(!a.permits("10.1.2.3".parse().unwrap(), 23));
        assert!(a.permits("192.168.1.5".parse().unwrap(), 2375));
        assert!(!a.permits("192.168.1.6".parse().unwrap(), 2375));
        assert!(a.permits("::1".parse().unwrap(), 5));
        assert!(a.permits("127.0.0.1".parse().unwrap(), 8050));
        assert!(!a.permits("127.0.0.1".parse().unwrap(), 8101));
        assert_eq!(
            a.to_string(),
            "10.0.0.0/8:22,192.168.1.5/32:2375,[::1]/128:*,127.0.0.1/32:8000-8100"
        );
        let d = Allow::default();
        assert!(d.permits("127.0.0.1".parse().unwrap(), 22));
        assert!(d.permits("::ffff:127.0.0.1".parse().unwrap(), 22));
        assert!(!d.permits("10.0.0.1".parse().unwrap(), 22));
    }

    #[test]
    fn bad_rules_say_why() {
        for (s, why) in [
            ("10.0.0.0/8", "expected CIDR:PORT"),
            ("nonsense:22", "not an address"),
            ("10.0.0.1:0", "not a port"),
            ("10.0.0.1:99999", "not a port"),
            ("10.0.0.1:30-20", "reversed"),
            ("", "empty"),
        ] {
            let e = Allow::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
