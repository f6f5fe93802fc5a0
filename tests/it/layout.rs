//! The architecture's invariants that the compiler does not check, checked on the source:
//! dependencies point one way, hub functions stay small, chain shapes live in the types.
//! (See ARCHITECTURE.md, "Architecture invariants".)

use std::path::{Path, PathBuf};

fn sources(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    assert!(!out.is_empty(), "no sources under {dir}");
    out
}

/// The code of a file without its line comments (crude, but enough for the patterns checked
/// here, which no string literal of the code base contains).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(name, first line, length in lines)` of every `fn` in `text`, by brace matching.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let t = t
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("async ")
            .trim_start_matches("const ");
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut started) = (0i32, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if !started && l.trim_end().ends_with(';') {
                break;
            }
            if started && depth == 0 {
                out.push((name.clone(), i + 1, j - i + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn no_function_in_the_daemon_or_control_is_longer_than_80_lines() {
    let mut long = Vec::new();
    for dir in ["src/daemon", "src/control"] {
        for path in sources(dir) {
            for (name, line, len) in functions(&code(&path)) {
                if len > 80 {
                    long.push(format!("{}:{line} {name} ({len} lines)", path.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "split these: {long:#?}");
}

#[test]
fn the_function_counter_counts() {
    let f = functions("fn a() {\n    if x {\n    }\n}\nfn b();\npub async fn c(\n) -> u8 { 1 }\n");
    assert_eq!(f, [("a".into(), 1, 4), ("c".into(), 6, 2)]);
}

#[test]
fn lower_layers_do_not_import_the_daemon() {
    let mut bad = Vec::new();
    let layers = [
        "src/sys.rs",
        "src/profile",
        "src/mint",
        "src/sts",
        "src/keystore",
    ];
    for layer in layers {
        let files = if layer.ends_with(".rs") {
            vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(layer)]
        } else {
            sources(layer)
        };
        for path in files {
            if code(&path).contains("crate::daemon") {
                bad.push(path.display().to_string());
            }
        }
    }
    assert!(bad.is_empty(), "these import crate::daemon: {bad:?}");
}

#[test]
fn the_control_protocol_imports_no_domain_type() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/control/proto.rs");
    let text = code(&path);
    for forbidden in [
        "crate::daemon",
        "crate::mint",
        "super::super",
        "crate::profile",
    ] {
        assert!(!text.contains(forbidden), "proto.rs mentions {forbidden}");
    }
    let imports: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("use crate::"))
        .collect();
    assert!(
        imports.is_empty(),
        "proto.rs imports from the crate: {imports:?}"
    );
}

#[test]
fn minting_has_no_unreachable_chain_shapes() {
    for path in sources("src/mint") {
        let text = code(&path);
        for forbidden in ["unreachable!", ".expect(\"called only", "panic!("] {
            let outside_tests = text.split("#[cfg(test)]").next().unwrap_or("");
            assert!(
                !outside_tests.contains(forbidden),
                "{} uses {forbidden}",
                path.display()
            );
        }
    }
}
