//! The hub itself: every pipeline of a plan.

use super::{open_store, Result};
use crate::plan::Plan;
use tokio::sync::watch;

/// Runs every pipeline until `shutdown` turns true, then drains. A reload reads `config_path`
/// again (`None`: the embedded demo).
pub async fn run(
    plan: Plan,
    config_path: Option<std::path::PathBuf>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let store = open_store(&plan)?;
    crate::engine::Hub::new(plan, store, config_path)
        .run(shutdown)
        .await?;
    Ok(())
}

/// Where `snodo reload` finds the running hub: `http.public_url`, else `http.listen` (a
/// wildcard address asked on loopback).
fn hub_url(http: &serde_json::Value) -> String {
    let text = |k: &str| http.get(k).and_then(|v| v.as_str()).map(str::to_string);
    if let Some(u) = text("public_url") {
        return u.trim_end_matches('/').to_string();
    }
    let scheme = if http.get("tls").is_some_and(|t| !t.is_null()) {
        "https"
    } else {
        "http"
    };
    let listen = text("listen")
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("{scheme}://{listen}")
}

/// `snodo reload`: asks the hub running with the configuration at `path` to read it again
/// (`POST /admin/reload` with `http.admin_token`). Only the `[http]` section is read here: a
/// file with problems still reaches the hub, which refuses it and says why. The hub's answer:
/// its status and body.
pub fn ask_reload(
    path: Option<&std::path::Path>,
    url: Option<&str>,
    ca_file: Option<&std::path::Path>,
) -> Result<(u16, serde_json::Value)> {
    let refused = |message: String| super::OpsError::Pipeline {
        pipeline: "reload".into(),
        message,
    };
    let (config, _) = crate::config::load_value(path).map_err(|problems| {
        refused(
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let http = config.get("http").cloned().unwrap_or_default();
    let token = http
        .get("admin_token")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            refused("http.admin_token is not set: the hub's admin API (and reload) is off; send the hub SIGHUP instead".into())
        })?;
    let base = url.map_or_else(|| hub_url(&http), |u| u.trim_end_matches('/').to_string());
    let url = format!("{base}/admin/reload");
    // A hub whose certificate chains to a private CA: trust that CA too.
    let mut roots = Vec::new();
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| refused(format!("{}: {e}", ca.display())))?;
        roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| refused(format!("{}: not a PEM bundle: {e}", ca.display())))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| refused(e.to_string()))?;
    rt.block_on(async {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120));
        for c in roots {
            builder = builder.add_root_certificate(c);
        }
        let client = builder.build().map_err(|e| refused(e.to_string()))?;
        let resp = client
            .post(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| refused(format!("cannot reach the hub at {url}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| refused(e.to_string()))?;
        let value = serde_json::from_str(&body)
            .unwrap_or_else(|_| serde_json::json!({ "error": body.trim() }));
        Ok((status, value))
    })
}
