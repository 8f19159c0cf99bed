//! Writes (or, with `--check`, verifies) the generated C headers under each sample's
//! `bpf/include/`: `ebpf_general_helpers.h` and the program-type header built from the
//! program information the sample publishes.
#![allow(clippy::std_instead_of_core, reason = "host tool")]

use std::process::ExitCode;

use sample_harness::bpf::{headers, samples};
use sample_harness::ext;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let mut stale = Vec::new();
    let all = samples()
        .into_iter()
        .map(|s| headers(&s))
        .chain([ext::headers()]);
    for files in all {
        let files = match files {
            Ok(files) => files,
            Err(e) => {
                eprintln!("gen-headers: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (path, contents) in files {
            if std::fs::read_to_string(&path).ok().as_deref() == Some(contents.as_str()) {
                continue;
            }
            if check {
                stale.push(path.display().to_string());
                continue;
            }
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, contents));
            if let Err(e) = written {
                eprintln!("gen-headers: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "out of date (run `cargo run -p sample-harness --bin gen-headers`): {}",
            stale.join(", ")
        );
        ExitCode::FAILURE
    }
}
