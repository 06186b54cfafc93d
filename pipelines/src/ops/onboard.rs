//! `snodo onboard --entity X`: the integrator's end-to-end check of a new entity's wiring,
//! against the running hub. Each step says pass or fail and why; the payment itself is the
//! caller's (the binary plays the node with the simulator), so this module needs no node.

use super::{open_store, Result};
use crate::config::{Endpoint, EntityState};
use crate::plan::{PipelineKind, Plan, ReceiptRoute};
use serde::Serialize;
use snodo_core::payment::PositionStatus;
use snodo_store::{DeliveryStatus, PositionQuery, Store};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// MyPay's import flow header, version 1_4 (docs/FORMATS.md).
const HEADER_1_4: &str = "IUD;codIuv;tipoIdentificativoUnivoco;codiceIdentificativoUnivoco;anagraficaPagatore;indirizzoPagatore;civicoPagatore;capPagatore;localitaPagatore;provinciaPagatore;nazionePagatore;mailPagatore;dataEsecuzionePagamento;importoDovuto;commissioneCaricoPa;tipoDovuto;tipoVersamento;causaleVersamento;datiSpecificiRiscossione;bilancio;flgGeneraIuv;flagMultiBeneficiario;codiceFiscaleEnteSecondario;denominazioneEnteSecondario;ibanAccreditoEnteSecondario;indirizzoEnteSecondario;civicoEnteSecondario;capEnteSecondario;localitaEnteSecondario;provinciaEnteSecondario;nazioneEnteSecondario;datiSpecificiRiscossioneEnteSecondario;causaleVersamentoEnteSecondario;importoVersamentoEnteSecondario;azione";

/// Test positions the check creates.
const POSITIONS: usize = 2;

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: String,
    pub ok: bool,
    pub detail: String,
}

/// A notice to pay, and what the payment came to: `(receipt id, outcome)`, outcome `OK` or the
/// fault code.
pub type Paid = Vec<(String, String)>;

pub struct Onboarding<'a> {
    pub plan: &'a std::sync::Arc<Plan>,
    pub entity: &'a str,
    /// Leave the unpaid test positions active (they are annulled otherwise).
    pub keep: bool,
    /// How long to wait for an import or a delivery.
    pub wait: Duration,
    /// Where generated flows are staged.
    pub scratch: &'a Path,
}

impl Onboarding<'_> {
    /// Runs every step; `hub_ready` tells whether the running hub answers, `pay` pays
    /// `(fiscal code, notice number)` pairs as the node would.
    pub fn run(
        &self,
        hub_ready: impl FnOnce() -> std::result::Result<(), String>,
        pay: impl FnOnce(&[(String, String)]) -> std::result::Result<Paid, String>,
    ) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        let mut say = |step: &str, ok: bool, detail: String| {
            steps.push(Step {
                step: step.to_string(),
                ok,
                detail,
            });
            ok
        };
        let Some(entity) = self.plan.entities.get(self.entity) else {
            say(
                "configuration",
                false,
                format!("entity {:?} is not configured", self.entity),
            );
            return Ok(steps);
        };
        let debt_type = entity
            .rules
            .debt_types
            .values()
            .filter(|d| d.active && entity.payments.contains_key(&d.code))
            .filter(|d| !entity.external.iter().any(|x| x.debt_type == d.code))
            .map(|d| d.code.clone())
            .min();
        let config_ok = match (entity.state, &debt_type) {
            (EntityState::Suspended, _) => say(
                "configuration",
                false,
                "the entity is suspended: set state = \"live\" (or \"pre-production\") and reload"
                    .into(),
            ),
            (_, None) => say(
                "configuration",
                false,
                "no active debt type held by the hub (only external or inactive ones)".into(),
            ),
            (state, Some(dt)) => say(
                "configuration",
                true,
                format!(
                    "valid; entity {} ({}), {}, test positions of debt type {dt}",
                    entity.ipa_code,
                    entity.fiscal_code.as_str(),
                    match state {
                        EntityState::PreProduction => "pre-production",
                        _ => "live",
                    }
                ),
            ),
        };
        if !config_ok {
            return Ok(steps);
        }
        let debt_type = debt_type.unwrap_or_default();
        if let Err(e) = hub_ready() {
            say(
                "hub",
                false,
                format!("the running hub does not answer: {e}"),
            );
            return Ok(steps);
        }
        say("hub", true, "the running hub answers /readyz".into());

        // Positions, through the entity's own folder intake when it has one.
        let store = open_store(self.plan)?;
        let tag = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
        let iuds: Vec<String> = (1..=POSITIONS).map(|n| format!("ONB-{tag}-{n}")).collect();
        let flow = self.flow(&tag, &debt_type, &iuds, "I")?;
        let positions = match self.folder_intake() {
            Some((pipeline, dir)) => {
                let placed = place(&flow, &dir);
                let found = placed.is_ok()
                    && wait_until(self.wait, || {
                        self.found(&*store, &iuds)
                            .is_some_and(|n| n.len() == POSITIONS)
                    });
                let detail = match (&placed, found) {
                    (Err(e), _) => format!("cannot place the flow in {}: {e}", dir.display()),
                    (Ok(()), false) => format!(
                        "pipeline {pipeline} did not import {} within {:?} (is the hub running this configuration?)",
                        file_name(&flow),
                        self.wait
                    ),
                    (Ok(()), true) => format!(
                        "{POSITIONS} positions imported by pipeline {pipeline} from {}",
                        dir.display()
                    ),
                };
                say("positions", found, detail);
                self.found(&*store, &iuds)
            }
            None => {
                let imported = super::import::one_file(
                    self.plan,
                    self.entity,
                    mypay_import_name(),
                    "utf-8",
                    Some(self.scratch.to_path_buf()),
                    false,
                    &flow,
                    &|_| {},
                );
                let found = self.found(&*store, &iuds);
                let ok = matches!(imported, Ok(super::import::Imported::Done { .. }))
                    && found.as_ref().is_some_and(|n| n.len() == POSITIONS);
                say(
                    "positions",
                    ok,
                    match imported {
                        Ok(_) if ok => format!(
                            "{POSITIONS} positions imported through the import path (the entity has no folder intake to test)"
                        ),
                        Ok(i) => format!("the flow was not imported: {i:?}"),
                        Err(e) => format!("the flow was not imported: {e}"),
                    },
                );
                found
            }
        };
        let Some(notices) = positions.filter(|n| n.len() == POSITIONS) else {
            return Ok(steps);
        };

        // The node pays them.
        let targets: Vec<(String, String)> = notices
            .iter()
            .map(|n| (entity.fiscal_code.as_str().to_string(), n.clone()))
            .collect();
        let receipts = match pay(&targets) {
            Ok(paid) if paid.len() == POSITIONS && paid.iter().all(|(_, o)| o == "OK") => {
                say(
                    "payment",
                    true,
                    format!(
                        "{POSITIONS} notices verified, activated and paid; receipts {}",
                        paid.iter()
                            .map(|(r, _)| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                paid.into_iter().map(|(r, _)| r).collect::<Vec<_>>()
            }
            Ok(paid) => {
                say(
                    "payment",
                    false,
                    format!("the hub did not take every payment: {paid:?}"),
                );
                self.clean_up(&*store, &tag, &debt_type, &iuds, &mut steps)?;
                return Ok(steps);
            }
            Err(e) => {
                say("payment", false, e);
                self.clean_up(&*store, &tag, &debt_type, &iuds, &mut steps)?;
                return Ok(steps);
            }
        };

        // Every receipts pipeline of the entity that takes this debt type.
        for p in self
            .plan
            .pipelines
            .iter()
            .filter(|p| p.entity == self.entity)
        {
            let PipelineKind::Receipts {
                route, debt_types, ..
            } = &p.kind
            else {
                continue;
            };
            if !debt_types.is_empty() && !debt_types.contains(&debt_type) {
                continue;
            }
            match route {
                ReceiptRoute::Push(target) => {
                    let (ok, detail) = self.delivered(&*store, &p.name, &receipts);
                    steps.push(Step {
                        step: format!("delivery {} ({})", p.name, target.connector),
                        ok,
                        detail,
                    });
                }
                ReceiptRoute::Batch { .. } => {
                    let written = super::export::run_shared(self.plan.clone(), &p.name);
                    let (ok, detail) = match written {
                        Ok(files) if !files.is_empty() => {
                            (true, format!("written now: {}", files.join(", ")))
                        }
                        Ok(_) => (false, "no file written".to_string()),
                        Err(e) => (false, e.to_string()),
                    };
                    steps.push(Step {
                        step: format!("export {}", p.name),
                        ok,
                        detail,
                    });
                }
            }
        }
        self.clean_up(&*store, &tag, &debt_type, &iuds, &mut steps)?;
        Ok(steps)
    }

    /// The entity's import pipeline reading a local folder, if any: (name, folder).
    fn folder_intake(&self) -> Option<(String, PathBuf)> {
        self.plan.config.pipelines.iter().find_map(|p| {
            if p.entity != self.entity {
                return None;
            }
            match &p.from {
                Endpoint::Connector { kind, params } if kind == "dir" => params
                    .get("path")
                    .and_then(|v| v.as_str())
                    .map(|path| (p.name.clone(), PathBuf::from(path))),
                _ => None,
            }
        })
    }

    /// The notice numbers of the test positions, once each exists.
    fn found(&self, store: &dyn Store, iuds: &[String]) -> Option<Vec<String>> {
        let mut notices = Vec::new();
        for iud in iuds {
            let p = store
                .positions(self.entity, &PositionQuery::Iud(iud))
                .ok()?
                .into_iter()
                .find(|p| p.status != PositionStatus::Annulled)?;
            notices.push(p.notice_number?);
        }
        Some(notices)
    }

    /// Whether every receipt was delivered by `pipeline`, waiting up to `wait`; else why not.
    fn delivered(&self, store: &dyn Store, pipeline: &str, receipts: &[String]) -> (bool, String) {
        let status_of = |status: DeliveryStatus| {
            store
                .deliveries(status, Some(self.entity), Some(pipeline), 1000)
                .unwrap_or_default()
                .into_iter()
                .filter(|d| receipts.contains(&d.idempotency_key))
                .collect::<Vec<_>>()
        };
        let done = wait_until(self.wait, || {
            status_of(DeliveryStatus::Delivered).len() == receipts.len()
                || !status_of(DeliveryStatus::Dead).is_empty()
        });
        if done && status_of(DeliveryStatus::Delivered).len() == receipts.len() {
            return (true, format!("{} receipts delivered", receipts.len()));
        }
        let dead = status_of(DeliveryStatus::Dead);
        let pending = status_of(DeliveryStatus::Pending);
        let why = dead
            .iter()
            .chain(&pending)
            .find_map(|d| d.last_error.clone())
            .unwrap_or_else(|| "no attempt yet: is the hub running this pipeline?".into());
        let state = if dead.is_empty() {
            format!("not delivered within {:?}", self.wait)
        } else {
            format!("{} dead letters", dead.len())
        };
        (false, format!("{state}: {why}"))
    }

    /// Annuls the test positions not paid (a paid one and its receipt are kept: a receipt is
    /// never deleted), unless `keep`.
    fn clean_up(
        &self,
        store: &dyn Store,
        tag: &str,
        debt_type: &str,
        iuds: &[String],
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let unpaid: Vec<String> = iuds
            .iter()
            .filter(|iud| {
                store
                    .positions(self.entity, &PositionQuery::Iud(iud))
                    .unwrap_or_default()
                    .iter()
                    .any(|p| matches!(p.status, PositionStatus::Active))
            })
            .cloned()
            .collect();
        let paid = iuds.len() - unpaid.len();
        if self.keep || unpaid.is_empty() {
            steps.push(Step {
                step: "clean-up".into(),
                ok: true,
                detail: format!(
                    "{paid} test positions paid (kept with their receipts); {} unpaid {}",
                    unpaid.len(),
                    if self.keep { "kept (--keep)" } else { "left" }
                ),
            });
            return Ok(());
        }
        let flow = self.flow(&format!("{tag}A"), debt_type, &unpaid, "A")?;
        let annulled = super::import::one_file(
            self.plan,
            self.entity,
            mypay_import_name(),
            "utf-8",
            Some(self.scratch.to_path_buf()),
            false,
            &flow,
            &|_| {},
        );
        let ok = matches!(annulled, Ok(super::import::Imported::Done { .. }));
        steps.push(Step {
            step: "clean-up".into(),
            ok,
            detail: if ok {
                format!(
                    "{} unpaid test positions annulled: {}",
                    unpaid.len(),
                    unpaid.join(", ")
                )
            } else {
                format!("annulling {} failed: {annulled:?}", unpaid.join(", "))
            },
        });
        Ok(())
    }

    /// A MyPay 1_4 flow of `iuds` (action `I` or `A`) in the scratch folder.
    fn flow(&self, tag: &str, debt_type: &str, iuds: &[String], action: &str) -> Result<PathBuf> {
        let due = (chrono::Utc::now() + chrono::Duration::days(90))
            .format("%Y-%m-%d")
            .to_string();
        let mut csv = format!("{HEADER_1_4}\n");
        for iud in iuds {
            let mut f = vec![String::new(); 35];
            f[0] = iud.clone();
            f[2] = "F".into();
            f[3] = "RSSMRA85T10A562S".into();
            f[4] = "Verifica adesione".into();
            f[10] = "IT".into();
            f[12] = due.clone();
            f[13] = "1.00".into();
            f[15] = debt_type.into();
            f[17] = format!("snodo onboard {iud}");
            f[18] = self
                .plan
                .entities
                .get(self.entity)
                .and_then(|e| e.payments.get(debt_type))
                .map(|p| p.taxonomy.clone())
                .unwrap_or_default();
            f[20] = "true".into();
            f[21] = "false".into();
            f[34] = action.into();
            csv.push_str(&f.join(";"));
            csv.push('\n');
        }
        let stem = format!("{}-ONB{tag}-1_4", self.entity);
        let path = self.scratch.join(format!("{stem}.zip"));
        let file = std::fs::File::create(&path)?;
        let mut zip = zip::ZipWriter::new(file);
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file(format!("{stem}.csv"), opts)
            .map_err(std::io::Error::other)?;
        zip.write_all(csv.as_bytes())?;
        zip.finish().map_err(std::io::Error::other)?;
        Ok(path)
    }
}

fn mypay_import_name() -> &'static str {
    snodo_adapters::mypay_import::MYPAY_IMPORT
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Moves the flow into an intake folder whole (a copy, then a rename in that folder).
fn place(flow: &Path, dir: &Path) -> std::io::Result<()> {
    let name = file_name(flow);
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::copy(flow, &tmp)?;
    std::fs::rename(&tmp, dir.join(name))
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
