//! The web app's size as users download it: the release wasm in `dist/`,
//! raw, gzipped, and with brotli as the server sends it; and its budget
//! (`web/bundle-budget.toml`), which the wasm may not outgrow by more than
//! `SLACK` unless the budget is raised with it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Deserialize;

/// How far past its budget the wasm may grow before the check fails.
pub const SLACK: f64 = 0.05;

pub struct Outcome {
    pub file: PathBuf,
    pub raw: u64,
    pub gzipped: u64,
    pub brotli: u64,
}

#[derive(Deserialize)]
struct Budget {
    wasm: WasmBudget,
}

#[derive(Deserialize)]
struct WasmBudget {
    brotli_bytes: u64,
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
        brotli: brotli_size(&bytes)?,
    })
}

/// The budget in `path`, in brotli bytes.
pub fn budget(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the bundle budget {}", path.display()))?;
    let budget: Budget =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(budget.wasm.brotli_bytes)
}

/// Why `outcome` breaks `budget`, if it does.
pub fn over_budget(outcome: &Outcome, budget: u64, path: &Path) -> Option<String> {
    let limit = (budget as f64 * (1.0 + SLACK)).floor() as u64;
    (outcome.brotli > limit).then(|| {
        format!(
            "bundle: the wasm is {} bytes with brotli, more than {:.0}% past its budget of {budget} \
             ({limit} at most): make it smaller, or raise the budget in {} in the same commit and say why",
            outcome.brotli,
            SLACK * 100.0,
            path.display()
        )
    })
}

/// Compressed as the server compresses it (server/src/app/assets.rs:
/// quality 11, a 4 MiB window).
fn brotli_size(content: &[u8]) -> anyhow::Result<u64> {
    let mut packed = Vec::new();
    let mut writer = brotli::CompressorWriter::new(&mut packed, 64 * 1024, 11, 22);
    writer.write_all(content)?;
    drop(writer);
    Ok(packed.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(brotli: u64) -> Outcome {
        Outcome {
            file: PathBuf::from("app_bg.wasm"),
            raw: brotli * 3,
            gzipped: brotli + brotli / 4,
            brotli,
        }
    }

    #[test]
    fn the_wasm_may_grow_five_percent_past_its_budget_and_no_more() {
        let path = Path::new("web/bundle-budget.toml");
        assert_eq!(over_budget(&outcome(100_000), 100_000, path), None);
        assert_eq!(over_budget(&outcome(105_000), 100_000, path), None);
        let refused = over_budget(&outcome(105_001), 100_000, path).expect("past the slack");
        assert!(refused.contains("105001 bytes"), "{refused}");
        assert!(refused.contains("web/bundle-budget.toml"), "{refused}");
    }

    #[test]
    fn the_repositorys_budget_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/bundle-budget.toml");
        assert!(budget(&path).expect("the budget file") > 0);
    }
}
