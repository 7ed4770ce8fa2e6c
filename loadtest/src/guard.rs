//! Where the load generator may send traffic: only to this machine.
//!
//! A load test is a traffic flood; pointed at someone else's server it is an attack. So the
//! target must be a loopback address (127.0.0.0/8 or ::1). The one exception is a comparison
//! SFU that cannot run on loopback (Janus offers no loopback ICE candidates) and so runs in a
//! network namespace the benchmark script creates on a veth pair: `--allow-netns-target`
//! admits private (RFC 1918) and link-local addresses, which such a namespace uses, and
//! nothing routable on the internet.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};

/// Parses `http://host:port[/...]` into the server's HTTP address and checks it is allowed.
pub fn parse_target(url: &str, allow_netns: bool) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("the target URL must start with http:// (the server is on this machine)")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr = if let Some(port) = authority.strip_prefix("localhost:") {
        let port: u16 = port.parse().context("bad port in the target URL")?;
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        // Only literal addresses: resolving names could land anywhere.
        authority
            .parse::<SocketAddr>()
            .with_context(|| format!("the target must be ip:port, got {authority:?}"))?
    };
    check_ip(addr.ip(), allow_netns)?;
    Ok(addr)
}

pub fn check_ip(ip: IpAddr, allow_netns: bool) -> anyhow::Result<()> {
    if ip.is_loopback() {
        return Ok(());
    }
    let private = match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.is_unique_local(),
    };
    if allow_netns && private {
        return Ok(());
    }
    if private {
        bail!(
            "{ip} is not loopback; a server in a network namespace created for the benchmark needs --allow-netns-target"
        );
    }
    bail!("refusing to load-test {ip}: only loopback targets (127.0.0.0/8, ::1) are allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_netns_allowed() {
        assert!(parse_target("http://127.0.0.1:7880", false).is_ok());
        assert!(parse_target("http://127.5.0.1:7880/", false).is_ok());
        assert!(parse_target("http://localhost:7880", false).is_ok());
        assert!(parse_target("http://[::1]:7880", false).is_ok());
        assert!(parse_target("http://10.77.0.2:8188", false).is_err());
        assert!(parse_target("http://10.77.0.2:8188", true).is_ok());
        assert!(parse_target("http://8.8.8.8:80", true).is_err());
        assert!(parse_target("http://example.com:80", true).is_err());
        assert!(parse_target("https://127.0.0.1:1", false).is_err());
        assert!(parse_target("http://127.0.0.1", false).is_err());
    }
}
