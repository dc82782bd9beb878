//! Embeds the web chat (`web/`) into the binary: every file becomes a
//! `(name, content type, etag, bytes)` entry of a generated table.

use std::fmt::Write as _;
use std::path::Path;

#[path = "src/mime.rs"]
mod mime;

/// FNV-1a, enough for an ETag.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(std::fs::DirEntry::file_name);
    let mut out = String::from("/// The embedded web files: name, content type, ETag, bytes.\n");
    out.push_str("pub(crate) static ASSETS: &[(&str, &str, &str, &[u8])] = &[\n");
    for f in files {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = f.path();
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).expect("read a web file");
        let _ = writeln!(
            out,
            "    ({name:?}, {:?}, \"\\\"{:016x}\\\"\", include_bytes!({:?})),",
            mime::content_type(&name),
            fnv(&bytes),
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("web_assets.rs");
    std::fs::write(dest, out).expect("write the asset table");
}
