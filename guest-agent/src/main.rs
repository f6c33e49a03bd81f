//! boxbuild-agent: runs inside the box, as PID 1 of a minimal init or as a service.
//!
//! It finds its virtio-serial port, greets the host, takes one job, mounts the shares the
//! job names, runs the builder with exactly the given argv, streams its output, reports how
//! it ended, and powers the box off.

mod boot_marks;
mod sys;
mod userland;

use boot_marks::Marks;

use guest_agent::protocol::{self, kind, Job, Network, Status};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

type Channel = Arc<Mutex<File>>;

fn agent_version() -> &'static str {
    match option_env!("CARGO_PKG_VERSION") {
        Some(v) => v,
        None => "dev",
    }
}

fn main() {
    let mut marks = Marks::start();
    let args: Vec<String> = std::env::args().collect();
    let no_poweroff = args.iter().any(|a| a == "--no-poweroff");
    // In a container (`--socket PATH`) the engine provides /dev, /proc, the network and
    // the shares; the agent only talks, runs the builder and exits.
    if let Some(socket) = args
        .iter()
        .position(|a| a == "--socket")
        .and_then(|i| args.get(i + 1))
    {
        let code = match serve(Endpoint::Socket(PathBuf::from(socket)), false, &[], marks) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("boxbuild-agent: {}", e);
                1
            }
        };
        std::process::exit(code);
    }
    let pid1 = sys::is_pid1();
    let failed_setup = if pid1 {
        userland::provide(&mut marks)
    } else {
        Vec::new()
    };
    if let Err(e) = serve(Endpoint::Port, pid1, &failed_setup, marks) {
        userland::console(&e.to_string());
    }
    if pid1 || !no_poweroff {
        let e = sys::power_off();
        userland::console(&format!("power off failed: {}", e));
    }
    if pid1 {
        // PID 1 must never exit: that would panic the kernel.
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Where the host is: the virtio-serial port of a VM, or a unix socket bind-mounted into a
/// container.
enum Endpoint {
    Port,
    Socket(PathBuf),
}

/// The /dev node of the named virtio-serial port; waits for the driver to create it.
fn find_port(name: &str, wait: Duration) -> io::Result<PathBuf> {
    let start = Instant::now();
    loop {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let port_name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if port_name.trim() == name {
                    let dev = Path::new("/dev").join(entry.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if start.elapsed() > wait {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("virtio-serial port {} not found", name),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn send(channel: &Channel, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut port = channel.lock().unwrap_or_else(|p| p.into_inner());
    protocol::write_frame(&mut *port, kind, payload)
}

fn log(channel: &Channel, message: &str) {
    userland::console(message);
    let _ = send(channel, kind::LOG, message.as_bytes());
}

/// Talks to the host. As PID 1 (`pid1`) it also sets the box's clock to the host's;
/// `failed_setup` are the setup steps that failed before the channel was up, reported to
/// the host first. Each step up to the builder's start is marked in `marks` as `agent/STEP`
/// (`channel`, `job`, `clock`, `network`, `certificates`, `mounts`, `builder`), and the
/// marks go to the host just before `STARTED`.
fn serve(
    endpoint: Endpoint,
    pid1: bool,
    failed_setup: &[String],
    mut marks: Marks,
) -> io::Result<()> {
    let port = match endpoint {
        Endpoint::Port => {
            let port_path = find_port(protocol::PORT_NAME, Duration::from_secs(60))?;
            OpenOptions::new().read(true).write(true).open(&port_path)?
        }
        Endpoint::Socket(path) => {
            let stream = std::os::unix::net::UnixStream::connect(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {}", path.display(), e)))?;
            File::from(std::os::unix::io::OwnedFd::from(stream))
        }
    };
    let mut reader = port.try_clone()?;
    let channel: Channel = Arc::new(Mutex::new(port));
    send(
        &channel,
        kind::HELLO,
        &protocol::encode_hello(agent_version()),
    )?;
    for failure in failed_setup {
        let _ = send(
            &channel,
            kind::LOG,
            format!("box setup failed: {}", failure).as_bytes(),
        );
    }
    marks.mark("agent/channel");

    let job = loop {
        match protocol::read_frame(&mut reader)? {
            Some(frame) if frame.kind == kind::JOB => break Job::decode(&frame.payload)?,
            Some(_) => continue,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "host closed the channel before sending a job",
                ))
            }
        }
    };

    marks.mark("agent/job");
    if let (true, Some(host)) = (pid1, job.host_time) {
        match userland::match_host_clock(host) {
            Some(Ok(done)) => log(&channel, &done),
            Some(Err(e)) => log(&channel, &e),
            None => {}
        }
    }
    marks.mark("agent/clock");
    if let Some(network) = &job.network {
        if let Err(e) = configure_network(network) {
            log(&channel, &format!("network not configured: {}", e));
        }
    }
    marks.mark("agent/network");
    let mut job = job;
    if !job.ca_certs.is_empty() {
        match install_ca_certs(&job.ca_certs) {
            Ok(bundle) => {
                log(
                    &channel,
                    &format!("host CA certificates added to {}", bundle),
                );
                for name in &["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"] {
                    let prefix = format!("{}=", name);
                    if !job.env.iter().any(|e| e.starts_with(prefix.as_bytes())) {
                        job.env.push(format!("{}{}", prefix, bundle).into_bytes());
                    }
                }
            }
            Err(e) => log(&channel, &format!("host CA certificates not added: {}", e)),
        }
    }
    marks.mark("agent/certificates");
    let status = match mount_all(&job, &channel) {
        Ok(()) => {
            marks.mark("agent/mounts");
            run_builder(&job, &channel, &mut marks)
        }
        Err(e) => Status::AgentError(e),
    };
    sys::sync_all();
    // With a debug shell the status goes first, so the host reports the build's end
    // while the shares stay mounted for inspection.
    let debug = !job.debug_console.is_empty();
    if debug {
        send(&channel, kind::STATUS, &status.encode())?;
        debug_shell(&job.debug_console);
    }
    for m in job.mounts.iter().rev() {
        let _ = sys::unmount_lazy(&m.target);
    }
    sys::sync_all();
    if !debug {
        send(&channel, kind::STATUS, &status.encode())?;
    }
    Ok(())
}

/// `--box-debug`: a login shell on the console, as the session leader with the console as
/// its controlling terminal (`setsid -c`), so job control and Ctrl-C work. The box powers
/// off when it ends.
fn debug_shell(console: &[u8]) {
    let console = OsStr::from_bytes(console);
    let open = || OpenOptions::new().read(true).write(true).open(console);
    let (stdin, stdout, stderr) = match (open(), open(), open()) {
        (Ok(i), Ok(o), Ok(e)) => (i, o, e),
        _ => {
            userland::console(&format!(
                "cannot open {} for the debug shell",
                console.to_string_lossy()
            ));
            return;
        }
    };
    let shell = if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let banner = "\nboxbuild: the build has ended; this is a shell in the box. \
                  The shares are still mounted. Leave with 'exit' or Ctrl-D: the box then powers off.\n";
    let _ = (&stdout).write_all(banner.as_bytes());
    let status = Command::new("setsid")
        .args(["-c", shell, "-l"])
        .env(
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "linux".into()),
        )
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .status();
    if let Err(e) = status {
        userland::console(&format!("cannot start the debug shell: {}", e));
    }
}

/// The first network interface that is not the loopback, waiting briefly for its driver.
fn first_interface() -> Option<String> {
    let start = Instant::now();
    loop {
        let mut names: Vec<String> = fs::read_dir("/sys/class/net")
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lo")
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if let Some(name) = names.into_iter().next() {
            return Some(name);
        }
        if start.elapsed() > Duration::from_secs(5) {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Brings up the interface and its address and default route with ioctls (no `ip`: a
/// process less at every boot) and names the resolver.
fn configure_network(network: &Network) -> Result<(), String> {
    let iface = first_interface().ok_or("no network interface")?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (address, gateway) = (text(&network.address), text(&network.gateway));
    let (ip, netmask) =
        parse_ipv4_prefix(&address).ok_or_else(|| format!("bad address {}", address))?;
    let gateway_ip: Ipv4Addr = gateway
        .parse()
        .map_err(|_| format!("bad gateway {}", gateway))?;
    sys::interface_up("lo").map_err(|e| format!("lo up: {}", e))?;
    sys::interface_up(&iface).map_err(|e| format!("{} up: {}", iface, e))?;
    sys::set_ipv4_address(&iface, ip, netmask)
        .map_err(|e| format!("{} address {}: {}", iface, address, e))?;
    match sys::add_default_route(gateway_ip) {
        Err(e) if e.raw_os_error() != Some(EEXIST) => {
            return Err(format!("default route via {}: {}", gateway, e))
        }
        _ => {}
    }
    // A symlink (e.g. to systemd-resolved's file) is replaced, not followed.
    let _ = fs::remove_file("/etc/resolv.conf");
    fs::write(
        "/etc/resolv.conf",
        format!("nameserver {}\n", text(&network.nameserver)),
    )
    .map_err(|e| format!("/etc/resolv.conf: {}", e))
}

/// errno for "exists already" (asm-generic/errno-base.h, the same on every box
/// architecture).
const EEXIST: i32 = 17;

/// `10.0.2.15/24` as the address and its network mask (255.255.255.0); None for anything
/// else than an IPv4 address with a prefix length of 0 to 32.
fn parse_ipv4_prefix(text: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let slash = text.find('/')?;
    let address: Ipv4Addr = text[..slash].parse().ok()?;
    let prefix: u32 = text[slash + 1..].parse().ok()?;
    if prefix > 32 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Some((address, Ipv4Addr::from(mask)))
}

/// CA bundles of the distributions, in order of preference.
const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// Appends the certificates to every CA bundle the box has (once per real file) and
/// returns the first bundle's path.
fn install_ca_certs(pem: &[u8]) -> Result<String, String> {
    let mut done: Vec<PathBuf> = Vec::new();
    let mut first = None;
    for bundle in CA_BUNDLES.iter() {
        let real = match fs::canonicalize(bundle) {
            Ok(real) => real,
            Err(_) => continue,
        };
        if done.contains(&real) {
            continue;
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&real)
            .map_err(|e| format!("{}: {}", real.display(), e))?;
        file.write_all(b"\n")
            .and_then(|_| file.write_all(pem))
            .map_err(|e| format!("{}: {}", real.display(), e))?;
        done.push(real);
        if first.is_none() {
            first = Some(bundle.to_string());
        }
    }
    first.ok_or_else(|| "the box has no CA bundle".to_string())
}

/// The device a mount source names: `serial=NAME` is the block device whose serial
/// (QEMU's `-device ...,serial=NAME`) matches, since device names follow probe order.
fn resolve_source(source: &[u8]) -> Result<Vec<u8>, String> {
    let serial = match source.strip_prefix(b"serial=") {
        Some(serial) => serial,
        None => return Ok(source.to_vec()),
    };
    let start = Instant::now();
    loop {
        for entry in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
            let mut found = fs::read(entry.path().join("serial")).unwrap_or_default();
            while found.last().map_or(false, |b| b.is_ascii_whitespace()) {
                found.pop();
            }
            if found == serial {
                let mut dev = b"/dev/".to_vec();
                dev.extend_from_slice(entry.file_name().as_bytes());
                return Ok(dev);
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "no disk with serial {}",
                String::from_utf8_lossy(serial)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn mount_all(job: &Job, channel: &Channel) -> Result<(), String> {
    for m in &job.mounts {
        let target = OsStr::from_bytes(&m.target);
        fs::create_dir_all(target).map_err(|e| {
            format!(
                "cannot create mount point {}: {}",
                target.to_string_lossy(),
                e
            )
        })?;
        if m.fstype == b"sshfs" {
            mount_sshfs(m)?;
            log(
                channel,
                &format!(
                    "mounted {} on {} over sshfs{}",
                    String::from_utf8_lossy(&m.source),
                    target.to_string_lossy(),
                    if m.readonly { " (read-only)" } else { "" }
                ),
            );
            continue;
        }
        let flags = if m.readonly { sys::MS_RDONLY } else { 0 } | sys::MS_NODEV;
        let source = resolve_source(&m.source)?;
        sys::mount_fs(&source, &m.target, &m.fstype, flags, &m.options).map_err(|e| {
            format!(
                "mount {} ({}) on {}: {}",
                String::from_utf8_lossy(&m.source),
                String::from_utf8_lossy(&m.fstype),
                target.to_string_lossy(),
                e
            )
        })?;
        log(
            channel,
            &format!(
                "mounted {} on {}{}",
                String::from_utf8_lossy(&m.source),
                target.to_string_lossy(),
                if m.readonly { " (read-only)" } else { "" }
            ),
        );
    }
    Ok(())
}

/// An sshfs mount: `source` names the virtio-serial port on which the host serves SFTP;
/// sshfs speaks it over its stdin and stdout (`-o passive`), so no network or SSH is
/// involved. sshfs stays in the foreground as the agent's child and ends on unmount.
fn mount_sshfs(m: &protocol::Mount) -> Result<(), String> {
    let port_name = String::from_utf8_lossy(&m.source).into_owned();
    let target = OsStr::from_bytes(&m.target);
    let port = find_port(&port_name, Duration::from_secs(10))
        .and_then(|path| OpenOptions::new().read(true).write(true).open(path))
        .map_err(|e| format!("sshfs port {}: {}", port_name, e))?;
    let port_out = port
        .try_clone()
        .map_err(|e| format!("sshfs port {}: {}", port_name, e))?;
    let mut options = String::from("passive");
    if m.readonly {
        options.push_str(",ro");
    }
    if !m.options.is_empty() {
        options.push(',');
        options.push_str(&String::from_utf8_lossy(&m.options));
    }
    // sshfs outlives this function: its messages go to a file, never to a pipe that
    // nobody reads once the mount is up.
    let log_path = format!("/run/sshfs-{}.log", port_name);
    let log_file = File::create(&log_path).map_err(|e| format!("{}: {}", log_path, e))?;
    let mut child = Command::new("sshfs")
        .arg("-f")
        .arg("-o")
        .arg(&options)
        .arg(":/")
        .arg(target)
        .stdin(port)
        .stdout(port_out)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start sshfs: {}", e))?;
    let start = Instant::now();
    loop {
        if is_mount_point(&m.target) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let said = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "sshfs for {} exited ({}): {}",
                target.to_string_lossy(),
                status,
                said.trim()
            ));
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            return Err(format!(
                "sshfs did not mount {} within 30s",
                target.to_string_lossy()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether /proc/mounts lists `target` as a mount point (spaces appear as \040 there).
fn is_mount_point(target: &[u8]) -> bool {
    let mut escaped = Vec::new();
    for &b in target {
        match b {
            b' ' => escaped.extend_from_slice(b"\\040"),
            b'\t' => escaped.extend_from_slice(b"\\011"),
            b'\n' => escaped.extend_from_slice(b"\\012"),
            b'\\' => escaped.extend_from_slice(b"\\134"),
            b => escaped.push(b),
        }
    }
    let mounts = fs::read("/proc/mounts").unwrap_or_default();
    mounts
        .split(|&b| b == b'\n')
        .any(|line| line.split(|&b| b == b' ').nth(1) == Some(&escaped[..]))
}

/// Copies one output pipe of the builder into frames of `kind` until it closes.
fn forward(mut pipe: impl Read, channel: Channel, kind: u8, done: mpsc::Sender<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if send(&channel, kind, &buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = done.send(());
}

/// Runs the builder and streams its output; marks `agent/builder` once it is started and
/// sends the start-up marks, then `STARTED`.
fn run_builder(job: &Job, channel: &Channel, marks: &mut Marks) -> Status {
    let argv: Vec<&OsStr> = job.argv.iter().map(|a| OsStr::from_bytes(a)).collect();
    let mut command = Command::new(argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !job.workdir.is_empty() {
        command.current_dir(OsStr::from_bytes(&job.workdir));
    }
    for entry in &job.env {
        let split = entry.iter().position(|&b| b == b'=').unwrap_or(entry.len());
        let value = entry.get(split + 1..).unwrap_or(b"");
        command.env(OsStr::from_bytes(&entry[..split]), OsStr::from_bytes(value));
    }
    // SAFETY: new_session only calls setsid(), which is async-signal-safe.
    unsafe {
        command.pre_exec(sys::new_session);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Status::AgentError(format!(
                "cannot start builder {}: {}",
                argv[0].to_string_lossy(),
                e
            ))
        }
    };
    let pid = child.id() as i32;
    marks.mark("agent/builder");
    let _ = send(
        channel,
        kind::BOOT_MARKS,
        &protocol::encode_boot_marks(marks.list()),
    );
    let _ = send(channel, kind::STARTED, &(pid as u32).to_le_bytes());

    let (done_tx, done_rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let (c, d) = (channel.clone(), done_tx.clone());
        readers.push(thread::spawn(move || forward(out, c, kind::STDOUT, d)));
    }
    if let Some(err) = child.stderr.take() {
        let (c, d) = (channel.clone(), done_tx.clone());
        readers.push(thread::spawn(move || forward(err, c, kind::STDERR, d)));
    }
    drop(done_tx);

    let raw = wait_for(pid, &mut child);
    // Whatever the builder left running goes with it, so its pipes close and the box can
    // power off.
    sys::kill_pid(-pid, sys::SIGKILL);
    if sys::is_pid1() {
        sys::kill_pid(-1, sys::SIGKILL);
        while sys::wait_any(false).is_some() {}
    }
    // Output still in flight is drained; a descendant that escaped the session cannot
    // hold the status back for long.
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..readers.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    decode_wait_status(raw)
}

/// As PID 1 every orphan is our child too, so reap them all until the builder's own pid
/// turns up; otherwise std's wait suffices.
fn wait_for(pid: i32, child: &mut std::process::Child) -> i32 {
    if sys::is_pid1() {
        loop {
            match sys::wait_any(true) {
                Some((p, status)) if p == pid => return status,
                Some(_) => continue,
                None => return 0x7f00, // no children at all: treat as exit 127
            }
        }
    }
    use std::os::unix::process::ExitStatusExt;
    match child.wait() {
        Ok(status) => status.into_raw(),
        Err(_) => 0x7f00,
    }
}

fn decode_wait_status(raw: i32) -> Status {
    let signal = raw & 0x7f;
    if signal == 0 {
        Status::Exited((raw >> 8) & 0xff)
    } else {
        Status::Signaled(signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_with_prefix_gives_address_and_mask() {
        let parsed = |t: &str| parse_ipv4_prefix(t).map(|(a, m)| (a.to_string(), m.to_string()));
        assert_eq!(
            parsed("10.0.2.15/24"),
            Some(("10.0.2.15".to_string(), "255.255.255.0".to_string()))
        );
        assert_eq!(
            parsed("192.168.1.9/32").map(|p| p.1),
            Some("255.255.255.255".to_string())
        );
        assert_eq!(
            parsed("10.0.0.1/0").map(|p| p.1),
            Some("0.0.0.0".to_string())
        );
        assert_eq!(
            parsed("10.0.0.1/9").map(|p| p.1),
            Some("255.128.0.0".to_string())
        );
        for bad in [
            "10.0.2.15",
            "10.0.2.15/33",
            "10.0.2/24",
            "x/24",
            "10.0.2.15/-1",
            "",
        ] {
            assert_eq!(parsed(bad), None, "{}", bad);
        }
    }

    #[test]
    fn wait_status_decoding() {
        assert_eq!(decode_wait_status(0), Status::Exited(0));
        assert_eq!(decode_wait_status(77 << 8), Status::Exited(77));
        assert_eq!(decode_wait_status(255 << 8), Status::Exited(255));
        assert_eq!(decode_wait_status(9), Status::Signaled(9));
        assert_eq!(decode_wait_status(11 | 0x80), Status::Signaled(11));
    }

    #[test]
    fn forward_turns_a_pipe_into_frames() {
        let dir = std::env::temp_dir().join(format!("agent-fwd-{}", std::process::id()));
        let channel: Channel = Arc::new(Mutex::new(File::create(&dir).unwrap()));
        let (tx, rx) = mpsc::channel();
        forward(&b"line one\nline two\n"[..], channel, kind::STDERR, tx);
        rx.recv().unwrap();
        let wire = fs::read(&dir).unwrap();
        fs::remove_file(&dir).unwrap();
        let frame = protocol::read_frame(&mut &wire[..]).unwrap().unwrap();
        assert_eq!(frame.kind, kind::STDERR);
        assert_eq!(frame.payload, b"line one\nline two\n");
    }
}
