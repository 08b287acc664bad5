//! Parse errors of addresses, said the way a person can act on. The parsers' own words are
//! accurate but misleading for one common mistake: an IPv6 literal without brackets, which
//! `url` reports as an "invalid port number" and `SocketAddr` as "invalid socket address syntax".
//! And the callback allowlist (`callback_allowlist`): addresses an operator trusts, a plain
//! value that configuration parses and the SSRF guard consults.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Why `text` is not a URL, with a hint when it holds an unbracketed IPv6 literal.
pub fn url_error(text: &str, error: url::ParseError) -> String {
    let authority = text
        .split_once("://")
        .map_or(text, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if unbracketed_ipv6(host) {
        let example = match host.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => format!("http://[{ip}]/ or http://[{ip}]:8080/"),
            Err(_) => "http://[fd00::1]:8080/".to_owned(),
        };
        return format!("{error}: an IPv6 address in a URL needs brackets, e.g. {example}");
    }
    error.to_string()
}

/// Why `text` is not a socket address, with a hint when it holds an unbracketed IPv6 literal.
pub fn socket_error(text: &str, error: std::net::AddrParseError) -> String {
    if unbracketed_ipv6(text) {
        return format!("{error}: an IPv6 address with a port needs brackets, e.g. [::1]:8080");
    }
    error.to_string()
}

/// Two or more colons and no bracket: an IPv6 literal someone forgot to bracket.
fn unbracketed_ipv6(host: &str) -> bool {
    !host.contains('[') && host.matches(':').count() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbracketed_ipv6_literal_is_named() {
        let text = "http://fd00::1/hook";
        let error = url::Url::parse(text).unwrap_err();
        let said = url_error(text, error);
        assert!(said.contains("needs brackets"), "{said}");
        assert!(said.contains("[fd00::1]"), "{said}");

        let text = "fd00::1:8080";
        let error = text.parse::<std::net::SocketAddr>().unwrap_err();
        assert!(socket_error(text, error).contains("[::1]:8080"));
    }

    #[test]
    fn other_errors_are_left_alone() {
        let text = "http://example.com:99999/";
        let error = url::Url::parse(text).unwrap_err();
        assert_eq!(url_error(text, error), "invalid port number");
        let error = "nonsense".parse::<std::net::SocketAddr>().unwrap_err();
        assert_eq!(socket_error("nonsense", error.clone()), error.to_string());
    }
}

/// Networks an operator trusts as callback targets even though [`crate::callbacks::ssrf::refusal`] refuses them: tests
/// allowlist 127.0.0.1; a deployment might allowlist the subnet its agents run in. Beside them,
/// exact addresses with their port ([`Allowlist::with_address`]): `serve --demo` allows its own,
/// where the sandbox's agent inboxes listen, and nothing else on that host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    networks: Vec<IpNet>,
    addresses: Vec<SocketAddr>,
}

/// An allowlist entry that is neither a CIDR nor an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowlist entry {entry:?} is not an IP address or CIDR")]
pub struct AllowlistError {
    pub entry: String,
}

impl Allowlist {
    /// Parses CIDRs (`10.0.0.0/8`) and bare addresses (`127.0.0.1`, `::1`) separated by commas
    /// and/or whitespace. An empty text is an empty allowlist.
    pub fn parse(text: &str) -> Result<Self, AllowlistError> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()
            .map(|networks| Self {
                networks,
                addresses: Vec::new(),
            })
    }

    /// Also allows exactly `address`: that IP at that port, in URLs naming the IP. The resolver
    /// never learns the port, so a host name resolving to it stays refused.
    pub fn with_address(mut self, address: SocketAddr) -> Self {
        self.addresses.push(address);
        self
    }

    /// Is `address` one of the exact addresses allowed (its IP compared as [`Self::contains`]
    /// does)?
    pub fn contains_address(&self, address: SocketAddr) -> bool {
        let canonical = address.ip().to_canonical();
        self.addresses.iter().any(|allowed| {
            allowed.port() == address.port() && allowed.ip().to_canonical() == canonical
        })
    }

    /// Is `ip` in an allowlisted network? An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`)
    /// counts as its IPv4 address, since that is where a connection to it goes.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.networks
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }
}

fn parse_entry(entry: &str) -> Result<IpNet, AllowlistError> {
    let net = entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| AllowlistError {
            entry: entry.to_owned(),
        })?;
    Ok(net.trunc())
}
