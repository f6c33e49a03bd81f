//! A misbehaving proxy in front of a real registry (plain std TCP on 127.0.0.1, one
//! request per connection): it forwards requests and, for the first N requests whose path
//! contains a pattern, answers in ways real proxies and registries do: an error status
//! with the registry's JSON error body and `Retry-After`, a cut transfer, a `206` from
//! byte 0 whatever range was asked for, or a "manifest" far larger than any box's.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    /// This status, with `{"errors":[{"code":CODE,...}]}` and `Retry-After: secs` if given.
    Status {
        code: u16,
        json_code: Option<&'static str>,
        retry_after: Option<u32>,
    },
    /// Forward, but close the connection after this many response body bytes.
    Cut { after: u64 },
    /// A request with a `Range` header is forwarded without it, and the whole blob comes
    /// back as `206` with `Content-Range: bytes 0-...`.
    RangeFromZero,
    /// A 200 answer of `size` bytes of JSON-ish filler; `Content-Length` only if `declared`.
    Huge { size: u64, declared: bool },
}

struct Rule {
    pattern: String,
    only_ranged: bool,
    fault: Fault,
    left: u32,
}

pub struct FaultyProxy {
    pub addr: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// Bytes of fabricated bodies sent (for `Huge`).
    pub fabricated: Arc<AtomicU64>,
    /// Every request line seen, with the fault applied, if any.
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FaultyProxy {
    pub fn start(upstream: &str) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let proxy = FaultyProxy {
            addr,
            rules: Arc::default(),
            fabricated: Arc::default(),
            seen: Arc::default(),
            stop: Arc::default(),
        };
        let (rules, fabricated, seen, stop) = (
            proxy.rules.clone(),
            proxy.fabricated.clone(),
            proxy.seen.clone(),
            proxy.stop.clone(),
        );
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let (rules, fabricated, seen, upstream) = (
                    rules.clone(),
                    fabricated.clone(),
                    seen.clone(),
                    upstream.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, &rules, &fabricated, &seen);
                });
            }
        });
        proxy
    }

    /// Applies `fault` to the first `times` requests whose path contains `pattern`.
    pub fn inject(&self, pattern: &str, fault: Fault, times: u32) {
        self.push(pattern, false, fault, times);
    }

    /// The same, only for requests that carry a `Range` header.
    pub fn inject_ranged(&self, pattern: &str, fault: Fault, times: u32) {
        self.push(pattern, true, fault, times);
    }

    fn push(&self, pattern: &str, only_ranged: bool, fault: Fault, times: u32) {
        self.rules.lock().unwrap().push(Rule {
            pattern: pattern.to_string(),
            only_ranged,
            fault,
            left: times,
        });
    }

    /// How many injections are still to come.
    pub fn pending(&self) -> u32 {
        self.rules.lock().unwrap().iter().map(|r| r.left).sum()
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads up to the end of an HTTP head; returns the head and any bytes after it.
fn read_head(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = data.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&data).into_owned(), rest));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with `drop` headers removed and `Connection: close` set.
fn rewrite(head: &str, drop: &[&str], add: &[String]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for (i, line) in head.trim_end().split("\r\n").enumerate() {
        let name = line.split(':').next().unwrap_or("").trim();
        if i > 0
            && (drop.iter().any(|d| name.eq_ignore_ascii_case(d))
                || name.eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        lines.push(line.to_string());
    }
    lines.extend(add.iter().cloned());
    lines.push("Connection: close".into());
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    fabricated: &AtomicU64,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let (head, mut body) = read_head(&mut client)?;
    let request_line = head.lines().next().unwrap_or("").to_string();
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    let ranged = header(&head, "range").is_some();
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.left > 0 && path.contains(&r.pattern) && (!r.only_ranged || ranged))
            .map(|r| {
                r.left -= 1;
                r.fault.clone()
            })
    };
    seen.lock()
        .unwrap()
        .push(format!("{request_line} {fault:?}"));
    match &fault {
        Some(Fault::Status {
            code,
            json_code,
            retry_after,
        }) => {
            let body = json_code
                .map(|c| format!("{{\"errors\":[{{\"code\":\"{c}\",\"message\":\"injected by the test proxy\",\"detail\":null}}]}}"))
                .unwrap_or_else(|| "injected by the test proxy".into());
            let retry = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            write!(
                client,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        Some(Fault::Huge { size, declared }) => {
            let length = if *declared {
                format!("Content-Length: {size}\r\n")
            } else {
                String::new()
            };
            write!(
                client,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\n{length}Connection: close\r\n\r\n"
            )?;
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0u64;
            while sent < *size {
                let n = chunk.len().min((*size - sent) as usize);
                if client.write_all(&chunk[..n]).is_err() {
                    break;
                }
                sent += n as u64;
                fabricated.fetch_add(n as u64, Ordering::SeqCst);
            }
            return Ok(());
        }
        _ => {}
    }
    let mut server = TcpStream::connect(upstream)?;
    let drop: &[&str] = if matches!(fault, Some(Fault::RangeFromZero)) {
        &["range", "if-range"]
    } else {
        &[]
    };
    server.write_all(rewrite(&head, drop, &[]).as_bytes())?;
    let length: usize = header(&head, "content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        let mut buf = vec![0u8; 65536];
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    server.write_all(&body)?;
    let (response_head, first) = read_head(&mut server)?;
    let response_head = match fault {
        Some(Fault::RangeFromZero) if response_head.starts_with("HTTP/1.1 200") => {
            let total: u64 = header(&response_head, "content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            rewrite(
                &response_head.replacen("HTTP/1.1 200 OK", "HTTP/1.1 206 Partial Content", 1),
                &["content-range"],
                &[format!(
                    "Content-Range: bytes 0-{}/{total}",
                    total.saturating_sub(1)
                )],
            )
        }
        _ => rewrite(&response_head, &[], &[]),
    };
    client.write_all(response_head.as_bytes())?;
    let cut = match fault {
        Some(Fault::Cut { after }) => after,
        _ => u64::MAX,
    };
    let mut passed = 0u64;
    let mut pending = first;
    loop {
        if !pending.is_empty() {
            let n = pending.len().min((cut - passed) as usize);
            client.write_all(&pending[..n])?;
            passed += n as u64;
            if passed >= cut {
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        let mut buf = vec![0u8; 65536];
        let n = server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        pending = buf;
    }
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}
