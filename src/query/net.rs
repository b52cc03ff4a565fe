//! IP networks and address ranges, as Elasticsearch's `ip` fields compare them.

use std::net::IpAddr;

/// An IPv4 or IPv6 network (`10.0.0.0/8`) or address range (`10.0.0.1-10.0.0.9`): the
/// addresses from `low` to `high` of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v4: bool,
    low: u128,
    high: u128,
}

fn ip_bits(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v) => (true, u128::from(u32::from(v))),
        IpAddr::V6(v) => (false, u128::from(v)),
    }
}

impl Cidr {
    /// `10.0.0.0/8`, `fc00::/7`, or a single address.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u32>().ok()?),
            None => {
                let a = text.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let (v4, bits) = ip_bits(addr);
        let width = if v4 { 32 } else { 128 };
        if prefix > width {
            return None;
        }
        let host = width - prefix;
        let mask = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        Some(Cidr {
            v4,
            low: bits & !mask,
            high: bits | mask,
        })
    }

    /// `10.0.0.1-10.0.0.9`: both ends of one family, low first.
    pub fn parse_range(text: &str) -> Option<Cidr> {
        let (a, b) = text.split_once('-')?;
        let (v4, low) = ip_bits(a.trim().parse().ok()?);
        let (v4b, high) = ip_bits(b.trim().parse().ok()?);
        (v4 == v4b && low <= high).then_some(Cidr { v4, low, high })
    }

    /// One address only.
    pub fn is_single(&self) -> bool {
        self.low == self.high
    }

    pub fn contains(&self, text: &str) -> bool {
        let Ok(ip) = text.parse::<IpAddr>() else {
            return false;
        };
        let (v4, bits) = ip_bits(ip);
        v4 == self.v4 && (self.low..=self.high).contains(&bits)
    }
}
