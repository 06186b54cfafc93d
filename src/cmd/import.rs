use anyhow::Result;
use snodo_pipelines::ops::{self, import::Imported};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// IPA code of the entity the flow belongs to.
    #[arg(long)]
    entity: String,
    /// The flow's format: a codec that decodes flows, as a pipeline's `decode` names it.
    #[arg(long, default_value = "mypay-import")]
    decode: String,
    /// The flow's character encoding (utf-8, windows-1252, iso-8859-1, iso-8859-15); the
    /// outcome files are written in it too.
    #[arg(long, default_value = "utf-8")]
    encoding: String,
    /// Where the outcome files go (default: beside PATH).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also print the payment notice of every accepted position with a notice number into
    /// `<flow>_AVVISI_PDF.zip`, beside the outcome files.
    #[arg(long)]
    notices: bool,
    /// The flow: `<codIPA>-<IUF>-<version>.zip` (or `.csv`).
    path: PathBuf,
}

/// The counts on standard output; exit code 1 when the flow was refused whole.
pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = super::load_plan(a.config)?;
    let bar = progress_bar();
    let on_progress = |rows: u64| {
        if let Some(b) = &bar {
            b.set_position(rows);
        }
    };
    let imported = ops::import::one_file(
        &plan,
        &a.entity,
        &a.decode,
        &a.encoding,
        a.out,
        a.notices,
        &a.path,
        &on_progress,
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match imported? {
        Imported::Done {
            counts: c,
            status,
            written,
        } => {
            for path in written {
                eprintln!("wrote {}", path.display());
            }
            println!(
                "rows={} accepted={} rejected={} flow={status}",
                c.rows, c.accepted, c.rejected
            );
            Ok(ExitCode::SUCCESS)
        }
        Imported::Aborted {
            counts: c,
            code,
            message,
        } => {
            eprintln!("{code}: {message}");
            println!(
                "rows={} accepted={} rejected={} flow=IMPORT_ABORTITO code={code}",
                c.rows, c.accepted, c.rejected
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos} rows imported ({per_sec}) {elapsed}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}
