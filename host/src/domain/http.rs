//! Outbound HTTP from plugins (docs/plugins.md, "Outbound HTTP"): the grants a step definition
//! gives (`allow_http`), the rules a request's URL and resolved addresses must pass, and the
//! record of each call kept with the attempt's outcome event (docs/events.md).
//!
//! Pure: the runtime resolves names and connects; this module only decides.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// What a grant's host part names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GrantHost {
    /// Exactly this DNS name (lowercase, no trailing dot).
    Name(String),
    /// Any name strictly below this one (`*.example.com`: `a.example.com`, `a.b.example.com`).
    Subdomains(String),
    /// This address, written literally: the only way to reach a non-public address.
    Ip(IpAddr),
}

/// One origin a step may call: scheme, host (or `*.` subdomains) and port, written
/// `https://payments.example.com`, `http://127.0.0.1:9400`, `https://*.example.com:8443`.
/// Without a port, the scheme's default port (443, 80) and no other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpGrant {
    https: bool,
    host: GrantHost,
    port: u16,
}

fn default_port(https: bool) -> u16 {
    if https { 443 } else { 80 }
}

/// A DNS name as grants and requests compare it: lowercase letters, digits, `-` and `.`.
fn dns_name(text: &str) -> Option<String> {
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)).then_some(name)
}

/// The address a URL host names literally (`127.0.0.1`, `[::1]`), if it is one.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse().ok()
}

impl HttpGrant {
    /// Parses `scheme://host[:port]`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text.split_once("://").ok_or("expected scheme://host[:port]")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err("a grant names an origin (scheme, host, port): no path, query or user".into());
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']').ok_or("unclosed [ in an IPv6 address")?;
                (&rest[..addr.len() + 2], after.strip_prefix(':'))
            }
            None => match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            },
        };
        let port = match port {
            None => default_port(https),
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(format!("port {p:?} is not 1-65535"))?,
        };
        let host = if let Some(ip) = ip_literal(host) {
            GrantHost::Ip(ip)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            let name = dns_name(suffix).ok_or(format!("{suffix:?} is not a DNS name"))?;
            if !name.contains('.') {
                return Err(format!("*.{name} would grant a whole top-level domain"));
            }
            GrantHost::Subdomains(name)
        } else {
            GrantHost::Name(dns_name(host).ok_or(format!("{host:?} is not a DNS name or an IP address"))?)
        };
        Ok(Self { https, host, port })
    }

    /// Whether a request to `scheme://host:port` is within this grant. `host` as in the URL
    /// (any case, IPv6 in brackets).
    pub fn covers(&self, https: bool, host: &str, port: u16) -> bool {
        if https != self.https || port != self.port {
            return false;
        }
        match (&self.host, ip_literal(host)) {
            (GrantHost::Ip(granted), Some(ip)) => *granted == ip,
            (GrantHost::Ip(_), None) | (_, Some(_)) => false,
            (GrantHost::Name(name), None) => dns_name(host).is_some_and(|h| h == *name),
            (GrantHost::Subdomains(suffix), None) => dns_name(host).is_some_and(|h| h.ends_with(&format!(".{suffix}"))),
        }
    }

    /// Whether a connection to `addr` may be made under this grant: any public address, and a
    /// non-public one only when the grant names it literally. The error says why not.
    pub fn permits_address(&self, addr: IpAddr) -> Result<(), String> {
        match non_public(addr) {
            None => Ok(()),
            Some(_) if self.host == GrantHost::Ip(canonical(addr)) || self.host == GrantHost::Ip(addr) => Ok(()),
            Some(range) => Err(format!(
                "{addr}, a {range} address; only a grant naming it literally (such as {}://{}) reaches it",
                if self.https { "https" } else { "http" },
                match addr {
                    IpAddr::V6(v6) => format!("[{v6}]:{}", self.port),
                    IpAddr::V4(v4) => format!("{v4}:{}", self.port),
                }
            )),
        }
    }
}

/// The grant among `grants` that covers a request, if any.
pub fn covering<'a>(grants: &'a [HttpGrant], https: bool, host: &str, port: u16) -> Option<&'a HttpGrant> {
    grants.iter().find(|g| g.covers(https, host, port))
}

/// An IPv4 address carried in an IPv6 one (mapped or NAT64) as itself.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || nat64).then_some(tail)
}

/// The kind of non-public range `addr` is in (loopback, private, link-local, ...), or `None`
/// for an address on the public internet.
pub fn non_public(addr: IpAddr) -> Option<&'static str> {
    match canonical(addr) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            match () {
                _ if v4.is_loopback() => Some("loopback"),
                _ if v4.is_link_local() => Some("link-local (cloud metadata)"),
                _ if v4.is_private() => Some("private"),
                _ if a == 0 => Some("unspecified"),
                _ if a == 100 && (64..128).contains(&b) => Some("shared (carrier-grade NAT)"),
                _ if v4.is_broadcast() || v4.is_multicast() => Some("multicast or broadcast"),
                _ if a >= 240 || (a == 192 && b == 0 && v4.octets()[2] == 0) || (a == 198 && (18..20).contains(&b)) => {
                    Some("reserved")
                }
                _ => None,
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            match () {
                _ if v6.is_loopback() => Some("loopback"),
                _ if v6.is_unspecified() => Some("unspecified"),
                _ if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 => Some("link-local"),
                _ if first & 0xfe00 == 0xfc00 => Some("unique-local"),
                _ if first & 0xff00 == 0xff00 => Some("multicast or broadcast"),
                _ if first == 0x2001 && v6.segments()[1] == 0x0db8 => Some("reserved"),
                _ => None,
            }
        }
    }
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.https { "https://" } else { "http://" })?;
        match &self.host {
            GrantHost::Name(n) => f.write_str(n)?,
            GrantHost::Subdomains(n) => write!(f, "*.{n}")?,
            GrantHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]")?,
            GrantHost::Ip(ip) => write!(f, "{ip}")?,
        }
        if self.port != default_port(self.https) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for HttpGrant {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<HttpGrant> for String {
    fn from(g: HttpGrant) -> String {
        g.to_string()
    }
}

/// One outbound request an attempt made (or tried to), as recorded in its outcome event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpCall {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The URL's host, with its port when not the scheme's default.
    pub host: String,
    /// The URL's path, without its query string.
    pub path: String,
    /// The response's status; `None` when there was no response (refused, failed, timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// From the host receiving the request to the end of the response body (or the failure).
    pub duration_ms: u64,
    /// Request body bytes sent.
    pub request_bytes: u64,
    /// Response body bytes received.
    pub response_bytes: u64,
    /// Why the request failed or was refused, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> HttpGrant {
        HttpGrant::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn grants_parse_and_print_canonically() {
        for (text, shown) in [
            ("https://Payments.Example.com", "https://payments.example.com"),
            ("https://payments.example.com:443/", "https://payments.example.com"),
            ("http://127.0.0.1:9400", "http://127.0.0.1:9400"),
            ("https://*.example.com:8443", "https://*.example.com:8443"),
            ("http://[::1]:80", "http://[::1]"),
        ] {
            assert_eq!(g(text).to_string(), shown);
        }
        for bad in [
            "payments.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://x.com:0",
            "https://*.com",
            "https://a b",
        ] {
            assert!(HttpGrant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_cover_scheme_host_and_port() {
        let exact = g("https://payments.example.com");
        assert!(exact.covers(true, "PAYMENTS.example.com", 443));
        assert!(!exact.covers(false, "payments.example.com", 443));
        assert!(!exact.covers(true, "payments.example.com", 8443));
        assert!(!exact.covers(true, "evil.payments.example.com", 443));
        let wild = g("https://*.example.com");
        assert!(wild.covers(true, "a.example.com", 443) && wild.covers(true, "a.b.example.com", 443));
        assert!(!wild.covers(true, "example.com", 443) && !wild.covers(true, "badexample.com", 443));
        let ip = g("http://127.0.0.1:9400");
        assert!(ip.covers(false, "127.0.0.1", 9400));
        assert!(!ip.covers(false, "localhost", 9400));
        assert!(g("http://[::1]:9").covers(false, "[::1]", 9));
    }

    #[test]
    fn non_public_addresses_need_a_literal_grant() {
        let by_name = g("http://localhost:9400");
        let literal = g("http://127.0.0.1:9400");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(by_name.permits_address(lo).unwrap_err().contains("loopback"));
        assert!(literal.permits_address(lo).is_ok());
        assert!(literal.permits_address("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        for addr in [
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(non_public(addr.parse().unwrap()).is_some(), "{addr}");
            assert!(by_name.permits_address(addr.parse().unwrap()).is_err(), "{addr}");
        }
        for addr in ["93.184.216.34", "2606:2800:220:1::1", "172.32.0.1"] {
            assert_eq!(non_public(addr.parse().unwrap()), None, "{addr}");
        }
    }
}
