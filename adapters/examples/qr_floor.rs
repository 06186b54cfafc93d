//! The floor of `ops/bench/notices.sh`: the QR codes of the same notices alone, with the same
//! library, settings and number of threads as the flow's notices are printed with.
//!
//!     qr_floor THREADS < payloads.txt     (one `PAGOPA|002|...` payload a line)
//!
//! Prints `qr_codes=<n> seconds=<s>` on standard output.

use std::io::BufRead;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: usize = std::env::args()
        .nth(1)
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let payloads: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    let started = Instant::now();
    let dark = std::thread::scope(|s| {
        let chunk = payloads.len().div_ceil(threads).max(1);
        let workers: Vec<_> = payloads
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|p| {
                            snodo_adapters::notice::qr_modules(p)
                                .map(|m| m.iter().filter(|&&d| d).count())
                        })
                        .sum::<Result<usize, _>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| "a thread panicked".to_string()))
            .collect::<Vec<_>>()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut modules = 0;
    for d in dark {
        modules += d?.map_err(|e| e.to_string())?;
    }
    // The module count keeps the work from being optimised away.
    println!(
        "qr_codes={} seconds={seconds:.3} dark_modules={modules}",
        payloads.len()
    );
    Ok(())
}
