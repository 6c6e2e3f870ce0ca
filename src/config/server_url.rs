//! `server_url`, parsed once where the configuration is read: the URL clients
//! log in at, as written (without a trailing `/`), with its host and port, so no
//! other module parses it again.

use std::fmt;

/// An `http://` or `https://` URL with a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    text: String,
    host: String,
    port: u16,
    https: bool,
}

impl ServerUrl {
    /// Parses `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<ServerUrl, String> {
        let text = text.trim();
        let expected = "(expected e.g. https://headway.example.com or http://203.0.113.5:8080)";
        let scheme_ok = text
            .split_once("://")
            .is_some_and(|(scheme, _)| matches!(scheme, "http" | "https"));
        if !scheme_ok {
            return Err(format!(
                "{text:?} must start with http:// or https:// {expected}"
            ));
        }
        let url = url::Url::parse(text).map_err(|err| match err {
            url::ParseError::EmptyHost => format!("{text:?} has no host {expected}"),
            err => format!("{text:?}: {err} {expected}"),
        })?;
        let host = match url.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => {
                name.trim_end_matches('.').to_ascii_lowercase()
            }
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(format!("{text:?} has no host {expected}")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{text:?} carries a user name or password; clients would send them in the clear {expected}"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{text:?} has a query or fragment, which clients cannot use {expected}"
            ));
        }
        Ok(ServerUrl {
            port: url.port_or_known_default().unwrap_or(80),
            https: url.scheme() == "https",
            host,
            text: text.trim_end_matches('/').to_owned(),
        })
    }

    /// The URL as written, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host: a lower-case DNS name without a trailing dot, or an IP address
    /// without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Whether the host is an IP address rather than a name.
    pub fn host_is_address(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_once_into_host_and_port() {
        let cases = [
            ("http://127.0.0.1:8080", "127.0.0.1", 8080, false),
            ("https://HS.Example.com/", "hs.example.com", 443, true),
            ("https://hs.example.com.:8443", "hs.example.com", 8443, true),
            ("http://[::1]:8080", "::1", 8080, false),
            ("http://example.com", "example.com", 80, false),
        ];
        for (text, host, port, https) in cases {
            let url = ServerUrl::parse(text).unwrap();
            assert_eq!(
                (url.host(), url.port(), url.is_https()),
                (host, port, https),
                "{text}"
            );
            assert!(!url.as_str().ends_with('/'));
        }
        assert_eq!(
            ServerUrl::parse("http://127.0.0.1:8080/").unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert!(
            ServerUrl::parse("http://[::1]:8080")
                .unwrap()
                .host_is_address()
        );
    }

    #[test]
    fn what_clients_cannot_use_is_refused_with_why() {
        for (text, why) in [
            ("headway.example.com", "must start with http:// or https://"),
            ("ftp://example.com", "must start with http:// or https://"),
            ("unix:/tmp/x", "must start with http:// or https://"),
            ("https://", "has no host"),
            ("http://user:pw@example.com", "user name or password"),
            ("https://example.com/?a=b", "query or fragment"),
            ("https://exa mple.com", "invalid international domain name"),
        ] {
            let err = ServerUrl::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
