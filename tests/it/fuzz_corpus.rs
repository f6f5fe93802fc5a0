//! Replays every fuzz target's corpus (fuzz/corpus/TARGET/*) on stable Rust, plus deterministic
//! mutations of each seed (truncations, byte flips, splices), so the parsers' "never panic"
//! property is checked on every CI run, not only when someone runs cargo-fuzz.

use std::path::Path;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");

fn mutations(seed: &[u8], rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for cut in [
        0,
        1,
        seed.len() / 3,
        seed.len() / 2,
        seed.len().saturating_sub(1),
    ] {
        out.push(seed[..cut.min(seed.len())].to_vec());
    }
    for _ in 0..300 {
        let mut m = seed.to_vec();
        for _ in 0..rng.usize(1..8) {
            if m.is_empty() {
                m.push(rng.u8(..));
                continue;
            }
            let i = rng.usize(..m.len());
            match rng.u8(..4) {
                0 => m[i] = rng.u8(..),
                1 => {
                    const SPECIAL: &[u8] = b"<>=[]\n\r\"%:/\\&;#{}";
                    m.insert(i, SPECIAL[rng.usize(..SPECIAL.len())]);
                }
                2 => {
                    m.remove(i);
                }
                _ => {
                    let j = rng.usize(..m.len());
                    let (a, b) = (i.min(j), i.max(j));
                    let chunk = m[a..b].to_vec();
                    m.splice(b..b, chunk);
                }
            }
        }
        out.push(m);
    }
    out
}

#[test]
fn fuzz_corpora_replay_without_panics() {
    let mut rng = fastrand::Rng::with_seed(0x00C2_ED7E_4D00);
    for (name, target) in credvend::fuzz::TARGETS {
        let dir = Path::new(CORPUS).join(name);
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        seeds.sort();
        assert!(
            seeds.len() >= 3,
            "corpus {name} has only {} seeds",
            seeds.len()
        );
        for seed in &seeds {
            let bytes = std::fs::read(seed).unwrap();
            target(&bytes);
            for m in mutations(&bytes, &mut rng) {
                target(&m);
            }
        }
    }
}
