//! A stable-toolchain stand-in for the fuzz target `fuzz/fuzz_targets/config.rs`:
//! deterministic pseudo-random mutations of the default config and of the
//! bad-config corpus, fed through what the runtime does with an untrusted
//! config.json before it touches the system. The only assertion is that
//! nothing panics. Needs no root.
//!
//! A panicking input is written to `$CARGO_TARGET_TMPDIR/config-fuzz-crash-*.json`
//! so that it can be replayed (and kept in the corpus once fixed).

use std::path::Path;
use std::time::Instant;

use berth_runtime::spec;
use serde_json::{json, Value};

const ITERATIONS: usize = 20_000;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Inputs grow by duplication and splicing; keep them small enough to be quick.
const MAX_LEN: usize = 16 * 1024;

/// How far an input got.
use spec::DryRun as Reached;

/// The fuzz target's function.
fn exercise(data: &[u8]) -> Reached {
    spec::dry_run(data)
}

/// xorshift64*: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Byte strings worth inserting into JSON text.
const TOKENS: &[&str] = &[
    "null",
    "true",
    "-1",
    "0",
    "4294967296",
    "18446744073709551616",
    "-9223372036854775809",
    "1e999",
    "0.5",
    "\"\"",
    "[]",
    "{}",
    "\"/../../etc\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"CAP_SYS_ADMIN\"",
    "\"SCMP_ACT_KILL\"",
    "\"user\"",
    "{\"type\":\"user\"}",
    "{\"containerID\":0,\"hostID\":0,\"size\":4294967295}",
    ",",
    ":",
    "\"",
    "\\",
    "[",
    "{",
    "]",
    "}",
];

/// A replacement for a JSON node: another type, an extreme, or garbage.
fn random_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(0.5),
        6 => json!(""),
        7 => json!("x".repeat(rng.below(4096))),
        8 => json!("/../../../etc/passwd"),
        9 => json!([]),
        10 => json!({}),
        11 => json!(["a", 1, null]),
        12 => json!({"type": "pid", "path": "relative"}),
        _ => json!("\u{0}"),
    }
}

/// Visits a random node of `v` and changes it: a type swap, a removal, a
/// duplication.
fn mutate_value(rng: &mut Rng, v: &mut Value, depth: usize) {
    let descend = depth < 12 && rng.below(4) != 0;
    match v {
        Value::Object(map) if descend && !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(8) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(format!("{key}x"), random_value(rng));
                }
                _ => {
                    if let Some(child) = map.get_mut(&key) {
                        mutate_value(rng, child, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let i = rng.below(items.len());
            match rng.below(8) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    let n = 1 + rng.below(3);
                    for _ in 0..n {
                        items.insert(i, copy.clone());
                    }
                }
                2 => items.clear(),
                _ => mutate_value(rng, &mut items[i], depth + 1),
            }
        }
        _ if rng.below(2) == 0 => *v = random_value(rng),
        _ => mutate_leaf(rng, v),
    }
}

/// Changes a value but keeps its type, so that the typed parse still
/// accepts it and validation gets to judge it.
fn mutate_leaf(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::String(s) => {
            *s = match rng.below(9) {
                0 => String::new(),
                1 => format!("{s}/.."),
                2 => format!("../{s}"),
                3 => s.repeat(2),
                4 => s.chars().skip(1).collect(),
                5 => s.to_uppercase(),
                6 => format!("{s}\0"),
                7 => "/".to_owned(),
                _ => "x".repeat(70),
            }
        }
        Value::Number(_) => {
            *v = match rng.below(7) {
                0 => json!(0),
                1 => json!(1),
                2 => json!(-1),
                3 => json!(u32::MAX),
                4 => json!(u64::from(u32::MAX) + 1),
                5 => json!(i64::MAX),
                _ => json!(65536),
            }
        }
        Value::Bool(b) => *b = !*b,
        Value::Array(items) => items.push(random_value(rng)),
        Value::Object(map) => {
            map.insert("x".to_owned(), random_value(rng));
        }
        Value::Null => *v = random_value(rng),
    }
}

/// One byte-level mutation of `data`, with `other` for splicing.
fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.below(7) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // Overwrite one byte with a JSON-significant one.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(b"{}[]\",:0-9\\ \0\xff");
        }
        // Truncate.
        2 if len > 0 => data.truncate(rng.below(len)),
        // Delete a range.
        3 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            data.drain(start..end);
        }
        // Duplicate a range somewhere else.
        4 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(256)).min(len);
            let chunk = data[start..end].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        // Insert a token.
        5 => {
            let at = rng.below(len + 1);
            let token = rng.pick(TOKENS).as_bytes().to_vec();
            data.splice(at..at, token);
        }
        // Splice: our head, the other input's tail.
        _ if !other.is_empty() => {
            let head = rng.below(len + 1);
            let tail = rng.below(other.len());
            data.truncate(head);
            data.extend_from_slice(&other[tail..]);
        }
        _ => {}
    }
    data.truncate(MAX_LEN);
}

/// A starting point: its bytes, and its JSON tree when it is JSON.
struct Seed {
    name: String,
    bytes: Vec<u8>,
    value: Option<Value>,
}

fn seeds() -> Vec<Seed> {
    let seed = |name: String, bytes: Vec<u8>| Seed {
        name,
        value: serde_json::from_slice(&bytes).ok(),
        bytes,
    };
    let mut seeds = vec![
        seed(
            "default spec".to_owned(),
            serde_json::to_vec_pretty(&spec::default_spec(false, 0, 0)).expect("serialize"),
        ),
        seed(
            "default rootless spec".to_owned(),
            serde_json::to_vec_pretty(&spec::default_spec(true, 1000, 1000)).expect("serialize"),
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/bad-config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        seeds.push(seed(path.display().to_string(), data));
    }
    seeds
}

/// Runs `exercise`, turning a panic into a saved input and a test failure
/// that names it.
fn run_one(data: &[u8], what: &dyn Fn() -> String) -> Reached {
    let result = std::panic::catch_unwind(|| exercise(data));
    let Ok(reached) = result else {
        let what = what();
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "config-fuzz-crash-{}.json",
            what.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ));
        let _ = std::fs::write(&path, data);
        panic!(
            "config parsing or validation panicked on {what}; input saved to {}",
            path.display()
        );
    };
    reached
}

#[test]
fn seeds_do_not_panic() {
    for seed in seeds() {
        run_one(&seed.bytes, &|| seed.name.clone());
    }
}

#[test]
fn mutated_configs_do_not_panic() {
    let seeds = seeds();
    assert!(seeds.len() > 2, "the bad-config corpus is missing");
    let mut rng = Rng(SEED);
    let started = Instant::now();
    let mut current: Vec<u8> = Vec::new();
    let mut counts = [0usize; 3];
    for i in 0..ITERATIONS {
        // Start from one of the valid default specs half of the time.
        let from = if rng.below(2) == 0 {
            &seeds[..2]
        } else {
            &seeds[2..]
        };
        let seed = rng.pick(from);
        let other = &rng.pick(&seeds).bytes;
        match &seed.value {
            // Structured: swap types, change values, drop keys, duplicate
            // array entries; byte-level mutations mostly make text that is
            // no longer JSON, these get to validation.
            Some(value) if rng.below(2) == 0 => {
                let mut v = value.clone();
                for _ in 0..1 + rng.below(3) {
                    mutate_value(&mut rng, &mut v, 0);
                }
                current = serde_json::to_vec(&v).expect("serialize a JSON tree");
                if rng.below(4) == 0 {
                    mutate_bytes(&mut rng, &mut current, other);
                }
            }
            // Bytes: from the seed, or now and then on top of the last input.
            _ => {
                if current.is_empty() || rng.below(4) != 0 {
                    current = seed.bytes.clone();
                }
                for _ in 0..1 + rng.below(3) {
                    mutate_bytes(&mut rng, &mut current, other);
                }
            }
        }
        let what = || format!("iteration {i} (seed {SEED:#x})");
        counts[run_one(&current, &what) as usize] += 1;
    }
    let [unparsable, invalid, valid] = counts;
    eprintln!(
        "{ITERATIONS} mutated configs in {:?}: {unparsable} unparsable, {invalid} invalid, {valid} valid",
        started.elapsed()
    );
    // Mutations that only ever make garbage would test nothing past the parser.
    assert!(
        invalid >= ITERATIONS / 20 && valid >= ITERATIONS / 100,
        "too few mutated configs reach validation ({invalid}) or pass it ({valid})"
    );
}
