//! Loopback ports for servers nongsan starts (its private PostgreSQL) and for tests.

use rand::Rng;

/// The lowest port drawn: below it lie the default ports of many common servers.
const LOWEST: u16 = 20_000;

/// `n` distinct TCP ports on 127.0.0.1, free now (held together while picked).
///
/// They are drawn at random outside the kernel's ephemeral range, not from `bind(0)`, which
/// answers from that range: every outgoing connection takes its local port there, so a port
/// found free that way can be taken by any connection before the server meant for it binds
/// it, or, for a cluster that keeps its port, at any later start.
pub fn free_loopback_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let draw_from = outside_the_ephemeral_range();
    let mut held: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut rng = rand::rng();
    let mut draws = if draw_from.is_some() { 10_000 } else { 0 };
    while held.len() < n {
        let port = match &draw_from {
            Some(range) if draws > 0 => {
                draws -= 1;
                rng.random_range(range.clone())
            }
            // No room outside the range (a kernel set so), or none free there.
            _ => 0,
        };
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            // Distinct: a port held here cannot be bound again.
            Ok(l) => held.push(l),
            Err(e) if port == 0 => return Err(e),
            Err(_) => {}
        }
    }
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Ports to draw from: from 20,000 up to Linux's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default, and so where it cannot be read),
/// or above it when it starts too low; `None` when neither leaves a thousand ports.
fn outside_the_ephemeral_range() -> Option<std::ops::Range<u16>> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut ends = s.split_whitespace().map(str::parse::<u16>);
            Some((ends.next()?.ok()?, ends.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999));
    if low >= LOWEST + 1_000 {
        Some(LOWEST..low)
    } else if high <= u16::MAX - 1_000 {
        Some(high + 1..u16::MAX)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let ports = free_loopback_ports(20).unwrap();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 20, "{ports:?}");
        let range = outside_the_ephemeral_range();
        for p in ports {
            if let Some(range) = &range {
                assert!(range.contains(&p), "{p} not in {range:?}");
            }
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
