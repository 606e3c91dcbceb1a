//! Loopback ports for servers nongsan starts (its private PostgreSQL) and for tests.

use rand::Rng;

/// The lowest port drawn: below it are the well-known and registered services' usual ports.
const LOWEST: u16 = 20_000;

/// `n` distinct TCP ports on 127.0.0.1, free now (held together while picked).
///
/// They are drawn at random below the kernel's ephemeral range, not from `bind(0)`, which
/// answers from that range: every outgoing connection takes its local port there, so a port
/// found free that way can be taken by any connection before the server meant for it binds
/// it, or, for a cluster that keeps its port, at any later start.
pub fn free_loopback_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let below = ephemeral_start();
    let mut held: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut rng = rand::rng();
    // A range too small to draw from (a kernel set so) falls back to `bind(0)`.
    let mut draws = if below > LOWEST + 1_000 { 10_000 } else { 0 };
    while held.len() < n {
        let port = if draws > 0 {
            draws -= 1;
            rng.random_range(LOWEST..below)
        } else {
            0
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

/// The first port of Linux's ephemeral range (`net.ipv4.ip_local_port_range`), 32768 where it
/// cannot be read.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_loopback_ports(20).unwrap();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 20, "{ports:?}");
        let below = ephemeral_start();
        for p in ports {
            if below > LOWEST + 1_000 {
                assert!((LOWEST..below).contains(&p), "{p} not in {LOWEST}..{below}");
            }
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
