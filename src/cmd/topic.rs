use anyhow::{Context, Result};
use snodo_pipelines::ops::{self, topic};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// `host:port[,host:port...]`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// Start from the oldest message (default: only new ones).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop when nothing arrived for this long: `5s`.
    #[arg(long, value_parser = ops::parse_duration)]
    idle: Option<std::time::Duration>,
    /// Print nothing but the number of messages read and the time it took.
    #[arg(long)]
    quiet: bool,
    /// Produce the `key<TAB>value` lines of FILE (`-`: standard input) instead of reading,
    /// creating the topic with --partitions when missing.
    #[arg(long, value_name = "FILE")]
    produce: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
}

pub fn exec(a: Args) -> Result<ExitCode> {
    if let Some(file) = &a.produce {
        let mut input: Box<dyn BufRead> = if file == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(file).with_context(|| file.display().to_string())?,
            ))
        };
        let t = topic::produce(&a.brokers, &a.topic, a.partitions, &mut input)?;
        eprintln!(
            "produced={} seconds={:.3}",
            t.messages,
            t.elapsed.as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let opts = topic::ReadOptions {
        brokers: a.brokers,
        topic: a.topic,
        from_beginning: a.from_beginning,
        count: a.count,
        idle: a.idle,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let t = topic::read(&opts, (!a.quiet).then_some(&mut out as _))?;
    if a.quiet {
        println!(
            "messages={} seconds={:.3}",
            t.messages,
            t.elapsed.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
