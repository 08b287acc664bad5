//! The SSRF guard: an agent chooses its callback URL, so without a guard a proposal could make
//! countersign POST to the cloud metadata service, an admin port on localhost or anything else
//! on the private network, from inside it.
//!
//! Addresses are judged where they are connected to, not where the URL is accepted: the
//! [`GuardedResolver`] is reqwest's DNS resolver and returns only permitted addresses, and reqwest
//! connects only to what its resolver returns. A name that resolved to a public address when the
//! proposal was made and to 127.0.0.1 at delivery (DNS rebinding) is therefore refused at
//! delivery. reqwest skips the resolver for IP-literal hosts, so [`Guard::check_url`] judges those
//! and must be called before each request; [`Guard::client_builder`] sets up the rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

pub use crate::addresses::{Allowlist, AllowlistError};

/// Why countersign may not call `ip`, or `None` for an ordinary public address.
///
/// IPv6 forms that carry an IPv4 address are judged by that address: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`, address in the last 32 bits) and 6to4 (`2002::/16`, address in bits 16..48).
/// The local-use NAT64 prefix `64:ff9b:1::/48` is refused whole: where the address sits depends
/// on the prefix length the operator chose, and nothing public lives behind it. Teredo
/// (`2001::/32`) is refused whole too: its IPv4 address is obfuscated, and it is a tunnelling
/// mechanism no callback needs. Outside `2000::/3` (global unicast) nothing is allowed.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

/// IPv4 ranges and why each is refused; the first match wins, so exact addresses (metadata,
/// broadcast) come before the ranges that contain them.
const V4_REFUSED: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 32), "unspecified"),
    (v4(0, 0, 0, 0, 8), "this network (0/8)"),
    (v4(10, 0, 0, 0, 8), "private"),
    // Alibaba Cloud's metadata service, inside the CGNAT range.
    (v4(100, 100, 100, 200, 32), "cloud metadata"),
    (v4(100, 64, 0, 0, 10), "carrier-grade NAT"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle… all serve instance credentials here.
    (v4(169, 254, 169, 254, 32), "cloud metadata"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    // Azure's WireServer: public address space, but only ever the host platform.
    (v4(168, 63, 129, 16, 32), "cloud metadata"),
    (v4(172, 16, 0, 0, 12), "private"),
    (
        v4(192, 0, 0, 0, 24),
        "IETF protocol assignments (192.0.0/24)",
    ),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast (192.88.99/24)"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking (198.18/15)"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved (240/4)"),
];

/// IPv6 ranges and why each is refused, after the forms that embed IPv4 have been judged.
const V6_REFUSED: &[(Ipv6Net, &str)] = &[
    // AWS's metadata service on IPv6 (Nitro instances), inside the unique-local range.
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        "cloud metadata",
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard (100::/64)"),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo (2001::/32)"),
    // Benchmarking (2001:2::/48), ORCHID (2001:10::/28, 2001:20::/28) and the like.
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments (2001::/23)",
    ),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local (fc00::/7)",
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (fec0::/10)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

const GLOBAL_UNICAST: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    V4_REFUSED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, reason)| reason)
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    // Before the embedded forms: `::` and `::1` are also "IPv4-compatible" 0.0.0.0 and 0.0.0.1.
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(embedded) = embedded_ipv4(ip) {
        return v4_refusal(embedded);
    }
    let listed = V6_REFUSED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, reason)| reason);
    listed.or_else(|| (!GLOBAL_UNICAST.contains(&ip)).then_some("reserved (outside 2000::/3)"))
}

/// The IPv4 address an IPv6 address stands for, in the forms where a connection to it reaches
/// that IPv4 host (through the kernel, a translator or a tunnel).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let from_segments =
        |high: u16, low: u16| Ipv4Addr::from(u32::from(high) << 16 | u32::from(low));
    let last_32 = from_segments(s[6], s[7]);
    match s {
        // IPv4-compatible (deprecated), IPv4-mapped, IPv4-translated (SIIT).
        [0, 0, 0, 0, 0, 0, _, _]
        | [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(last_32),
        // NAT64 well-known prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last_32),
        // 6to4: 2002:AABB:CCDD::/48 is the site behind AA.BB.CC.DD.
        [0x2002, high, low, ..] => Some(from_segments(high, low)),
        _ => None,
    }
}

/// An address the guard will not let countersign call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ip} is {reason}")]
pub struct Refused {
    pub ip: IpAddr,
    pub reason: &'static str,
}

/// Why a callback URL may not be called, found without touching the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("callback URL scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("callback URL has no host")]
    NoHost,
    #[error("callback URL host {0}")]
    Address(#[from] Refused),
}

/// The refusal rules plus the operator's allowlist; shared by the resolver and URL checks.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Allowlist,
}

impl Guard {
    pub fn new(allow: Allowlist) -> Self {
        Self { allow }
    }

    /// May countersign connect to `ip`? Allowlisted addresses may, whatever [`refusal`] says.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allow.contains(ip) {
            return Ok(());
        }
        match refusal(ip) {
            Some(reason) => Err(Refused { ip, reason }),
            None => Ok(()),
        }
    }

    /// Checks what the resolver never sees: the scheme, and a host that is an IP literal
    /// (`http://127.0.0.1/`, `http://[::1]/`; the url crate has already turned `2130706433` and
    /// `0x7f.1` into 127.0.0.1), with its port against the exact addresses allowed. Host names
    /// pass here and are judged by [`GuardedResolver`]. Call it before every request, including
    /// retries: it is cheap.
    pub fn check_url(&self, url: &Url) -> Result<(), UrlRefused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlRefused::Scheme(url.scheme().to_owned()));
        }
        let ip = match url.host() {
            None => return Err(UrlRefused::NoHost),
            Some(Host::Domain(_)) => return Ok(()),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        if self.allow.contains_address(SocketAddr::new(ip, port)) {
            return Ok(());
        }
        Ok(self.check(ip)?)
    }

    /// A reqwest client builder that connects only where this guard allows: through a
    /// [`GuardedResolver`], with no proxy (a proxy would resolve and connect on our behalf,
    /// unguarded) and no redirects (a redirect to an IP literal would skip the resolver).
    /// Callers still run [`Guard::check_url`] on each URL.
    pub fn client_builder(self: &Arc<Self>) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(self))))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
    }
}

/// reqwest's DNS resolver for callbacks: resolves with the system resolver and returns only the
/// addresses the guard allows, so refused ones are never connected to.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

/// A host name none of whose addresses may be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoPermittedAddress {
    pub host: String,
    pub refused: Vec<Refused>,
}

impl std::fmt::Display for NoPermittedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.refused.is_empty() {
            return write!(f, "{} resolved to no addresses", self.host);
        }
        let refused = join(&self.refused);
        write!(
            f,
            "{} resolves only to refused addresses: {refused}",
            self.host
        )
    }
}

fn join(refused: &[Refused]) -> String {
    let sentences: Vec<String> = refused.iter().map(ToString::to_string).collect();
    sentences.join(", ")
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let (allowed, refused) = sift(&guard, resolved);
            if allowed.is_empty() {
                return Err(NoPermittedAddress { host, refused }.into());
            }
            if !refused.is_empty() {
                // A name with both public and private addresses is odd enough to be worth a line.
                let refused = join(&refused);
                tracing::warn!(%host, %refused, "dropped refused callback addresses");
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Splits resolved addresses into those the guard allows and the refusals of the rest.
fn sift(
    guard: &Guard,
    resolved: impl Iterator<Item = SocketAddr>,
) -> (Vec<SocketAddr>, Vec<Refused>) {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in resolved {
        match guard.check(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(refusal) => refused.push(refusal),
        }
    }
    (allowed, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn assert_refused(address: &str, expected: &str) {
        assert_eq!(refusal(ip(address)), Some(expected), "{address}");
    }

    #[test]
    fn special_ipv4_addresses_are_refused_with_their_reason() {
        assert_refused("127.0.0.1", "loopback");
        assert_refused("127.255.0.9", "loopback");
        assert_refused("10.1.2.3", "private");
        assert_refused("172.16.0.1", "private");
        assert_refused("172.31.255.254", "private");
        assert_refused("192.168.1.1", "private");
        assert_refused("169.254.169.254", "cloud metadata");
        assert_refused("100.100.100.200", "cloud metadata");
        assert_refused("168.63.129.16", "cloud metadata");
        assert_refused("169.254.1.1", "link-local");
        assert_refused("100.64.0.1", "carrier-grade NAT");
        assert_refused("100.127.255.254", "carrier-grade NAT");
        assert_refused("0.0.0.0", "unspecified");
        assert_refused("0.1.2.3", "this network (0/8)");
        assert_refused("224.0.0.1", "multicast");
        assert_refused("239.255.255.250", "multicast");
        assert_refused("255.255.255.255", "broadcast");
        assert_refused("240.0.0.1", "reserved (240/4)");
        assert_refused("192.0.2.1", "documentation");
        assert_refused("198.51.100.1", "documentation");
        assert_refused("203.0.113.1", "documentation");
        assert_refused("198.18.0.1", "benchmarking (198.18/15)");
        assert_refused("198.19.255.1", "benchmarking (198.18/15)");
        assert_refused("192.0.0.8", "IETF protocol assignments (192.0.0/24)");
        assert_refused("192.88.99.1", "6to4 relay anycast (192.88.99/24)");
    }

    #[test]
    fn special_ipv6_addresses_are_refused_with_their_reason() {
        assert_refused("::1", "loopback");
        assert_refused("::", "unspecified");
        assert_refused("fe80::1", "link-local");
        assert_refused("fec0::1", "site-local (fec0::/10)");
        assert_refused("fc00::1", "unique local (fc00::/7)");
        assert_refused("fd12:3456::1", "unique local (fc00::/7)");
        assert_refused("fd00:ec2::254", "cloud metadata");
        assert_refused("ff02::1", "multicast");
        assert_refused("2001:db8::1", "documentation");
        assert_refused("3fff::1", "documentation");
        assert_refused("100::1", "discard (100::/64)");
        assert_refused("2001::1", "Teredo (2001::/32)");
        assert_refused("2001:2::1", "IETF protocol assignments (2001::/23)");
        assert_refused("2001:10::1", "IETF protocol assignments (2001::/23)");
        assert_refused("64:ff9b:1::1", "local-use NAT64 (64:ff9b:1::/48)");
        assert_refused("5f00::1", "reserved (outside 2000::/3)");
        assert_refused("4000::1", "reserved (outside 2000::/3)");
    }

    #[test]
    fn ipv6_forms_that_embed_ipv4_are_judged_by_the_ipv4_address() {
        assert_refused("::ffff:127.0.0.1", "loopback");
        assert_refused("::ffff:10.0.0.1", "private");
        assert_refused("::ffff:169.254.169.254", "cloud metadata");
        assert_refused("::ffff:0:127.0.0.1", "loopback");
        assert_refused("::127.0.0.1", "loopback");
        assert_refused("64:ff9b::7f00:1", "loopback");
        assert_refused("64:ff9b::a9fe:a9fe", "cloud metadata");
        assert_refused("2002:7f00:1::1", "loopback");
        assert_refused("2002:c0a8:101::1", "private");

        for public in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert_eq!(refusal(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(refusal(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn refusals_read_as_a_sentence() {
        let refused = Guard::default().check(ip("127.0.0.1")).unwrap_err();
        assert_eq!(refused.to_string(), "127.0.0.1 is loopback");
    }

    #[test]
    fn an_allowlisted_address_passes_and_others_stay_refused() {
        let guard = Guard::new(Allowlist::parse("127.0.0.1").unwrap());
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert!(guard.check(ip("127.0.0.2")).is_err());
        assert!(guard.check(ip("10.0.0.1")).is_err());

        let guard = Guard::new(Allowlist::parse("127.0.0.0/8").unwrap());
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("127.9.9.9")), Ok(()));
        let refused = guard.check(ip("10.0.0.1")).unwrap_err();
        assert_eq!(refused.reason, "private");
    }

    #[test]
    fn allowlists_take_commas_spaces_cidrs_and_bare_addresses() {
        let allow = Allowlist::parse(" 127.0.0.1, 10.0.0.0/8  ::1,,fd00::/8\n").unwrap();
        for inside in ["127.0.0.1", "10.200.0.1", "::1", "fd00::5"] {
            assert!(allow.contains(ip(inside)), "{inside}");
        }
        for outside in ["127.0.0.2", "192.168.0.1", "::2", "fc00::1"] {
            assert!(!allow.contains(ip(outside)), "{outside}");
        }
        assert_eq!(Allowlist::parse("").unwrap(), Allowlist::default());
        assert!(!Allowlist::default().contains(ip("127.0.0.1")));
    }

    #[test]
    fn a_bad_allowlist_entry_is_named() {
        let error = Allowlist::parse("127.0.0.1, 10.0.0.0/33, ::1").unwrap_err();
        assert_eq!(error.entry, "10.0.0.0/33");
        assert!(error.to_string().contains("\"10.0.0.0/33\""));
        assert_eq!(
            Allowlist::parse("localhost").unwrap_err().entry,
            "localhost"
        );
    }

    #[test]
    fn urls_with_refused_ip_literals_or_schemes_are_refused() {
        let guard = Guard::default();
        let check = |text: &str| guard.check_url(&Url::parse(text).unwrap());

        let refused = |ip_text: &str, reason| {
            Err(UrlRefused::Address(Refused {
                ip: ip(ip_text),
                reason,
            }))
        };
        assert_eq!(
            check("http://127.0.0.1:9/"),
            refused("127.0.0.1", "loopback")
        );
        assert_eq!(check("http://[::1]/"), refused("::1", "loopback"));
        assert_eq!(
            check("http://[::ffff:7f00:1]/"),
            refused("::ffff:127.0.0.1", "loopback")
        );
        // The url crate normalises the numeric spellings browsers accept.
        assert_eq!(
            check("http://2130706433/"),
            refused("127.0.0.1", "loopback")
        );
        assert_eq!(check("http://0x7f.1/"), refused("127.0.0.1", "loopback"));
        assert_eq!(
            check("https://169.254.169.254/latest/meta-data/"),
            refused("169.254.169.254", "cloud metadata")
        );
        assert_eq!(
            check("ftp://example.com"),
            Err(UrlRefused::Scheme("ftp".into()))
        );
        assert_eq!(
            check("file:///etc/passwd"),
            Err(UrlRefused::Scheme("file".into()))
        );

        assert_eq!(check("https://example.com/hook"), Ok(()));
        assert_eq!(
            check("http://localhost:8080/"),
            Ok(()),
            "names are the resolver's job"
        );
        assert_eq!(check("https://93.184.216.34/"), Ok(()));
        assert_eq!(check("https://[2606:4700::1111]/"), Ok(()));
    }

    #[test]
    fn an_exact_address_allows_that_port_only() {
        let own: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let guard = Guard::new(Allowlist::default().with_address(own));
        let check = |text: &str| guard.check_url(&Url::parse(text).unwrap());
        assert_eq!(
            check("http://127.0.0.1:8080/sandbox/agents/a/inbox"),
            Ok(())
        );
        assert_eq!(check("http://[::ffff:127.0.0.1]:8080/"), Ok(()));
        for other in [
            "http://127.0.0.1:8081/",
            "http://127.0.0.1/",
            "http://127.0.0.2:8080/",
            "https://127.0.0.1/",
        ] {
            assert!(check(other).is_err(), "{other}");
        }
        // The resolver sees no port: the address alone is not allowed.
        assert!(guard.check(ip("127.0.0.1")).is_err());
        let https: SocketAddr = "10.0.0.5:443".parse().unwrap();
        let guard = Guard::new(Allowlist::default().with_address(https));
        assert_eq!(
            guard.check_url(&Url::parse("https://10.0.0.5/").unwrap()),
            Ok(())
        );
    }

    #[test]
    fn an_allowlisted_ip_literal_url_passes() {
        let guard = Guard::new(Allowlist::parse("127.0.0.1").unwrap());
        assert_eq!(
            guard.check_url(&Url::parse("http://127.0.0.1:9/").unwrap()),
            Ok(())
        );
    }

    async fn resolve(guard: Guard, host: &str) -> Result<Vec<IpAddr>, String> {
        let resolver = GuardedResolver::new(Arc::new(guard));
        match resolver.resolve(host.parse().unwrap()).await {
            Ok(addrs) => Ok(addrs.map(|addr| addr.ip()).collect()),
            Err(error) => Err(error.to_string()),
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_for_loopback() {
        let error = resolve(Guard::default(), "localhost").await.unwrap_err();
        assert!(
            error.starts_with("localhost resolves only to refused addresses: "),
            "{error}"
        );
        assert!(error.contains("127.0.0.1 is loopback"), "{error}");
    }

    #[tokio::test]
    async fn the_resolver_returns_only_allowlisted_addresses() {
        let guard = Guard::new(Allowlist::parse("127.0.0.1").unwrap());
        let addrs = resolve(guard, "localhost").await.unwrap();
        assert!(addrs.contains(&ip("127.0.0.1")), "{addrs:?}");
        assert!(
            addrs.iter().all(|addr| *addr == ip("127.0.0.1")),
            "{addrs:?}"
        );
    }

    /// One HTTP/1.1 exchange on 127.0.0.1: answers 204 to whatever arrives.
    async fn one_shot_server() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0; 1024];
            let _ = stream.read(&mut request).await;
            let response = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
            stream.write_all(response).await.unwrap();
        });
        port
    }

    #[tokio::test]
    async fn a_guarded_client_does_not_connect_to_a_refused_name() {
        let port = one_shot_server().await;
        let client = Arc::new(Guard::default()).client_builder().build().unwrap();
        let error = client
            .post(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let chain = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("127.0.0.1 is loopback"), "{chain}");
    }

    #[tokio::test]
    async fn a_guarded_client_connects_to_an_allowlisted_name() {
        let port = one_shot_server().await;
        let guard = Arc::new(Guard::new(Allowlist::parse("127.0.0.1").unwrap()));
        let client = guard.client_builder().build().unwrap();
        let response = client
            .post(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    }
}
