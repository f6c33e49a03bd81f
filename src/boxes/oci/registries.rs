//! What the host already says about registries, read the way podman and skopeo read it:
//! which registries speak plain HTTP (`insecure = true` in containers-registries.conf(5))
//! and the credentials users stored with `podman login`, `skopeo login` or `docker login`
//! (containers-auth.json(5)).

use base64::Engine;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The registries.conf files in the order they apply: `$CONTAINERS_REGISTRIES_CONF`
/// alone when set; else the user's file if it exists, else /etc's; then the drop-in
/// directories (`registries.conf.d/*.conf`, /etc's before the user's, by name).
pub fn registries_conf_files() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        return vec![PathBuf::from(path)];
    }
    let user = dirs::config_dir().map(|d| d.join("containers"));
    let system = PathBuf::from("/etc/containers");
    let mut files = Vec::new();
    match user.as_ref().map(|d| d.join("registries.conf")) {
        Some(file) if file.exists() => files.push(file),
        _ => files.push(system.join("registries.conf")),
    }
    for dir in std::iter::once(system).chain(user) {
        let mut dropins: Vec<PathBuf> = std::fs::read_dir(dir.join("registries.conf.d"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        dropins.sort();
        files.extend(dropins);
    }
    files
}

/// The registries marked `insecure = true`, host[:port] as written. Both formats are read:
/// v2 (`[[registry]] location = ... insecure = true`) and v1
/// (`[registries.insecure] registries = [...]`). Unreadable or malformed files are skipped
/// with the returned warning.
pub fn insecure_registries(files: &[PathBuf]) -> (Vec<String>, Vec<String>) {
    let mut insecure = Vec::new();
    let mut warnings = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        match text.parse::<toml::Table>() {
            Ok(table) => insecure.extend(insecure_in(&table)),
            Err(e) => warnings.push(format!(
                "{}: not read ({}); its registry settings do not apply",
                file.display(),
                e.message()
            )),
        }
    }
    (insecure, warnings)
}

fn insecure_in(table: &toml::Table) -> Vec<String> {
    let mut found = Vec::new();
    for registry in table
        .get("registry")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        let location = registry
            .get("location")
            .or_else(|| registry.get("prefix"))
            .and_then(|l| l.as_str());
        let flag = registry.get("insecure").and_then(|i| i.as_bool());
        if let (Some(location), Some(true)) = (location, flag) {
            found.push(location.to_string());
        }
    }
    if let Some(list) = table
        .get("registries")
        .and_then(|r| r.get("insecure"))
        .and_then(|i| i.get("registries"))
        .and_then(|l| l.as_array())
    {
        found.extend(list.iter().filter_map(|v| v.as_str()).map(String::from));
    }
    found
}

/// The auth files in the order podman reads them: `$REGISTRY_AUTH_FILE`, then
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `$XDG_CONFIG_HOME/containers/auth.json`, then
/// docker's `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(path));
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&runtime).join("containers/auth.json"));
    }
    if let Some(config) = dirs::config_dir() {
        files.push(config.join("containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => files.push(Path::new(&dir).join("config.json")),
        None => files.extend(dirs::home_dir().map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// User name and password for `registry` (host[:port]) from the first auth file that has
/// them. Keys may carry a scheme or a path (docker writes `https://index.docker.io/v1/`);
/// the most specific key matching the host wins within a file.
pub fn credentials(files: &[PathBuf], registry: &str) -> Option<(String, String)> {
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let auths = json.get("auths")?.as_object()?;
        let entries: BTreeMap<&str, &serde_json::Value> =
            auths.iter().map(|(k, v)| (k.as_str(), v)).collect();
        entries
            .iter()
            .filter(|(key, _)| host_of(key) == registry)
            .find_map(|(_, entry)| decode(entry))
    })
}

fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn decode(entry: &serde_json::Value) -> Option<(String, String)> {
    let auth = entry.get("auth")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_registries_conf_formats() {
        let v2: toml::Table = r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "127.0.0.1:5000"
insecure = true
[[registry]]
location = "quay.io"
"#
        .parse()
        .unwrap();
        assert_eq!(insecure_in(&v2), ["127.0.0.1:5000"]);
        let v1: toml::Table = "[registries.insecure]\nregistries = ['a:1', 'b']\n"
            .parse()
            .unwrap();
        assert_eq!(insecure_in(&v1), ["a:1", "b"]);
    }

    #[test]
    fn credentials_from_auth_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("auth.json");
        let second = dir.path().join("config.json");
        // "user:secret" and "docker:pw:with:colons"
        std::fs::write(
            &first,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpzZWNyZXQ="}}}"#,
        )
        .unwrap();
        std::fs::write(
            &second,
            r#"{"auths":{"https://reg.example.org/v1/":{"auth":"ZG9ja2VyOnB3OndpdGg6Y29sb25z"}}}"#,
        )
        .unwrap();
        let files = [first, second];
        assert_eq!(
            credentials(&files, "127.0.0.1:5000"),
            Some(("user".into(), "secret".into()))
        );
        assert_eq!(
            credentials(&files, "reg.example.org"),
            Some(("docker".into(), "pw:with:colons".into()))
        );
        assert_eq!(credentials(&files, "other:1"), None);
    }
}
