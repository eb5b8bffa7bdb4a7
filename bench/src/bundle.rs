//! The web app's size as users download it: the release wasm in `dist/`,
//! raw and gzipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;

pub struct Outcome {
    pub file: PathBuf,
    pub raw: u64,
    pub gzipped: u64,
}

pub fn measure(dist: &Path) -> anyhow::Result<Outcome> {
    let file = std::fs::read_dir(dist)
        .with_context(|| {
            format!(
                "reading {} (build the app with trunk build --release)",
                dist.display()
            )
        })?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "wasm"))
        .with_context(|| format!("no .wasm in {}", dist.display()))?;
    let bytes = std::fs::read(&file)?;
    let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
    gzip.write_all(&bytes)?;
    let gzipped = gzip.finish()?.len() as u64;
    Ok(Outcome {
        file,
        raw: bytes.len() as u64,
        gzipped,
    })
}
