//! Caps on open HTTP connections, in total and per client address.
//!
//! Every connection costs a file descriptor, a task and hyper's buffers for as long as it is
//! open, whether it ever sends a request or not. Without caps, one client opening connections
//! (slowly sending a header, or nothing) exhausts the process's descriptors, and then nobody
//! can join a class. The header-read timeout (see `crate::listener`) frees each such connection
//! after a while; these caps bound how many there can be meanwhile.
//!
//! A connection holds a [`ConnPermit`] until its socket is closed, WebSocket upgrades included:
//! the permit travels with the socket, not with the HTTP connection task.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus::{IntCounterVec, IntGauge};

/// Why a connection was refused; the label is the config option that refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Total,
    PerClient,
}

impl Refusal {
    /// The `reason` label of `aula_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerClient => "max_connections_per_ip",
        }
    }

    /// What the refused client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Total => "the server has too many open connections; retry shortly",
            Refusal::PerClient => "too many open connections from your address; retry shortly",
        }
    }
}

/// The caps and what is open now.
pub(crate) struct ConnLimits {
    max_total: usize,
    /// 0: no per-client cap (e.g. behind a reverse proxy, where every client has its address).
    max_per_client: usize,
    open: Mutex<Open>,
    gauge: IntGauge,
    refused: IntCounterVec,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl ConnLimits {
    /// `gauge` follows the open connections; `refused` counts refusals by [`Refusal::label`].
    pub fn new(
        max_total: usize,
        max_per_client: usize,
        gauge: IntGauge,
        refused: IntCounterVec,
    ) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_client,
            open: Mutex::new(Open::default()),
            gauge,
            refused,
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // The counts are updated in single statements; a panic elsewhere cannot leave them torn.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for one more connection from `ip`, unless a cap is reached (counted as refused).
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let client = client_of(ip);
        let mut open = self.open();
        let refusal = if open.total >= self.max_total {
            Some(Refusal::Total)
        } else if self.max_per_client > 0
            && open.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client
        {
            Some(Refusal::PerClient)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.refused.with_label_values(&[refusal.label()]).inc();
            return Err(refusal);
        }
        open.total += 1;
        *open.per_client.entry(client).or_default() += 1;
        self.gauge.inc();
        Ok(ConnPermit {
            limits: Arc::clone(self),
            client,
        })
    }
}

/// One open connection, counted until dropped.
pub(crate) struct ConnPermit {
    limits: Arc<ConnLimits>,
    client: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open();
        open.total -= 1;
        if let Some(count) = open.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.per_client.remove(&self.client);
            }
        }
        self.limits.gauge.dec();
    }
}

/// The client an address belongs to: IPv4 (also when mapped into IPv6) as is, IPv6 by its /64,
/// the prefix one subscriber is given (a single host can use every address in it).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::MAX >> 64);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn limits(total: usize, per_client: usize) -> Arc<ConnLimits> {
        let refused =
            IntCounterVec::new(Opts::new("refused", "test"), &["reason"]).expect("valid metric");
        ConnLimits::new(
            total,
            per_client,
            IntGauge::new("open", "test").expect("valid metric"),
            refused,
        )
    }

    #[test]
    fn caps_total_and_per_client_and_frees_on_drop() {
        let limits = limits(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("literal");
        let b: IpAddr = "192.0.2.2".parse().expect("literal");
        let a1 = limits.try_acquire(a).expect("first");
        let a2 = limits.try_acquire(a).expect("second");
        assert_eq!(limits.try_acquire(a).err(), Some(Refusal::PerClient));
        let b1 = limits.try_acquire(b).expect("another client");
        assert_eq!(limits.try_acquire(b).err(), Some(Refusal::Total));
        assert_eq!(limits.gauge.get(), 3);
        assert_eq!(
            limits.refused.with_label_values(&["max_connections"]).get(),
            1
        );
        drop(a1);
        let a3 = limits.try_acquire(a).expect("a slot was freed");
        drop((a2, a3, b1));
        assert_eq!(limits.gauge.get(), 0);
        assert!(limits.open().per_client.is_empty(), "no entry left behind");
    }

    #[test]
    fn zero_per_client_is_no_per_client_cap() {
        let limits = limits(2, 0);
        let ip: IpAddr = "127.0.0.1".parse().expect("literal");
        let _permits = (limits.try_acquire(ip), limits.try_acquire(ip));
        assert_eq!(limits.try_acquire(ip).err(), Some(Refusal::Total));
    }

    #[test]
    fn ipv6_clients_are_their_slash_64_and_mapped_ipv4_is_ipv4() {
        let limits = limits(10, 1);
        let _p = limits
            .try_acquire("2001:db8:1:2::1".parse().expect("literal"))
            .expect("first");
        assert_eq!(
            limits
                .try_acquire("2001:db8:1:2:ffff::9".parse().expect("literal"))
                .err(),
            Some(Refusal::PerClient),
            "same /64"
        );
        assert!(
            limits
                .try_acquire("2001:db8:1:3::1".parse().expect("literal"))
                .is_ok()
        );
        let _q = limits
            .try_acquire("192.0.2.7".parse().expect("literal"))
            .expect("v4");
        assert_eq!(
            limits
                .try_acquire("::ffff:192.0.2.7".parse().expect("literal"))
                .err(),
            Some(Refusal::PerClient)
        );
    }
}
