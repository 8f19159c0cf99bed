//! What reading program memory through an [`Input`] costs a helper: the same sum over the
//! same bytes, read from a `&[u8]` (what `Bytes` gave before), through `Input::iter` (one
//! atomic byte load each), and copied out first with `Input::read_at`, whole, into a buffer
//! the helper owns (allocated once, outside the timing).
//!
//! Measured as paired, interleaved rounds in one process (each round times every variant back
//! to back, starting with a different one each round), so a round's ratios hold while the
//! machine's speed drifts; the reported ratio is the median of the per-round ratios.
//!
//! Run: `cargo bench -p ebpf-ext-program-info --bench views` (a few seconds).

#![allow(
    missing_docs,
    clippy::std_instead_of_alloc,
    clippy::std_instead_of_core,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "benchmark harness"
)]

use core::cell::Cell;
use core::hint::black_box;
use std::time::Instant;

use ebpf_ext_program_info::Input;

/// The 16-bit one's-complement sum of big-endian words, as a checksum helper computes it.
fn sum(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut bytes = bytes.map(u64::from);
    let mut sum = 0;
    while let Some(high) = bytes.next() {
        sum += high << 8 | bytes.next().unwrap_or(0);
    }
    sum
}

/// Nanoseconds per call of `f`, over `calls` calls.
fn time(calls: u32, mut f: impl FnMut() -> u64) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        black_box(f());
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    const ROUNDS: usize = 101;
    println!("bytes  slice ns  Input::iter / slice  read_at+slice / slice");
    for len in [64usize, 1500, 65_536] {
        let mut bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let cells = Cell::from_mut(&mut bytes[..]).as_slice_of_cells();
        let input = Input::from(cells);
        let plain: Vec<u8> = input.iter().collect();
        let per_round = u32::try_from((4_000_000 / len).max(4)).expect("calls");
        let mut copy = vec![0u8; len];
        assert_eq!(sum(plain.iter().copied()), sum(input.iter()));
        let (mut slice_ns, mut iter_ratio, mut copy_ratio) = (vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let (mut slice, mut iter, mut copied) = (0.0, 0.0, 0.0);
            for variant in (0..3).map(|k| (round + k) % 3) {
                match variant {
                    0 => slice = time(per_round, || sum(black_box(&plain[..]).iter().copied())),
                    1 => iter = time(per_round, || sum(black_box(input).iter())),
                    _ => {
                        copied = time(per_round, || {
                            assert!(black_box(input).read_at(0, &mut copy));
                            sum(copy.iter().copied())
                        });
                    }
                }
            }
            slice_ns.push(slice);
            iter_ratio.push(iter / slice);
            copy_ratio.push(copied / slice);
        }
        println!(
            "{len:>5}  {:>8.1}  {:>19.2}  {:>21.2}",
            median(&mut slice_ns),
            median(&mut iter_ratio),
            median(&mut copy_ratio)
        );
    }
}
