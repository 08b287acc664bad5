//! Parse errors of addresses, said the way a person can act on. The parsers' own words are
//! accurate but misleading for one common mistake: an IPv6 literal without brackets, which
//! `url` reports as an "invalid port number" and `SocketAddr` as "invalid socket address syntax".

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
