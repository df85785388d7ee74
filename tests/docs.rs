//! The READMEs point only at things that exist: every relative link, and every
//! repository path written in backticks (`src/...`, `deploy/...`, `benches/...`).

use std::path::Path;

const ROOTS: [&str; 7] = [
    "src/", "config/", "benches/", "tests/", "deploy/", ".ci/", "docs/",
];
const FILES: [&str; 5] = [
    "Dockerfile",
    "LICENSE",
    "BENCHMARKS.md",
    "README.md",
    "Cargo.toml",
];

/// Relative links and backticked repository paths in `text`.
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for part in text.split("](").skip(1) {
        let target = part.split(')').next().unwrap_or("");
        if !target.contains("://") && !target.starts_with('#') {
            found.push(target.split('#').next().unwrap().to_string());
        }
    }
    for (i, part) in text.split('`').enumerate() {
        // Odd pieces are inside backticks; the first word is the path (then arguments).
        let word = part.split_whitespace().next().unwrap_or("");
        if i % 2 == 1 && (ROOTS.iter().any(|r| word.starts_with(r)) || FILES.contains(&word)) {
            found.push(word.trim_end_matches([',', '.', ':']).to_string());
        }
    }
    found
}

fn check(readme: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(readme);
    let text = std::fs::read_to_string(&path).unwrap();
    let base = path.parent().unwrap();
    let refs = references(&text);
    assert!(refs.len() >= 3, "{readme}: only {refs:?}");
    for r in refs {
        // A backticked path is from the repository root; a link from the file's folder.
        let exists = root.join(&r).exists() || base.join(&r).exists();
        assert!(exists, "{readme} refers to `{r}`, which does not exist");
    }
}

#[test]
fn readme_references_exist() {
    check("README.md");
}

#[test]
fn deploy_readme_references_exist() {
    check("deploy/README.md");
}

#[test]
fn references_are_found() {
    let refs =
        references("see [x](a/b.md), `src/main.rs --flag` and `Dockerfile`; not `data/queue`");
    assert_eq!(refs, ["a/b.md", "src/main.rs", "Dockerfile"]);
}
