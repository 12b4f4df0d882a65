//! Which upstream addresses keygate may connect to. URLs are set only by an
//! admin and checked when saved and again when connecting: link-local and cloud-metadata
//! addresses are always refused; loopback, private and other internal ranges only with
//! `allow_private_upstreams`.
//!
//! URLs are parsed by the WHATWG rules, so decimal, octal and hex IPv4 forms
//! (`http://2130706433/`, `http://0x7f.1/`) arrive here as the address they denote.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names that always denote a cloud metadata service.
const METADATA_HOSTS: [&str; 4] = ["metadata.google.internal", "metadata.goog", "metadata", "instance-data"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlPolicyError(pub String);

/// How an address is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// Loopback, private, unique-local, shared (CGNAT) and other internal ranges.
    Private,
    /// Never allowed: link-local (which holds most metadata services), metadata, unspecified, multicast, broadcast.
    Forbidden,
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            classify_v6(v6)
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let o = ip.octets();
    if ip.is_link_local() // 169.254/16, home of 169.254.169.254
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        || ip == Ipv4Addr::new(100, 100, 100, 200) // Alibaba Cloud metadata
        || o[0] >= 240
    {
        return AddressClass::Forbidden;
    }
    if ip.is_loopback()
        || ip.is_private()
        || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
        || ip.is_documentation()
    {
        return AddressClass::Private;
    }
    AddressClass::Public
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let seg = ip.segments();
    if ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
    // AWS metadata over IPv6
    {
        return AddressClass::Forbidden;
    }
    if ip.is_loopback()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || seg[0] == 0x2001 && seg[1] == 0x0db8 // documentation
        || seg[0] == 0x64 && seg[1] == 0xff9b // NAT64 may reach anything
        || seg[0] == 0x2002
    // 6to4 embeds an IPv4 address
    {
        return AddressClass::Private;
    }
    AddressClass::Public
}

/// Whether a connection to `ip` is allowed.
pub fn address_allowed(ip: IpAddr, allow_private: bool) -> Result<(), UrlPolicyError> {
    match classify(ip) {
        AddressClass::Public => Ok(()),
        AddressClass::Private if allow_private => Ok(()),
        AddressClass::Private => Err(UrlPolicyError(format!(
            "upstream address {ip} is private or loopback; start keygate with --allow-private-upstreams to allow it"
        ))),
        AddressClass::Forbidden => Err(UrlPolicyError(format!(
            "upstream address {ip} is link-local, a metadata service or otherwise never allowed"
        ))),
    }
}

/// Checks an upstream base URL as saved by an admin: http(s) only, no credentials, no
/// fragment, a host that is not a forbidden name or address. Returns the normalised URL
/// (no trailing slash). DNS names are checked again at connect time.
pub fn check_upstream_url(raw: &str, allow_private: bool) -> Result<url::Url, UrlPolicyError> {
    let raw = raw.trim();
    if raw.len() > 2048 {
        return Err(UrlPolicyError("the URL is too long".into()));
    }
    let url = url::Url::parse(raw).map_err(|e| UrlPolicyError(format!("not a valid URL: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(UrlPolicyError("the URL must start with http:// or https://".into()));
    }
    if !url.username().is_empty() || url.password().is_some() || raw.contains('@') && authority_has_at(raw) {
        return Err(UrlPolicyError(
            "the URL must not carry credentials (user:password@)".into(),
        ));
    }
    if url.fragment().is_some() || raw.contains('#') {
        return Err(UrlPolicyError("the URL must not have a fragment (#…)".into()));
    }
    if url.query().is_some() {
        return Err(UrlPolicyError("the base URL must not have a query string".into()));
    }
    match url.host() {
        None => return Err(UrlPolicyError("the URL has no host".into())),
        Some(url::Host::Ipv4(ip)) => address_allowed(IpAddr::V4(ip), allow_private)?,
        Some(url::Host::Ipv6(ip)) => address_allowed(IpAddr::V6(ip), allow_private)?,
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if METADATA_HOSTS.contains(&d.as_str()) {
                return Err(UrlPolicyError(format!(
                    "{d} is a cloud metadata service and never allowed"
                )));
            }
            if (d == "localhost" || d.ends_with(".localhost")) && !allow_private {
                return Err(UrlPolicyError(
                    "localhost is a loopback address; start keygate with --allow-private-upstreams to allow it".into(),
                ));
            }
        }
    }
    let mut url = url;
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

fn authority_has_at(raw: &str) -> bool {
    let after_scheme = raw.split_once("://").map(|(_, r)| r).unwrap_or(raw);
    let authority_end = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
    after_scheme[..authority_end].contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(u: &str, allow_private: bool) -> bool {
        check_upstream_url(u, allow_private).is_err()
    }

    #[test]
    fn public_urls_pass_and_are_normalised() {
        let u = check_upstream_url("https://api.openai.com/v1/", false).unwrap();
        assert_eq!(u.as_str(), "https://api.openai.com/v1");
        assert!(check_upstream_url("http://8.8.8.8:8080/v1", false).is_ok());
    }

    #[test]
    fn metadata_and_link_local_always_refused() {
        for u in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1",
            "http://METADATA.GOOGLE.INTERNAL./",
            "http://100.100.100.200/",
            "http://[::ffff:169.254.169.254]/",
            "http://0.0.0.0/",
            "http://2852039166/", // 169.254.169.254 as one decimal number
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://0251.0376.0251.0376/", // octal
        ] {
            assert!(
                refused(u, true),
                "{u} must be refused even with private upstreams allowed"
            );
        }
    }

    #[test]
    fn private_and_loopback_need_the_flag() {
        for u in [
            "http://127.0.0.1:9000/v1",
            "http://[::1]:9000/",
            "http://10.0.0.5/",
            "http://192.168.1.1/",
            "http://172.16.0.1/",
            "http://2130706433/", // 127.0.0.1 in decimal
            "http://0x7f.1/",     // 127.0.0.1 in hex shorthand
            "http://017700000001/",
            "http://localhost:8080/",
            "http://100.64.0.1/",
            "http://[fc00::1]/",
        ] {
            assert!(refused(u, false), "{u} must be refused by default");
            assert!(!refused(u, true), "{u} must be allowed with the flag");
        }
    }

    #[test]
    fn tricks_are_refused() {
        assert!(refused("http://api.openai.com@127.0.0.1/", true));
        assert!(refused("http://user:pw@api.openai.com/", false));
        assert!(refused("http://127.0.0.1#@api.openai.com/", true));
        assert!(refused("https://api.openai.com/v1#frag", false));
        assert!(refused("https://api.openai.com/v1?x=1", false));
        assert!(refused("ftp://api.openai.com/", false));
        assert!(refused("file:///etc/passwd", true));
        assert!(refused("not a url", true));
        assert!(refused("gopher://127.0.0.1/", true));
    }
}
