//! What every sharing backend must hold, checked on a real box: symlinks cannot lead out of
//! a share, large artifacts arrive intact, and the extra shared path works.

mod common;

use common::{ok, stderr, stdout, Env};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

/// The sharing flags of the backends to check.
const BACKENDS: &[&str] = &["--9p-sharing", "--virtiofs-sharing", "--sshfs-sharing"];

fn file_sha256(path: &std::path::Path) -> String {
    let mut file = fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn symlinks_in_a_share_cannot_lead_out_of_it() {
    for backend in BACKENDS {
        let env = Env::new();
        let secret = env.tmp.path().join("secret");
        fs::write(&secret, "host-secret-42\n").unwrap();
        std::os::unix::fs::symlink(&secret, env.desc.join("absolute")).unwrap();
        std::os::unix::fs::symlink("../secret", env.desc.join("relative")).unwrap();
        std::os::unix::fs::symlink("/", env.desc.join("root")).unwrap();
        let outside = env.tmp.path().join("planted");
        env.script(&format!(
            "cat /description/absolute /description/relative /description/root{secret} 2>&1\n\
             ln -s {outside} planted-link\n\
             echo planted > planted-link 2>/dev/null\n\
             ln -s / up && echo planted > up{outside} 2>/dev/null\n\
             exit 0\n",
            secret = secret.display(),
            outside = outside.display()
        ));
        let out = env.build(&[backend], &[]);
        ok(&out);
        assert!(
            !stdout(&out).contains("host-secret-42"),
            "{backend}: a symlink led to a host file:\n{}",
            stdout(&out)
        );
        assert!(
            !outside.exists(),
            "{backend}: the guest wrote outside the target dir"
        );
    }
}

#[test]
fn a_large_artifact_arrives_intact() {
    for backend in BACKENDS {
        let env = Env::new();
        env.script(
            "dd if=/dev/urandom of=big.img bs=1M count=256 2>/dev/null\n\
             sha256sum big.img > big.img.sha256\n",
        );
        let out = env.build(&[backend, "--timeout", "10m"], &[]);
        ok(&out);
        let big = env.out.join("big.img");
        assert_eq!(fs::metadata(&big).unwrap().len(), 256 << 20, "{backend}");
        let guest_sum = fs::read_to_string(env.out.join("big.img.sha256")).unwrap();
        assert_eq!(
            guest_sum.split_whitespace().next().unwrap(),
            file_sha256(&big),
            "{backend}: the artifact changed on its way"
        );
    }
}

#[test]
fn the_extra_shared_path_is_mounted_read_write_at_the_same_path() {
    for backend in BACKENDS {
        let env = Env::new();
        let extra = env.tmp.path().join("extra dir,1");
        fs::create_dir_all(&extra).unwrap();
        fs::write(extra.join("in.txt"), "from the host\n").unwrap();
        env.script(&format!(
            "cd '{dir}' && cat in.txt && echo from the box > out.txt\n",
            dir = extra.display()
        ));
        let out = env.build(&[backend, "--shared-path", extra.to_str().unwrap()], &[]);
        ok(&out);
        assert!(stdout(&out).contains("from the host"), "{}", stdout(&out));
        let written = extra.join("out.txt");
        assert_eq!(fs::read_to_string(&written).unwrap(), "from the box\n");
        // SAFETY: getuid cannot fail.
        assert_eq!(fs::metadata(&written).unwrap().uid(), unsafe {
            libc::getuid()
        });

        let out = env.build(&[backend, "--shared-path", "/usr"], &[]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr(&out).contains("mounted over /usr"),
            "{}",
            stderr(&out)
        );
    }
}
