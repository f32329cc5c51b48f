//! The outbound guard: every URL an org supplies is resolved, and the
//! connection is refused when any address it resolves to is not public.
//!
//! The check runs inside the HTTP client's resolver ([`GuardedResolver`]), so
//! the connection goes to exactly the addresses that were checked — a DNS
//! answer that changes between a check and the connect (rebinding) cannot slip
//! past. A URL whose host is an IP literal never reaches a resolver, so
//! [`Guard::check_url`] checks it before the client is used. Redirects are
//! never followed ([`Guard::http_client`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Why a destination was refused. The message names the class and the host,
/// never a header or credential.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("{host} resolves to a {class} address ({ip}); outbound connections go to public addresses only")]
    Address { host: String, ip: IpAddr, class: &'static str },
    #[error("{host} could not be resolved")]
    Unresolvable { host: String },
    #[error("the URL is not an http(s) URL naming a host")]
    BadUrl,
}

/// The class of an address outbound connections refuse, or `None` for a public one.
/// IPv4-mapped and IPv4-compatible IPv6 addresses are judged as the IPv4 address they carry.
pub fn refused_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_class(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address in its low bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return v4_class(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
            }
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique local (ULA)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
                // ::a.b.c.d (deprecated IPv4-compatible).
                v4_class(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
            } else {
                None
            }
        }
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        // 169.254.0.0/16 holds the cloud metadata endpoint (169.254.169.254).
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("CGNAT")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

/// A CIDR block the operator allows despite its class (`TURNSTONE_ALLOW_PRIVATE_NETWORKS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask(u32::from(n).into(), u32::from(a).into(), self.prefix, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask(u128::from(n), u128::from(a), self.prefix, 128),
            _ => false,
        }
    }
}

fn mask(net: u128, addr: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (addr >> shift)
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr =
            addr.trim_matches(|c| c == '[' || c == ']').parse().map_err(|_| format!("{s:?} is not a CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

/// The operator's exceptions: address blocks outbound connections may reach despite their class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Cidr>);

impl AllowList {
    /// Parses a comma- or space-separated list of CIDR blocks (`127.0.0.0/8, ::1/128`).
    pub fn parse(list: &str) -> Result<AllowList, String> {
        list.split([',', ' ']).filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<_, _>>().map(AllowList)
    }

    /// Loopback, both families: what tests and `scripts/dev` allow.
    pub fn loopback() -> AllowList {
        AllowList::parse("127.0.0.0/8,::1/128").expect("valid")
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// Checks destinations against the address classes and the operator's allow-list.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Arc<AllowList>,
    /// When set, names resolve from this table only and never through DNS
    /// (tests: no query may leave the machine).
    hosts: Option<Arc<Vec<(String, Vec<IpAddr>)>>>,
}

impl Guard {
    pub fn new(allow: AllowList) -> Guard {
        Guard { allow: Arc::new(allow), hosts: None }
    }

    /// Resolves names from `hosts` alone (IP literals as always); any other name is unresolvable.
    pub fn with_hosts_only(mut self, hosts: Vec<(String, Vec<IpAddr>)>) -> Guard {
        self.hosts = Some(Arc::new(hosts));
        self
    }

    /// `Err` when `ip` is of a refused class and not allowed.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        match refused_class(ip) {
            Some(class) if !self.allow.allows(ip) => Err(Refused::Address { host: host.to_owned(), ip, class }),
            _ => Ok(()),
        }
    }

    /// Resolves `host` and checks every address; any refused address refuses them all.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let bare = host.trim_matches(|c| c == '[' || c == ']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match &self.hosts {
                Some(hosts) => hosts
                    .iter()
                    .filter(|(name, _)| name.eq_ignore_ascii_case(bare))
                    .flat_map(|(_, ips)| ips.iter().map(|ip| SocketAddr::new(*ip, port)))
                    .collect(),
                None => tokio::net::lookup_host((bare, port))
                    .await
                    .map_err(|_| Refused::Unresolvable { host: host.to_owned() })?
                    .collect(),
            },
        };
        if addrs.is_empty() {
            return Err(Refused::Unresolvable { host: host.to_owned() });
        }
        for a in &addrs {
            self.check_ip(host, a.ip())?;
        }
        Ok(addrs)
    }

    /// Checks a URL before it is used: its host's addresses (an IP literal is
    /// never handed to the resolver, so this is where it is checked).
    pub async fn check_url(&self, url: &str) -> Result<(), Refused> {
        let u = url::Url::parse(url).map_err(|_| Refused::BadUrl)?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(Refused::BadUrl);
        }
        let host = u.host_str().ok_or(Refused::BadUrl)?;
        let port = u.port_or_known_default().ok_or(Refused::BadUrl)?;
        self.resolve(host, port).await.map(|_| ())
    }

    /// An HTTP client that connects only to checked addresses, follows no
    /// redirect and ignores proxy variables (a proxy would connect on its behalf).
    /// Nagle is off on its sockets: a request's small writes never wait for a delayed ACK.
    pub fn http_client(&self, connect_timeout: Duration) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(self.clone())))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))
    }
}

/// reqwest's resolver, checking every answer: the connection is pinned to what was checked.
struct GuardedResolver(Guard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // The port is the connector's; it replaces the 0 here.
            let addrs = guard.resolve(&host, 0).await.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        refused_class(s.parse().unwrap())
    }

    #[test]
    fn every_refused_class_is_refused() {
        // private (RFC 1918)
        assert_eq!(class("10.1.2.3"), Some("private"));
        assert_eq!(class("172.16.0.1"), Some("private"));
        assert_eq!(class("172.31.255.255"), Some("private"));
        assert_eq!(class("192.168.1.1"), Some("private"));
        // loopback
        assert_eq!(class("127.0.0.1"), Some("loopback"));
        assert_eq!(class("127.255.0.9"), Some("loopback"));
        assert_eq!(class("::1"), Some("loopback"));
        // link-local, the cloud metadata endpoint included
        assert_eq!(class("169.254.169.254"), Some("link-local"));
        assert_eq!(class("169.254.0.1"), Some("link-local"));
        assert_eq!(class("fe80::1"), Some("link-local"));
        // CGNAT
        assert_eq!(class("100.64.0.1"), Some("CGNAT"));
        assert_eq!(class("100.127.255.254"), Some("CGNAT"));
        // ULA (incl. the AWS IPv6 metadata address fd00:ec2::254)
        assert_eq!(class("fd00:ec2::254"), Some("unique local (ULA)"));
        assert_eq!(class("fc00::1"), Some("unique local (ULA)"));
        // multicast
        assert_eq!(class("224.0.0.1"), Some("multicast"));
        assert_eq!(class("239.255.255.250"), Some("multicast"));
        assert_eq!(class("ff02::1"), Some("multicast"));
        // unspecified
        assert_eq!(class("0.0.0.0"), Some("unspecified"));
        assert_eq!(class("0.1.2.3"), Some("unspecified"));
        assert_eq!(class("::"), Some("unspecified"));
        // IPv4 inside IPv6 is judged as IPv4
        assert_eq!(class("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(class("::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(class("64:ff9b::10.0.0.1"), Some("private"));
        assert_eq!(class("255.255.255.255"), Some("reserved"));
    }

    #[test]
    fn public_addresses_pass() {
        for ip in ["1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "2606:4700:4700::1111", "2001:4860::8888"]
        {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn allow_list_parses_and_matches() {
        let allow = AllowList::parse("127.0.0.0/8, ::1/128 10.0.0.0/8").unwrap();
        assert!(allow.allows("127.0.0.2".parse().unwrap()));
        assert!(allow.allows("::1".parse().unwrap()));
        assert!(allow.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(allow.allows("10.9.9.9".parse().unwrap()));
        assert!(!allow.allows("192.168.0.1".parse().unwrap()));
        let one = AllowList::parse("127.0.0.1/32").unwrap();
        assert!(one.allows("127.0.0.1".parse().unwrap()));
        assert!(!one.allows("127.0.0.2".parse().unwrap()));
        assert!(AllowList::parse("").unwrap().0.is_empty());
        assert!(AllowList::parse("127.0.0.0/33").is_err());
        assert!(AllowList::parse("nonsense").is_err());
        assert!(AllowList::parse("0.0.0.0/0").unwrap().allows("10.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn literals_are_checked_without_a_resolver() {
        // No packet is sent: these only classify addresses.
        let guard = Guard::default();
        for url in ["http://127.0.0.1:1/mcp", "http://[::1]:1/", "http://169.254.169.254/latest", "http://10.0.0.1/"] {
            assert!(matches!(guard.check_url(url).await, Err(Refused::Address { .. })), "{url}");
        }
        assert_eq!(guard.check_url("ftp://x/").await, Err(Refused::BadUrl));
        let allowed = Guard::new(AllowList::loopback());
        assert!(allowed.check_url("http://127.0.0.1:1/mcp").await.is_ok());
        assert!(allowed.check_url("http://10.0.0.1/").await.is_err());
    }
}
