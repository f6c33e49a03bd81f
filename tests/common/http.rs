//! A real HTTP/1.1 file server on 127.0.0.1 for the fetch tests: byte ranges, If-Range,
//! ETags and conditional GETs, plus faults on demand (an error status, a connection cut
//! after N bytes, a slow link) and a log of what it sent.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer every request for the path with this status.
    Status(u16),
    /// Close the connection after this many body bytes, for the next `times` requests.
    Cut { after: u64, times: u32 },
    /// Send at most this many bytes per second.
    Slow { bytes_per_sec: u64 },
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
    pub body_bytes: u64,
}

#[derive(Default)]
struct State {
    log: Vec<Logged>,
    faults: HashMap<String, Fault>,
}

pub struct HttpServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves the files under `root`.
    pub fn start(root: &Path) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let root = root.to_path_buf();
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (state, root) = (state.clone(), root.clone());
                            std::thread::spawn(move || {
                                let _ = serve(stream, &root, &state);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                // The listener closes here: later connections are refused.
            })
        };
        HttpServer {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        let key = format!("/{}", path.trim_start_matches('/'));
        self.state.lock().unwrap().faults.insert(key, fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests for `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Logged> {
        let key = format!("/{}", path.trim_start_matches('/'));
        self.log().into_iter().filter(|l| l.path == key).collect()
    }

    /// Body bytes sent for `path` so far.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.requests(path).iter().map(|l| l.body_bytes).sum()
    }

    /// Stops listening: from now on connections are refused.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn etag_of(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\"{}-{mtime}\"", meta.len())
}

fn serve(mut stream: TcpStream, root: &Path, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("/").to_string();
    let range_header = headers.get("range").cloned();
    let fault = state.lock().unwrap().faults.get(&path).cloned();
    let log = |status: u16, body_bytes: u64| {
        state.lock().unwrap().log.push(Logged {
            path: path.clone(),
            range: range_header.clone(),
            status,
            body_bytes,
        });
    };
    if let Some(Fault::Status(code)) = fault {
        write!(
            stream,
            "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        log(code, 0);
        return Ok(());
    }
    let file_path: PathBuf = root.join(path.trim_start_matches('/'));
    let Ok(mut file) = File::open(&file_path) else {
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        log(404, 0);
        return Ok(());
    };
    let meta = file.metadata()?;
    let len = meta.len();
    let etag = etag_of(&meta);
    if headers.get("if-none-match") == Some(&etag) {
        write!(
            stream,
            "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
        )?;
        log(304, 0);
        return Ok(());
    }
    let range_applies = headers.get("if-range").is_none_or(|v| *v == etag);
    let range = range_header
        .as_deref()
        .filter(|_| range_applies)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| {
            let start: u64 = a.parse().unwrap_or(0);
            let end: u64 = b.parse().unwrap_or(len.saturating_sub(1));
            (start, end.min(len.saturating_sub(1)))
        });
    let (status, start, end) = match range {
        Some((start, _)) if start >= len => {
            write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            log(416, 0);
            return Ok(());
        }
        Some((start, end)) => (206, start, end),
        None => (200, 0, len.saturating_sub(1)),
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {count}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        if status == 206 { "Partial Content" } else { "OK" }
    );
    if status == 206 {
        head.push_str(&format!("Content-Range: bytes {start}-{end}/{len}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if method == "HEAD" {
        log(status, 0);
        return Ok(());
    }
    let cut_after = match fault {
        Some(Fault::Cut { after, times }) => {
            let mut s = state.lock().unwrap();
            if times <= 1 {
                s.faults.remove(&path);
            } else {
                s.faults.insert(
                    path.clone(),
                    Fault::Cut {
                        after,
                        times: times - 1,
                    },
                );
            }
            Some(after)
        }
        _ => None,
    };
    let slow = match fault {
        Some(Fault::Slow { bytes_per_sec }) => Some(bytes_per_sec),
        _ => None,
    };
    file.seek(SeekFrom::Start(start))?;
    let limit = cut_after.map_or(count, |c| c.min(count));
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut result = Ok(());
    while sent < limit {
        let want = ((limit - sent) as usize).min(buf.len());
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if let Err(e) = stream.write_all(&buf[..n]) {
            result = Err(e);
            break;
        }
        sent += n as u64;
        if let Some(rate) = slow {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
    }
    log(status, sent);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
    result
}
