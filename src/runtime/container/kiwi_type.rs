//! Which KIWI image type a build makes, so that a rootless container refuses, before it
//! starts, a type that needs loop devices (which a user namespace cannot have). The type
//! is kiwi's `--type` when given, else the description's primary `<type image="...">`
//! (KIWI's schema: `preferences/type`, `primary="true"`, else the first).

use std::ffi::OsString;
use std::path::Path;

/// Image types kiwi builds without loop devices: root tarballs and container images.
pub const WITHOUT_LOOP: &[&str] = &["tbz", "docker", "oci", "appx", "wsl"];

/// The image type of the build, if one can be told.
pub fn image_type(args: &[OsString], description: &Path) -> Option<String> {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for (i, word) in words.iter().enumerate() {
        if let Some(value) = word.strip_prefix("--type=") {
            return Some(value.to_string());
        }
        if word == "--type" {
            return words.get(i + 1).cloned();
        }
    }
    let text = description_text(description)?;
    primary_type(&text)
}

fn description_text(dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("config.kiwi")) {
        return Some(text);
    }
    let mut kiwi_files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "kiwi"))
        .collect();
    kiwi_files.sort();
    std::fs::read_to_string(kiwi_files.first()?).ok()
}

/// The `image` attribute of the `<type>` marked primary, else of the first `<type>`.
fn primary_type(xml: &str) -> Option<String> {
    let mut first = None;
    for tag in xml.split("<type").skip(1) {
        if !tag.starts_with(|c: char| c.is_whitespace()) {
            continue; // e.g. <typeinstall>
        }
        let tag = tag.split('>').next().unwrap_or_default();
        let Some(image) = attribute(tag, "image") else {
            continue;
        };
        if attribute(tag, "primary").as_deref() == Some("true") {
            return Some(image);
        }
        first.get_or_insert(image);
    }
    first
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!("{name}="))?;
    let rest = &tag[at + name.len() + 1..];
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = rest[1..].split(quote).next()?;
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_from_the_command_line_or_the_description() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.kiwi"),
            r#"<image><preferences><type image="tbz"/><type image='oem' primary="true" filesystem="ext4"/></preferences></image>"#,
        )
        .unwrap();
        assert_eq!(image_type(&[], dir.path()).as_deref(), Some("oem"));
        let args: Vec<OsString> = vec!["--type".into(), "tbz".into(), "system".into()];
        assert_eq!(image_type(&args, dir.path()).as_deref(), Some("tbz"));
        let args: Vec<OsString> = vec!["--type=iso".into()];
        assert_eq!(image_type(&args, dir.path()).as_deref(), Some("iso"));
        std::fs::write(
            dir.path().join("config.kiwi"),
            r#"<preferences><typeinstall/><type image="docker"/><type image="oem"/></preferences>"#,
        )
        .unwrap();
        assert_eq!(image_type(&[], dir.path()).as_deref(), Some("docker"));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(image_type(&[], empty.path()), None);
    }
}
