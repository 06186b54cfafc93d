use anyhow::{Context, Result};
use snodo_pipelines::config::EntityState;
use snodo_pipelines::ops::onboard::{Onboarding, Paid};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration the running hub runs (run from the hub's working directory: folders
    /// in it are relative to it).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The entity to check.
    #[arg(long)]
    entity: String,
    /// Leave unpaid test positions active instead of annulling them.
    #[arg(long)]
    keep: bool,
    /// How long to wait for an import or a delivery: `60s`, `2m`.
    #[arg(long, value_parser = snodo_pipelines::ops::parse_duration, default_value = "60s")]
    wait: std::time::Duration,
    /// The hub's base URL (default: http://<http.listen>, https:// with [http.tls]).
    #[arg(long)]
    url: Option<String>,
}

/// Prints the checklist, one `PASS`/`FAIL` line a step; exit code 0 only when every step passes.
pub fn exec(a: Args) -> Result<ExitCode> {
    let plan = Arc::new(super::load_plan(a.config)?);
    let http = &plan.config.http;
    let url = a.url.clone().unwrap_or_else(|| {
        let scheme = if http.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", super::sim::connectable(&http.listen))
    });
    let pagopa = &plan.config.pagopa;
    // A pre-production entity is paid on its test station, as pagoPA's test node would.
    let station = match plan.entities.get(&a.entity) {
        Some(e) if e.state == EntityState::PreProduction => e.test_stations.first().cloned(),
        _ => pagopa.stations.first().cloned(),
    }
    .context("no station to call the hub with (pagopa.stations or the entity's test_stations)")?;
    let broker = pagopa.broker_fiscal_code.clone();
    let scratch = std::env::temp_dir().join(format!("snodo-onboard-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let rt = super::runtime()?;
    let onboarding = Onboarding {
        plan: &plan,
        entity: &a.entity,
        keep: a.keep,
        wait: a.wait,
        scratch: &scratch,
    };
    let ready = || ready(&url);
    let pay = |targets: &[(String, String)]| -> std::result::Result<Paid, String> {
        let notices = targets
            .iter()
            .map(|(fiscal_code, notice_number)| snodo_sim::NoticeTarget {
                fiscal_code: fiscal_code.clone(),
                notice_number: notice_number.clone(),
            })
            .collect();
        let mut opts =
            snodo_sim::SimOptions::new(url.clone(), broker.clone(), station.clone(), notices);
        let log = scratch.join("receipts.log");
        opts.receipts_log = Some(log.clone());
        opts.concurrency = 1;
        rt.block_on(snodo_sim::run(opts))
            .map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(';');
                let receipt = f.next()?.to_string();
                let _notice = f.next()?;
                Some((receipt, f.next()?.to_string()))
            })
            .collect())
    };
    let steps = onboarding.run(ready, pay);
    let _ = std::fs::remove_dir_all(&scratch);
    let steps = steps?;
    for s in &steps {
        println!(
            "{} {}: {}",
            if s.ok { "PASS" } else { "FAIL" },
            s.step,
            s.detail
        );
    }
    let failed = steps.iter().filter(|s| !s.ok).count();
    println!(
        "{}: {} steps, {failed} failed",
        if failed == 0 {
            "onboarded"
        } else {
            "not ready"
        },
        steps.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `GET /readyz` on a plain-HTTP hub (an https hub is proven by the payment step).
fn ready(url: &str) -> std::result::Result<(), String> {
    use std::io::{Read, Write};
    let Some(authority) = url.strip_prefix("http://") else {
        return Ok(());
    };
    let authority = authority.trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(authority).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /readyz HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    match answer.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("{url}/readyz answered {code}")),
        None => Err(format!("{url}/readyz gave no answer")),
    }
}
