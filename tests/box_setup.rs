//! What the host gives the box besides its shares, checked on a real box: the scratch
//! disk, QEMU's user-mode network, the user's proxy settings (a loopback proxy reached
//! through the gateway), and the host's extra CA certificates.

mod common;

use common::http::HttpServer;
use common::{ok, stderr, Env};
use std::fs;

const PROBE: &str = "\
grep ' /var/tmp ' /proc/mounts > scratch-mount.txt
df -k /var/tmp | tail -n 1 > scratch-df.txt
echo \"$BOXBUILD_SCRATCH\" > scratch-env.txt
ip addr > ip.txt
cat /etc/resolv.conf > resolv.txt 2>/dev/null
env | grep -i _proxy= | sort > proxy.txt
cp /etc/ssl/certs/ca-certificates.crt bundle.txt
wget -q -O fetched.txt http://boxbuild-proxy-test.invalid/hello.txt 2> wget.txt
exit 0
";

const TEST_CERT: &str =
    "-----BEGIN CERTIFICATE-----\nboxbuild-test-ca-7f3a\n-----END CERTIFICATE-----\n";

fn read(env: &Env, name: &str) -> String {
    fs::read_to_string(env.out.join(name)).unwrap_or_default()
}

#[test]
fn scratch_disk_network_proxy_and_certificates_reach_the_box() {
    let env = Env::new();
    env.script(PROBE);
    let proxy = HttpServer::start(env.tmp.path());
    let cert = env.tmp.path().join("test-ca.crt");
    fs::write(&cert, TEST_CERT).unwrap();
    let out = env
        .build_command(&["--scratch-size", "1G"], &[])
        .env(
            "http_proxy",
            format!("http://127.0.0.1:{}", proxy.addr.port()),
        )
        .env("no_proxy", "localhost")
        .env("BOXBUILD_CA_CERTS", &cert)
        .output()
        .unwrap();
    ok(&out);

    let mount = read(&env, "scratch-mount.txt");
    assert!(
        mount.contains(" /var/tmp ext4 "),
        "scratch mount: {mount:?}"
    );
    let size_kib: u64 = read(&env, "scratch-df.txt")
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        (900_000..1_100_000).contains(&size_kib),
        "scratch size {size_kib} KiB"
    );
    assert_eq!(read(&env, "scratch-env.txt").trim(), "/var/tmp");

    assert!(read(&env, "ip.txt").contains("inet 10.0.2.15/24"));
    assert_eq!(read(&env, "resolv.txt").trim(), "nameserver 10.0.2.3");
    let proxies = read(&env, "proxy.txt");
    assert!(
        proxies.contains(&format!("http_proxy=http://10.0.2.2:{}", proxy.addr.port())),
        "{proxies}"
    );
    assert!(proxies.contains("no_proxy=localhost"), "{proxies}");
    // The guest's request went out through its network, to the proxy the user set on
    // the host's loopback.
    let seen: Vec<String> = proxy.log().into_iter().map(|l| l.path).collect();
    assert_eq!(
        seen.iter()
            .filter(|p| *p == "http://boxbuild-proxy-test.invalid/hello.txt")
            .count(),
        1,
        "requests seen by the proxy: {:?}; wget said: {}",
        seen,
        read(&env, "wget.txt")
    );
    assert!(read(&env, "bundle.txt").contains("boxbuild-test-ca-7f3a"));
    // The scratch disk lives in the run dir and goes with it.
    assert!(env.leftover_run_dirs().is_empty());
}

#[test]
fn without_network_the_box_gets_no_interface_proxy_or_certificates() {
    let env = Env::new();
    env.script(PROBE);
    let cert = env.tmp.path().join("test-ca.crt");
    fs::write(&cert, TEST_CERT).unwrap();
    let out = env
        .build_command(&["--no-network"], &[])
        .env("http_proxy", "http://127.0.0.1:9")
        .env("BOXBUILD_CA_CERTS", &cert)
        .output()
        .unwrap();
    ok(&out);
    assert!(!read(&env, "ip.txt").contains("10.0.2.15"));
    assert_eq!(read(&env, "proxy.txt"), "");
    assert!(!read(&env, "bundle.txt").contains("boxbuild-test-ca-7f3a"));
    // No scratch disk unless the box or the user asks for one.
    assert_eq!(read(&env, "scratch-mount.txt"), "");
}

#[test]
fn bad_scratch_size_and_certificates_are_one_line_errors() {
    let env = Env::new();
    let out = env.build(&["--scratch-size", "lots"], &[]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("--scratch-size") && err.lines().count() == 1,
        "{err}"
    );

    let der = env.tmp.path().join("ca.der");
    fs::write(&der, [0x30u8, 0x82, 0x01]).unwrap();
    let out = env
        .build_command(&[], &[])
        .env("BOXBUILD_CA_CERTS", &der)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("not a PEM certificate") && err.lines().count() == 1,
        "{err}"
    );
}
