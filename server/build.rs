//! Embeds the web page's built files (`web/dist`, made by `npm run build`
//! in `web/` and committed) in the server binary, so that `cargo run` alone
//! serves the page. Writes `$OUT_DIR/web_assets.rs`: a sorted table of
//! `(url path, bytes)`.

use std::path::{Path, PathBuf};

fn main() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &mut files);
    }
    files.sort();
    let mut table = String::from("&[\n");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let url = file.strip_prefix(&dist).expect("under dist");
        let url = url.to_str().expect("UTF-8 file names in web/dist");
        table.push_str(&format!(
            "    ({:?}, include_bytes!({:?})),\n",
            format!("/{}", url.replace('\\', "/")),
            file.canonicalize().expect("readable file")
        ));
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("web_assets.rs"), table).expect("writable OUT_DIR");
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable web/dist") {
        let path = entry.expect("readable web/dist").path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
