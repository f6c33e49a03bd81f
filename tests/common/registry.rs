//! A real OCI registry (Debian's docker-registry, the CNCF distribution registry) on
//! 127.0.0.1 for the registry tests, with its access log, optional htpasswd auth, and a
//! TCP proxy in front that can cut one blob's transfer halfway and counts what it passed.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Registry {
    pub addr: String,
    pub root: PathBuf,
    log: PathBuf,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry storing under `dir`; with `htpasswd`, it asks for basic auth.
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        Registry::start_with(dir, htpasswd, None)
    }

    /// Starts a registry speaking HTTPS with `cert` and `key` (PEM files).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Registry {
        Registry::start_with(dir, None, Some((cert, key)))
    }

    fn start_with(dir: &Path, htpasswd: Option<&Path>, tls: Option<(&Path, &Path)>) -> Registry {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let root = dir.join("storage");
        fs::create_dir_all(&root).unwrap();
        let auth = htpasswd
            .map(|p| {
                format!(
                    "auth:\n  htpasswd:\n    realm: boxbuild-test\n    path: {}\n",
                    p.display()
                )
            })
            .unwrap_or_default();
        let tls = tls
            .map(|(cert, key)| {
                format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                )
            })
            .unwrap_or_default();
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}log:\n  level: warn\n  accesslog:\n    disabled: false\n{auth}",
                root.display()
            ),
        )
        .unwrap();
        let log = dir.join("access.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        let registry = Registry {
            addr,
            root,
            log,
            child,
        };
        let start = Instant::now();
        while TcpStream::connect(&registry.addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The requests logged so far (one line each: `METHOD PATH STATUS BYTES`).
    pub fn requests(&self) -> Vec<String> {
        // The access log is written a moment after the response.
        std::thread::sleep(Duration::from_millis(300));
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let request = line.split('"').nth(1)?;
                let after = line.split('"').nth(2)?.trim().to_string();
                let mut parts = request.split(' ');
                Some(format!("{} {} {after}", parts.next()?, parts.next()?))
            })
            .collect()
    }

    /// The file holding blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Registry {
    /// Replaces the index under `tag` of `repository` with a changed copy of index
    /// `digest` (an extra annotation): the bytes a signature covered are no longer what
    /// the tag names.
    pub fn tamper(&self, repository: &str, tag: &str, digest: &str) {
        let mut index: serde_json::Value =
            serde_json::from_slice(&fs::read(self.blob_file(digest)).unwrap()).unwrap();
        index["annotations"]["org.example.tampered"] = "yes".into();
        let body = tempfile::NamedTempFile::new().unwrap();
        fs::write(body.path(), serde_json::to_vec(&index).unwrap()).unwrap();
        let put = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/vnd.oci.image.index.v1+json",
                "--data-binary",
            ])
            .arg(format!("@{}", body.path().display()))
            .arg(format!(
                "http://{}/v2/{repository}/manifests/{tag}",
                self.addr
            ))
            .output()
            .unwrap();
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
    }
}

/// A test's boxbuild talking to registries: its environment, a registries.conf marking
/// the test's registries insecure (plain HTTP), no credentials, and its catalog.
pub struct Setup {
    pub env: crate::common::Env,
    pub conf: PathBuf,
    pub catalog: PathBuf,
}

impl Setup {
    /// For registries at `addrs`, with the catalog `catalog` writes into the test's dir.
    pub fn new(addrs: &[&str], catalog: impl FnOnce(&Path) -> PathBuf) -> Setup {
        let env = crate::common::Env::new();
        let conf = registries_conf(env.tmp.path(), addrs);
        let catalog = catalog(env.tmp.path());
        Setup { env, conf, catalog }
    }

    pub fn command(&self) -> Command {
        let mut c = self.env.boxbuild();
        c.env("BOXBUILD_CONFIG", &self.catalog)
            .env("CONTAINERS_REGISTRIES_CONF", &self.conf)
            .env(
                "REGISTRY_AUTH_FILE",
                self.env.tmp.path().join("no-auth.json"),
            );
        c
    }

    /// Writes the test user's trust.toml (docs/signatures.md).
    pub fn trust(&self, rules: &str) {
        let config = self.env.tmp.path().join("home/.config/boxbuild");
        fs::create_dir_all(&config).unwrap();
        fs::write(config.join("trust.toml"), rules).unwrap();
    }

    /// `boxbuild box ARGS...`.
    pub fn manage(&self, args: &[&str]) -> Output {
        self.command().arg("box").args(args).output().unwrap()
    }

    /// A build in box `reference` of the test's description.
    pub fn build(&self, reference: &str) -> Output {
        self.command()
            .args(["--no-accel", "--box", reference, "--"])
            .arg("--description")
            .arg(&self.env.desc)
            .arg("--target-dir")
            .arg(&self.env.out)
            .output()
            .unwrap()
    }

    /// `box push tiny@VERSION TARGET EXTRA...`; returns the digest it says it pushed.
    pub fn push(&self, target: &str, extra: &[&str]) -> String {
        let version = format!("tiny@{}", crate::common::tiny_version());
        let out = self.manage(&[&["push", &version, target][..], extra].concat());
        crate::common::ok(&out);
        // "pushed tiny@V (aarch64, x86_64) to REF as sha256:..."
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap_or_else(|| panic!("no digest in {text}"))
            .trim_end_matches(',')
            .to_string()
    }
}

/// A P-256 key pair made by openssl: `DIR/NAME.key` (PKCS#8 PEM) and `DIR/NAME.pub`.
pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `registries.conf` marking `addrs` insecure (plain HTTP), as podman and skopeo read it.
pub fn registries_conf(dir: &Path, addrs: &[&str]) -> PathBuf {
    let path = dir.join("registries.conf");
    let mut text = String::new();
    for addr in addrs {
        text.push_str(&format!(
            "[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n"
        ));
    }
    fs::write(&path, text).unwrap();
    path
}

/// Writes `HOME/.config/boxbuild/trust.toml` with one rule: sources under `prefix` must be
/// signed by the public key `public`.
pub fn trust_key(home: &Path, prefix: &str, public: &Path) {
    let config = home.join(".config/boxbuild");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("trust.toml"),
        format!(
            "[[source]]\nprefix = \"{prefix}\"\nkeys = [\"{}\"]\n",
            public.display()
        ),
    )
    .unwrap();
}

/// A TCP proxy to a registry that cuts the first transfer of one blob after `cut_after`
/// response bytes, and counts the response bytes it passed for requests of that blob.
pub struct CuttingProxy {
    pub addr: String,
    pub blob_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    pub fn start(upstream: &str, blob_digest: &str, cut_after: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let blob_bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let cut_done = Arc::new(Mutex::new(false));
        let (upstream, needle) = (upstream.to_string(), format!("/blobs/{blob_digest}"));
        {
            let (blob_bytes, stop) = (blob_bytes.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    client.set_nonblocking(false).unwrap();
                    let server = TcpStream::connect(&upstream).unwrap();
                    let (blob_bytes, cut_done, needle) =
                        (blob_bytes.clone(), cut_done.clone(), needle.clone());
                    std::thread::spawn(move || {
                        relay(client, server, &needle, cut_after, &blob_bytes, &cut_done)
                    });
                }
            });
        }
        CuttingProxy {
            addr,
            blob_bytes,
            stop,
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    needle: &str,
    cut_after: u64,
    blob_bytes: &AtomicU64,
    cut_done: &Mutex<bool>,
) {
    let in_blob = Arc::new(AtomicBool::new(false));
    let (mut client_read, mut server_write) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    {
        let in_blob = in_blob.clone();
        let needle = needle.to_string();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                let n = match client_read.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.contains("HTTP/1.1") {
                    in_blob.store(text.contains(&needle), Ordering::SeqCst);
                }
                if server_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = server_write.shutdown(Shutdown::Write);
        });
    }
    let mut buf = [0u8; 16384];
    let mut passed_in_blob = 0u64;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if in_blob.load(Ordering::SeqCst) {
            blob_bytes.fetch_add(n as u64, Ordering::SeqCst);
            passed_in_blob += n as u64;
            let mut done = cut_done.lock().unwrap();
            if !*done && passed_in_blob >= cut_after {
                *done = true;
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}
