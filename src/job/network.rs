//! What the host hands the box besides its shares: the network settings of QEMU's
//! user-mode network, the user's proxy variables, and the host's extra CA certificates.
//! Networks that re-sign TLS (corporate proxies) break pip and kiwi in the box without
//! the last two.

use crate::sys::error::{Error, Result};
use guest_agent::protocol::Network;
use reqwest::Url;
use std::path::{Path, PathBuf};

/// QEMU's user-mode network: the guest, the gateway (which is also the host's loopback
/// as seen from the guest) and the DNS forwarder.
const GUEST_ADDRESS: &str = "10.0.2.15/24";
const GATEWAY: &str = "10.0.2.2";
const NAMESERVER: &str = "10.0.2.3";

/// Where Debian and Ubuntu keep the certificates an administrator added.
const HOST_EXTRA_CAS: &str = "/usr/local/share/ca-certificates";

const PROXY_VARIABLES: [&str; 10] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

pub fn user_network() -> Network {
    Network {
        address: GUEST_ADDRESS.as_bytes().to_vec(),
        gateway: GATEWAY.as_bytes().to_vec(),
        nameserver: NAMESERVER.as_bytes().to_vec(),
    }
}

/// The user's proxy variables as `NAME=value` for the builder. A proxy on the host's
/// loopback is reached from the box through the gateway address, unless the box shares
/// the host's network (`host_network`, a container without a network of its own).
pub fn proxy_env(lookup: impl Fn(&str) -> Option<String>, host_network: bool) -> Vec<String> {
    PROXY_VARIABLES
        .iter()
        .filter_map(|name| {
            let value = lookup(name)?;
            let value = if host_network || name.eq_ignore_ascii_case("no_proxy") {
                value
            } else {
                through_gateway(&value)
            };
            Some(format!("{name}={value}"))
        })
        .collect()
}

fn through_gateway(proxy: &str) -> String {
    let Ok(mut url) = Url::parse(proxy) else {
        return proxy.to_string();
    };
    let loopback = match url.host_str() {
        Some(host) => {
            host.eq_ignore_ascii_case("localhost")
                || host == "[::1]"
                || host
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    };
    if loopback && url.set_host(Some(GATEWAY)).is_ok() {
        let mut text = url.to_string();
        // Url adds a '/' path the user did not write; some tools reject it in a proxy.
        if !proxy.ends_with('/') && text.ends_with('/') {
            text.pop();
        }
        text
    } else {
        proxy.to_string()
    }
}

/// The PEM certificates the box should trust besides its own: the host's extra CAs
/// (`/usr/local/share/ca-certificates`) and whatever `$BOXBUILD_CA_CERTS` names (files
/// or directories, separated by ':').
pub fn host_ca_certs(extra: Option<&str>) -> Result<Vec<u8>> {
    let mut files = Vec::new();
    collect_crt(Path::new(HOST_EXTRA_CAS), &mut files);
    if let Some(extra) = extra {
        for part in extra.split(':').filter(|p| !p.is_empty()) {
            let path = Path::new(part);
            if path.is_dir() {
                collect_crt(path, &mut files);
            } else if path.is_file() {
                files.push(path.to_path_buf());
            } else {
                return Err(Error::setup(format!(
                    "BOXBUILD_CA_CERTS: {part} is neither a file nor a directory"
                )));
            }
        }
    }
    let mut pem = Vec::new();
    for file in files {
        let text = std::fs::read(&file)
            .map_err(|e| Error::setup(format!("CA certificate {}: {e}", file.display())))?;
        if !contains(&text, b"-----BEGIN CERTIFICATE-----") {
            return Err(Error::setup(format!(
                "CA certificate {}: not a PEM certificate (convert it with 'openssl x509 -inform der -in FILE -out FILE.crt')",
                file.display()
            )));
        }
        pem.extend_from_slice(&text);
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
    }
    Ok(pem)
}

fn collect_crt(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_crt(&path, out);
        } else if path.extension().is_some_and(|e| e == "crt" || e == "pem") {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_proxies_go_through_the_gateway() {
        assert_eq!(
            through_gateway("http://127.0.0.1:3128"),
            "http://10.0.2.2:3128"
        );
        assert_eq!(
            through_gateway("http://user:pw@localhost:8080/"),
            "http://user:pw@10.0.2.2:8080/"
        );
        assert_eq!(through_gateway("http://[::1]:3128"), "http://10.0.2.2:3128");
        assert_eq!(
            through_gateway("http://proxy.corp:3128"),
            "http://proxy.corp:3128"
        );
        assert_eq!(through_gateway("proxy:3128"), "proxy:3128");
    }

    #[test]
    fn only_set_proxy_variables_are_passed() {
        let lookup = |name: &str| match name {
            "https_proxy" => Some("http://127.0.0.1:3128".into()),
            "no_proxy" => Some("localhost,127.0.0.1".into()),
            _ => None,
        };
        let env = proxy_env(lookup, false);
        assert_eq!(
            env,
            [
                "https_proxy=http://10.0.2.2:3128",
                "no_proxy=localhost,127.0.0.1"
            ]
        );
        // Sharing the host's network, the host's loopback is the box's.
        assert_eq!(
            proxy_env(lookup, true)[0],
            "https_proxy=http://127.0.0.1:3128"
        );
    }

    #[test]
    fn extra_certificates_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.crt");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----",
        )
        .unwrap();
        let pem = host_ca_certs(Some(good.to_str().unwrap())).unwrap();
        assert!(pem.ends_with(b"-----END CERTIFICATE-----\n"));
        let bad = dir.path().join("b.der");
        std::fs::write(&bad, [0x30, 0x82]).unwrap();
        let e = host_ca_certs(Some(bad.to_str().unwrap())).unwrap_err();
        assert!(e.to_string().contains("not a PEM certificate"), "{e}");
        let e = host_ca_certs(Some("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("neither a file"), "{e}");
    }
}
