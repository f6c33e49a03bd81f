//! `boxbuild --list-boxes` / `boxbuild box list`.

use crate::catalog::{self, compare_versions};
use crate::error::Result;

pub fn list_boxes() -> Result<u8> {
    let catalogs = catalog::load_all()?;
    let mut rows = vec![[
        "NAME".to_string(),
        "ARCH".into(),
        "NEWEST".into(),
        "DESCRIPTION".into(),
    ]];
    for name in catalog::known_boxes(&catalogs) {
        let Some(cat) = catalogs.iter().find(|c| c.file.boxes.contains_key(name)) else {
            continue;
        };
        let entry = &cat.file.boxes[name];
        let mut archs: Vec<&str> = entry.versions.iter().map(|v| v.arch.as_str()).collect();
        archs.sort();
        archs.dedup();
        for arch in archs {
            let newest = entry
                .versions
                .iter()
                .filter(|v| v.arch == arch)
                .max_by(|a, b| compare_versions(&a.version, &b.version))
                .map(|v| v.version.clone())
                .unwrap_or_default();
            rows.push([
                name.to_string(),
                arch.to_string(),
                newest,
                entry.description.clone(),
            ]);
        }
    }
    if rows.len() == 1 {
        println!("no boxes in any catalog; see docs/catalog.md");
        return Ok(0);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    Ok(0)
}
