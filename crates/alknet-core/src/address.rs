//! How per-address limits count a remote address.

use std::net::IpAddr;

/// The key per-address limits and throttles count `ip` under: IPv4 as is, an IPv4-mapped IPv6
/// address as its IPv4 address, any other IPv6 address by its /64 (one host usually holds a whole
/// /64, so counting single IPv6 addresses would let it multiply every per-address limit).
pub fn counting_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| counting_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(
            key("::ffff:10.0.0.1"),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
    }
}
