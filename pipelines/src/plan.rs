//! From a configuration to a checked plan: every identifier validated, every pipeline's
//! connectors and codecs resolved. `snodo validate` prints the problems; `snodo run` refuses to
//! start with any.

use crate::codecs::{
    self, DecodePosition, DecodeTreasury, Does, EncodeReceipt, ReceiptFile, ReportCodec,
};
use crate::config::{self, Codec, Config, Endpoint, EntityState, Problem};
use crate::registry::{self, SourceShape};
use snodo_adapters::flow_format::FlowFormat;
use snodo_adapters::text_encoding::Encoding;
use snodo_connectors::file_messages::FileMessagesConfig;
use snodo_connectors::{MessageSinkConfig, RetryPolicy, SinkConfig, SourceConfig};
use snodo_core::dovuto::{DebtTypeRules, EntityRules};
use snodo_core::{EntityFiscalCode, Iban, SegregationCode, TaxonomyCode, TaxonomyTable};
use snodo_store::DeliverTo;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// The node waits about 5 s for a verify answer; an entity system must answer well within.
pub const MAX_EXTERNAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

/// Polling schedule when a source names none: every ten seconds.
pub const DEFAULT_SCHEDULE: &str = "*/10 * * * * *";

pub struct Plan {
    pub config: Config,
    pub entities: HashMap<String, Arc<EntityRuntime>>,
    /// pagoPA Checkout for carts (Gateway mode); `None`: `POST .../carts` answers 503.
    pub checkout: Option<Checkout>,
    /// `[pagopa.fdr]`: the settlement flows pull; `None`: not configured.
    pub fdr: Option<Fdr>,
    /// How long an `Idempotency-Key` answer is kept.
    pub idempotency_ttl: std::time::Duration,
    /// `[reconciliation]`'s grace periods.
    pub grace: crate::reconciler::Grace,
    /// `[pagopa] payment_in_progress`: after an activation, intakes leave the position alone
    /// this long.
    pub payment_in_progress: std::time::Duration,
    pub pipelines: Vec<PipelinePlan>,
    pub taxonomy: Option<Arc<TaxonomyTable>>,
    /// Things that do not stop the hub but an operator should know.
    pub warnings: Vec<String>,
    /// Digests of the configuration's parts, for a reload to tell what changed.
    pub fingerprints: Fingerprints,
}

/// The plan the hub runs now: a reload replaces it whole, and each call (the node's, the API's)
/// reads it once when it starts, so a call never sees half of two configurations.
pub struct LivePlan(std::sync::RwLock<Arc<Plan>>);

impl LivePlan {
    pub fn new(plan: Arc<Plan>) -> Arc<LivePlan> {
        Arc::new(LivePlan(std::sync::RwLock::new(plan)))
    }

    pub fn get(&self) -> Arc<Plan> {
        // A writer that panicked left a whole plan behind: the lock's data is still good.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, plan: Arc<Plan>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = plan;
    }
}

/// SHA-256 digests of the configuration's parts as loaded (secrets included, so a changed key
/// is a change; the digests never reveal them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprints {
    /// Sections only a restart applies (listeners, store, limits): `hub`, `http`, `kafka`, `api`.
    pub restart_only: BTreeMap<String, [u8; 32]>,
    pub pagopa: [u8; 32],
    /// By IPA code.
    pub entities: BTreeMap<String, [u8; 32]>,
    /// By `<ipa>/<code>`.
    pub debt_types: BTreeMap<String, [u8; 32]>,
    /// By pipeline name.
    pub pipelines: BTreeMap<String, [u8; 32]>,
}

/// The sections a reload cannot apply.
pub const RESTART_ONLY: &[&str] = &["hub", "http", "kafka", "api"];

/// The digest of a JSON value with its keys in order, whatever the map type.
fn digest(v: &serde_json::Value) -> [u8; 32] {
    fn canonical(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for k in keys {
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&m[k], out);
                    out.push(',');
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for x in a {
                    canonical(x, out);
                    out.push(',');
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(v, &mut text);
    key_hash(&text)
}

impl Fingerprints {
    pub fn of(config: &serde_json::Value) -> Fingerprints {
        let null = serde_json::Value::Null;
        let mut f = Fingerprints {
            pagopa: digest(config.get("pagopa").unwrap_or(&null)),
            ..Fingerprints::default()
        };
        for s in RESTART_ONLY {
            f.restart_only
                .insert(s.to_string(), digest(config.get(*s).unwrap_or(&null)));
        }
        let list = |k: &str| {
            config
                .get(k)
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default()
        };
        let text = |v: &serde_json::Value, k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        for e in list("entities") {
            let ipa = text(&e, "ipa_code");
            for dt in e
                .get("debt_types")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                f.debt_types
                    .insert(format!("{ipa}/{}", text(dt, "code")), digest(dt));
            }
            f.entities.insert(ipa, digest(&e));
        }
        for p in list("pipelines") {
            f.pipelines.insert(text(&p, "name"), digest(&p));
        }
        f
    }
}

/// What a reload changes, by name only (never a value: secrets stay out of events and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanDiff {
    pub entities: Changes,
    pub debt_types: Changes,
    pub pipelines: Changes,
    pub pagopa_changed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    fn between(old: &BTreeMap<String, [u8; 32]>, new: &BTreeMap<String, [u8; 32]>) -> Changes {
        let mut c = Changes::default();
        for (k, v) in new {
            match old.get(k) {
                None => c.added.push(k.clone()),
                Some(o) if o != v => c.changed.push(k.clone()),
                Some(_) => {}
            }
        }
        c.removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl PlanDiff {
    pub fn between(old: &Plan, new: &Plan) -> PlanDiff {
        let (o, n) = (&old.fingerprints, &new.fingerprints);
        PlanDiff {
            entities: Changes::between(&o.entities, &n.entities),
            debt_types: Changes::between(&o.debt_types, &n.debt_types),
            pipelines: Changes::between(&o.pipelines, &n.pipelines),
            pagopa_changed: o.pagopa != n.pagopa,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
            && self.debt_types.is_empty()
            && self.pipelines.is_empty()
            && !self.pagopa_changed
    }
}

impl Plan {
    /// The sections that differ from `other` and only a restart applies.
    pub fn restart_needed(&self, other: &Plan) -> Vec<String> {
        RESTART_ONLY
            .iter()
            .filter(|s| {
                self.fingerprints.restart_only.get(**s) != other.fingerprints.restart_only.get(**s)
            })
            .map(|s| s.to_string())
            .collect()
    }

    /// Whether a running pipeline must stop (gone) or restart (it, or its entity, changed)
    /// for `new` to apply.
    pub fn pipeline_unchanged(&self, name: &str, new: &Plan) -> bool {
        let (o, n) = (&self.fingerprints, &new.fingerprints);
        let entity = |plan: &Plan| {
            plan.pipelines
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.entity.clone())
        };
        let (Some(oe), Some(ne)) = (entity(self), entity(new)) else {
            return false;
        };
        o.pipelines.get(name) == n.pipelines.get(name)
            && oe == ne
            && o.entities.get(&oe) == n.entities.get(&ne)
    }

    /// The entity a pipeline works for (the plan checked it exists; a caller building a
    /// runner from another plan gets why not).
    pub fn entity_of(&self, p: &PipelinePlan) -> Result<Arc<EntityRuntime>, String> {
        self.entities
            .get(&p.entity)
            .cloned()
            .ok_or_else(|| format!("unknown entity {}", p.entity))
    }

    /// Whether the pipeline runs under this plan: an intake of a suspended entity pauses.
    pub fn pipeline_runs(&self, p: &PipelinePlan) -> bool {
        let suspended = self
            .entities
            .get(&p.entity)
            .is_some_and(|e| e.state == EntityState::Suspended);
        !(suspended
            && matches!(
                p.kind,
                PipelineKind::ImportFlows { .. }
                    | PipelineKind::StreamPositions { .. }
                    | PipelineKind::TreasuryFiles { .. }
            ))
    }
}

/// An entity as the running hub needs it.
pub struct EntityRuntime {
    pub ipa_code: String,
    pub fiscal_code: EntityFiscalCode,
    pub name: String,
    pub office_name: Option<String>,
    /// CBILL (SIA) code printed on payment notices.
    pub cbill: Option<String>,
    /// Poste's authorisation to print the postal slip on notices.
    pub poste_authorisation: Option<String>,
    /// Printed on its notices; decoded once, here.
    pub logo: Option<Arc<snodo_adapters::notice::Logo>>,
    pub segregation_code: SegregationCode,
    pub rules: EntityRules,
    /// What the node needs to take a payment, by debt type code.
    pub payments: HashMap<String, DebtTypePayment>,
    /// Keys of the entity's systems for `/api/v1`, hashed.
    pub api_keys: Vec<ApiKey>,
    /// The password of MyPay's SOAP services, hashed (`None`: they refuse the entity).
    pub mypay_password: Option<[u8; 32]>,
    /// Debt types citizens may pay spontaneously, in configuration order.
    pub spontaneous: Vec<SpontaneousOffer>,
    /// Debt types whose positions live in the entity's system, asked in configuration order.
    pub external: Vec<ExternalSource>,
    /// Services of pagoPA's catalogue it issues notices for on demand (`paDemandPaymentNotice`).
    pub demand: Vec<crate::demand::DemandOffer>,
    /// Its adhesion state: which stations answer for it, whether its intakes run.
    pub state: EntityState,
    /// Its pre-production stations.
    pub test_stations: Vec<String>,
    /// `[pagopa] payment_in_progress`, for the intakes' rows.
    pub payment_in_progress: std::time::Duration,
}

/// An API key as the hub keeps it: only its SHA-256, and an id for logs.
pub struct ApiKey {
    /// `<ipa>#<n>`: which configured key it is, never the key itself.
    pub id: String,
    pub sha256: [u8; 32],
}

pub struct SpontaneousOffer {
    pub debt_type: String,
    pub description: String,
    pub rule: snodo_core::spontaneous::SpontaneousRule,
}

/// Where the positions of an external debt type are asked.
pub struct ExternalSource {
    pub debt_type: String,
    pub url: String,
    pub timeout: std::time::Duration,
    pub token: Option<String>,
    pub mode: ExternalAsk,
}

/// How an external source is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalAsk {
    Json,
    /// MyPay's `paaSILVerificaEsterna`, its header naming the hub as intermediary and station.
    MypaySoap {
        intermediary: String,
        station: String,
    },
    /// MyPay4's `paExternalVerifyPaymentNotice`, naming the hub as broker and station.
    MypayExternalVerify {
        broker: String,
        station: String,
    },
}

/// pagoPA Checkout, as configured.
pub struct Checkout {
    pub url: String,
    pub subscription_key: String,
    pub timeout: std::time::Duration,
}

/// `[pagopa.fdr]`, checked.
pub struct Fdr {
    pub mode: config::FdrMode,
    /// Without a trailing `/`.
    pub url: String,
    /// REST's `Ocp-Apim-Subscription-Key` (never logged).
    pub subscription_key: Option<String>,
    /// SOAP: the broker, station and password the node's calls carry.
    pub broker: String,
    pub station: String,
    pub password: Option<String>,
    pub schedule: Box<cron::Schedule>,
    pub connect_timeout: std::time::Duration,
    pub timeout: std::time::Duration,
    pub page_size: u32,
    pub attempts: u32,
}

/// The SHA-256 of an API key or token, as compared at each request.
pub fn key_hash(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// A debt type as the node's calls need it.
pub struct DebtTypePayment {
    /// The account until the first of `iban_changes`.
    pub iban: Iban,
    /// Later accounts, each from its day on, in date order.
    pub iban_changes: Vec<(chrono::NaiveDate, Iban)>,
    pub taxonomy: String,
    /// Payable after the due date, and for how long.
    pub late: snodo_core::payment::LatePolicy,
    /// `Some(tipoBollo)`: a stamp-duty debt type.
    pub stamp: Option<String>,
    /// The postal current account, if the debt type has one.
    pub postal: Option<PostalAccount>,
}

/// A postal current account (Poste Italiane) of a debt type.
pub struct PostalAccount {
    pub iban: Iban,
    /// As printed on the postal slip.
    pub holder: String,
}

impl PostalAccount {
    /// The account number: the last 12 characters of the IBAN.
    pub fn number(&self) -> &str {
        let s = self.iban.as_str();
        &s[s.len().saturating_sub(12)..]
    }
}

/// An entity's logo file, checked for size before it is read and decoded once.
fn load_logo(path: &std::path::Path) -> Result<Arc<snodo_adapters::notice::Logo>, String> {
    use snodo_adapters::notice::{Logo, LOGO_MAX_BYTES};
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file that is too large without reading all of it.
    file.take(LOGO_MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() > LOGO_MAX_BYTES {
        return Err(format!("{shown} is larger than {LOGO_MAX_BYTES} bytes"));
    }
    Logo::from_png(&bytes)
        .map(Arc::new)
        .map_err(|e| format!("{shown}: {e}"))
}

impl DebtTypePayment {
    /// The account the node is given on `day` (Europe/Rome) for a payment through `channel`:
    /// with `TransferType::Postal` (a Poste channel) the postal account where there is one.
    pub fn account_for(
        &self,
        channel: Option<snodo_adapters::pagopa::TransferType>,
        day: chrono::NaiveDate,
    ) -> &Iban {
        match (&self.postal, channel) {
            (Some(postal), Some(snodo_adapters::pagopa::TransferType::Postal)) => &postal.iban,
            _ => self.iban_on(day),
        }
    }

    /// Whether Poste's channels can credit this debt type: it has a postal account, or its
    /// account is one.
    pub fn postal_payable(&self, day: chrono::NaiveDate) -> bool {
        self.postal.is_some() || self.iban_on(day).is_postal()
    }

    /// The account the node is given on `day` (Europe/Rome).
    pub fn iban_on(&self, day: chrono::NaiveDate) -> &Iban {
        self.iban_changes
            .iter()
            .rev()
            .find(|(from, _)| *from <= day)
            .map_or(&self.iban, |(_, iban)| iban)
    }
}

impl Plan {
    /// The pipelines that deliver an entity's receipts (each gets a delivery when its debt type
    /// filter passes), and the export pipelines of `secondary` entities (beneficiaries of some
    /// transfer of the receipt, by fiscal code) that list such receipts (MyPay export 1.3).
    pub fn deliver_to(&self, entity: &str, secondary: &[&str]) -> Vec<DeliverTo> {
        let mut out: Vec<DeliverTo> = self
            .pipelines
            .iter()
            .filter(|p| p.entity == entity)
            .filter_map(|p| match &p.kind {
                PipelineKind::Receipts {
                    debt_types, format, ..
                } => Some(DeliverTo {
                    debt_types: debt_types.clone(),
                    holds_flagged: format.holds_flagged,
                    ..DeliverTo::all(&p.name, &p.entity)
                }),
                _ => None,
            })
            .collect();
        for fiscal_code in secondary {
            let Some(other) = self.entity_by_fiscal_code(fiscal_code) else {
                continue;
            };
            if other.ipa_code == entity {
                continue;
            }
            for p in &self.pipelines {
                if p.entity != other.ipa_code {
                    continue;
                }
                if let PipelineKind::Receipts { format, .. } = &p.kind {
                    if format.lists_secondary_receipts()
                        && !out.iter().any(|d| d.pipeline == p.name)
                    {
                        out.push(DeliverTo {
                            secondary: true,
                            holds_flagged: format.holds_flagged,
                            ..DeliverTo::all(&p.name, &p.entity)
                        });
                    }
                }
            }
        }
        out
    }

    /// The pipelines that deliver a receipt the node sent `entity` as a secondary beneficiary
    /// of the notice of `issuer` (fiscal code): the entity's receipts pipelines whose format can
    /// say so, as [`Self::deliver_to`] gives them the receipts of an issuer that is one of ours;
    /// none when the issuer is one of ours, since the issuer's copy reaches them already.
    pub fn secondary_deliver_to(&self, entity: &str, issuer: &str) -> Vec<DeliverTo> {
        if self.entity_by_fiscal_code(issuer).is_some() {
            return Vec::new();
        }
        self.pipelines
            .iter()
            .filter(|p| p.entity == entity)
            .filter_map(|p| match &p.kind {
                PipelineKind::Receipts { format, .. } if format.lists_secondary_receipts() => {
                    Some(DeliverTo {
                        secondary: true,
                        holds_flagged: format.holds_flagged,
                        ..DeliverTo::all(&p.name, &p.entity)
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// The pipelines that hand on an entity's settlement flows.
    pub fn report_pipelines(&self, entity: &str) -> Vec<&str> {
        self.pipelines
            .iter()
            .filter(|p| p.entity == entity && matches!(p.kind, PipelineKind::Reports { .. }))
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The entity the node names by fiscal code (`idPA`).
    pub fn entity_by_fiscal_code(&self, fiscal_code: &str) -> Option<&Arc<EntityRuntime>> {
        self.entities
            .values()
            .find(|e| e.fiscal_code.as_str() == fiscal_code)
    }
}

pub enum PipelineKind {
    /// MyPay import flows from a source polled on `schedule` into the registry, outcome files to
    /// a sink.
    ImportFlows {
        format: &'static dyn FlowFormat,
        /// The flows' character encoding, their outcome files' too.
        encoding: Encoding,
        source: Arc<dyn SourceConfig>,
        schedule: Box<cron::Schedule>,
        outcomes: Option<Arc<dyn SinkConfig>>,
        /// Print the accepted positions' payment notices into a zip beside the outcome files.
        notices: bool,
    },
    /// Treasury files (the giornale di cassa) from a source polled on `schedule`, their incoming
    /// movements into the entity's treasury (`to = "treasury"`).
    TreasuryFiles {
        decode: DecodeTreasury,
        /// `None`: the format's own (OPI says it in its XML; Poste's is ISO-8859-15).
        encoding: Option<Encoding>,
        source: Arc<dyn SourceConfig>,
        schedule: Box<cron::Schedule>,
    },
    /// Debt positions, one per message of a stream (Kafka), into the registry; one outcome per
    /// message to a topic.
    StreamPositions {
        source: Arc<dyn SourceConfig>,
        decode: DecodePosition,
        outcomes: Option<Arc<dyn MessageSinkConfig>>,
    },
    /// The entity's receipts (of `debt_types` only, when not empty), encoded and delivered
    /// through the outbox.
    Receipts {
        format: ReceiptFormat,
        route: ReceiptRoute,
        debt_types: Vec<String>,
    },
    /// The entity's settlement flows, one document per flow revision as it is stored, delivered
    /// through the outbox to a message sink or, one file each, to a file sink.
    Reports {
        codec: ReportCodec,
        connector: &'static str,
        sink: Arc<dyn MessageSinkConfig>,
    },
    /// MyPivot's reconciliation export of what was relabelled since the last file, on
    /// `schedule`, to a file sink.
    Reconciliation {
        version: snodo_adapters::mypivot::export::TracciatoVersion,
        /// The classes exported; empty: all the version can export.
        classes: Vec<String>,
        schedule: Box<cron::Schedule>,
        sink: Arc<dyn SinkConfig>,
        skip_empty: bool,
    },
    /// MyPay's export of expired positions (`mypay-expired`) of what expired since the last
    /// file, on `schedule`, to a file sink.
    Expired {
        /// Only these debt types (empty: all).
        debt_types: Vec<String>,
        schedule: Box<cron::Schedule>,
        sink: Arc<dyn SinkConfig>,
        skip_empty: bool,
    },
}

/// How a receipts pipeline writes receipts: a codec of the registry (`codecs.rs`).
#[derive(Clone)]
pub struct ReceiptFormat {
    pub name: &'static str,
    pub encoding: ReceiptEncoding,
    /// Flagged receipts are held for an operator (`codecs::Codec::holds_flagged`).
    pub holds_flagged: bool,
    /// The format says when a receipt is the entity's as a secondary beneficiary
    /// (`codecs::Codec::says_secondary`).
    pub says_secondary: bool,
}

#[derive(Clone)]
pub enum ReceiptEncoding {
    /// One document per receipt, pushed as soon as it is stored.
    PerMessage(EncodeReceipt),
    /// Many receipts per file, written on a schedule.
    File(ReceiptFile),
}

impl ReceiptFormat {
    /// Whether the format delivers receipts paid to the entity as a secondary beneficiary of
    /// another entity's notice, saying so: `json` (`entity.role`), MyPay's export 1.3
    /// (`EXPORT_ENTE_SECONDARIO` rows). The others would pass them off as the entity's payments.
    pub fn lists_secondary_receipts(&self) -> bool {
        self.says_secondary
            || matches!(&self.encoding, ReceiptEncoding::File(f) if f.lists_secondary_receipts)
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// Where a push receipts pipeline sends each receipt: any connector that is a message sink.
pub struct PushTarget {
    pub connector: &'static str,
    pub sink: Arc<dyn MessageSinkConfig>,
}

/// How a receipts pipeline sends what it wrote.
pub enum ReceiptRoute {
    /// One message per receipt, as soon as it is stored.
    Push(PushTarget),
    /// One file per schedule tick with every receipt not yet written.
    Batch {
        schedule: Box<cron::Schedule>,
        sink: Arc<dyn SinkConfig>,
        skip_empty: bool,
    },
}

pub struct PipelinePlan {
    pub name: String,
    pub entity: String,
    pub kind: PipelineKind,
}

/// `from = "receipts"`: the pipeline delivers the entity's receipts.
pub const RECEIPTS: &str = "receipts";
/// `from = "reports"`: the pipeline delivers the entity's settlement flows.
pub const REPORTS: &str = "reports";
/// `from = "reconciliation"`: the pipeline exports the entity's reconciliation labels.
pub const RECONCILIATION: &str = "reconciliation";
/// `from = "expired"`: the pipeline exports the entity's expired positions.
pub const EXPIRED: &str = "expired";

/// Loads and checks a configuration file (`None`: the embedded demo).
pub fn load(path: Option<&Path>) -> Result<Plan, Vec<Problem>> {
    let (value, _) = config::load_value(path)?;
    let mut problems = Vec::new();
    let fingerprints = Fingerprints::of(&value);
    let cfg: Option<Config> = config::deserialize_collecting(value, "", &mut problems);
    let Some(cfg) = cfg else { return Err(problems) };
    let mut plan = build(cfg, &mut problems);
    plan.fingerprints = fingerprints;
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

fn build(cfg: Config, problems: &mut Vec<Problem>) -> Plan {
    let mut warnings = Vec::new();
    // The listeners: bounds, TLS, node authentication, the admin token (docs/SECURITY.md).
    problems.extend(crate::listen::check(&cfg));
    let mut p = |path: String, msg: String| problems.push(Problem::new(path, msg));

    if cfg.hub.import_chunk_rows == 0 {
        p("hub.import_chunk_rows".into(), "must be at least 1".into());
    }
    let store = cfg.hub.store.as_str();
    if !(store == "sqlite"
        || store.starts_with("sqlite://")
        || store.starts_with("postgres://")
        || store.starts_with("postgresql://"))
    {
        p(
            "hub.store".into(),
            "is neither \"sqlite\" nor a postgres:// URL".into(),
        );
    }
    if let Err(e) = cfg.http.listen.parse::<std::net::SocketAddr>() {
        p(
            "http.listen".into(),
            format!("{:?} is not an address:port ({e})", cfg.http.listen),
        );
    }

    let taxonomy = match &cfg.hub.taxonomy_file {
        None => None,
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => match snodo_adapters::taxonomy::from_csv(&text) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    p(
                        "hub.taxonomy_file".into(),
                        format!("{}: {e}", file.display()),
                    );
                    None
                }
            },
            Err(e) => {
                warnings.push(format!(
                    "hub.taxonomy_file: {} cannot be read ({e}); taxonomy codes are checked by pattern only",
                    file.display()
                ));
                None
            }
        },
    };

    let broker = &cfg.pagopa.broker_fiscal_code;
    if let Err(e) = EntityFiscalCode::parse(broker) {
        p(
            "pagopa.broker_fiscal_code".into(),
            format!("{broker:?}: {e}"),
        );
    }
    if cfg.pagopa.stations.is_empty() {
        p(
            "pagopa.stations".into(),
            "at least one station is needed".into(),
        );
    }
    for (i, st) in cfg.pagopa.stations.iter().enumerate() {
        let ok = st
            .strip_prefix(broker.as_str())
            .and_then(|r| r.strip_prefix('_'))
            .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            p(
                format!("pagopa.stations[{i}]"),
                format!("{st:?} is not <broker fiscal code>_NN"),
            );
        }
    }

    let mut key_owners: HashMap<[u8; 32], String> = HashMap::new();
    if let Some(admin) = cfg.http.admin_token.as_ref().filter(|t| !t.0.is_empty()) {
        key_owners.insert(key_hash(&admin.0), "the admin token".into());
    }
    let checkout = cfg.pagopa.checkout.as_ref().and_then(|c| {
        let timeout = c
            .timeout
            .get()
            .map_err(|why| p("pagopa.checkout.timeout".into(), why))
            .ok()?;
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            p(
                "pagopa.checkout.url".into(),
                format!("{:?} is not an http(s) URL", c.url),
            );
        }
        Some(Checkout {
            url: c.url.trim_end_matches('/').to_string(),
            subscription_key: c.subscription_key.0.clone(),
            timeout,
        })
    });
    let fdr = cfg
        .pagopa
        .fdr
        .as_ref()
        .and_then(|f| fdr_plan(f, &cfg.pagopa, &mut p));
    let idempotency_ttl = cfg
        .api
        .idempotency_ttl
        .get()
        .map_err(|why| p("api.idempotency_ttl".into(), why))
        .unwrap_or(std::time::Duration::from_secs(86_400));
    let defaults = crate::reconciler::Grace::default();
    let grace = crate::reconciler::Grace {
        report: cfg
            .reconciliation
            .report_grace
            .get()
            .map_err(|why| p("reconciliation.report_grace".into(), why))
            .unwrap_or(defaults.report),
        credit: cfg
            .reconciliation
            .credit_grace
            .get()
            .map_err(|why| p("reconciliation.credit_grace".into(), why))
            .unwrap_or(defaults.credit),
    };
    let payment_in_progress = cfg
        .pagopa
        .payment_in_progress
        .get()
        .map_err(|why| p("pagopa.payment_in_progress".into(), why))
        .unwrap_or(std::time::Duration::from_secs(30 * 60));
    if cfg.api.max_batch == 0 || cfg.api.rate_per_second == 0 || cfg.api.rate_burst == 0 {
        p(
            "api".into(),
            "max_batch, rate_per_second and rate_burst must be above 0".into(),
        );
    }

    let mut entities = HashMap::new();
    for (i, e) in cfg.entities.iter().enumerate() {
        let at = format!("entities[{i}]");
        if e.ipa_code.is_empty()
            || e.ipa_code.contains('-')
            || e.ipa_code.contains(char::is_whitespace)
        {
            p(
                format!("{at}.ipa_code"),
                format!(
                    "{:?} must be non-empty, without '-' or spaces (flow names split on '-')",
                    e.ipa_code
                ),
            );
        }
        if entities.contains_key(&e.ipa_code) {
            p(
                format!("{at}.ipa_code"),
                format!("{:?} is configured twice", e.ipa_code),
            );
        }
        let fiscal = EntityFiscalCode::parse(&e.fiscal_code)
            .map_err(|err| {
                p(
                    format!("{at}.fiscal_code"),
                    format!("{:?}: {err}", e.fiscal_code),
                )
            })
            .ok();
        let seg = SegregationCode::parse(&e.segregation_code)
            .map_err(|err| {
                p(
                    format!("{at}.segregation_code"),
                    format!("{:?}: {err}", e.segregation_code),
                )
            })
            .ok();
        if let Some(other) = cfg.entities[..i]
            .iter()
            .position(|o| o.fiscal_code == e.fiscal_code)
        {
            p(
                format!("{at}.fiscal_code"),
                format!(
                    "{:?} is also the fiscal code of entities[{other}]",
                    e.fiscal_code
                ),
            );
        }
        let mut api_keys = Vec::new();
        for (k, key) in e.api_keys.iter().enumerate() {
            let key = key.0.trim();
            if key.is_empty() {
                continue;
            }
            if key.len() < 16 {
                p(
                    format!("{at}.api_keys[{k}]"),
                    "an API key must be at least 16 characters".into(),
                );
            }
            let sha256 = key_hash(key);
            if let Some(owner) = key_owners.insert(sha256, e.ipa_code.clone()) {
                p(
                    format!("{at}.api_keys[{k}]"),
                    format!("the same key is also given to {owner}: a key identifies one entity"),
                );
            }
            api_keys.push(ApiKey {
                id: format!("{}#{k}", e.ipa_code),
                sha256,
            });
        }
        let mypay_password = match e.mypay_password.as_ref().map(|s| s.0.as_str()) {
            None | Some("") => None,
            Some(pw) => {
                let n = pw.chars().count();
                if !(8..=15).contains(&n) {
                    p(
                        format!("{at}.mypay_password"),
                        format!(
                            "MyPay's password is 8 to 15 characters (stPassword in \
                             pa-per-ente.wsdl), this one has {n}"
                        ),
                    );
                }
                Some(key_hash(pw))
            }
        };
        let logo = e.logo.as_deref().and_then(|path| {
            load_logo(path)
                .map_err(|why| p(format!("{at}.logo"), why))
                .ok()
        });
        let mut spontaneous = Vec::new();
        let mut external = Vec::new();
        let mut demand: Vec<crate::demand::DemandOffer> = Vec::new();
        let mut debt_types = HashMap::new();
        let mut payments = HashMap::new();
        for (j, dt) in e.debt_types.iter().enumerate() {
            let at = format!("{at}.debt_types[{j}]");
            if let Some(sp) = &dt.spontaneous {
                match spontaneous_rule(sp) {
                    Ok(rule) => spontaneous.push(SpontaneousOffer {
                        debt_type: dt.code.clone(),
                        description: dt.description.clone(),
                        rule,
                    }),
                    Err(why) => p(format!("{at}.spontaneous"), why),
                }
                if dt.external.is_some() {
                    p(
                        format!("{at}.external"),
                        "a debt type is either spontaneous or external, not both".into(),
                    );
                }
            }
            if let Some(ext) = &dt.external {
                let timeout = ext
                    .timeout
                    .get()
                    .map_err(|why| p(format!("{at}.external.timeout"), why))
                    .ok();
                if !(ext.url.starts_with("http://") || ext.url.starts_with("https://")) {
                    p(
                        format!("{at}.external.url"),
                        format!("{:?} is not an http(s) URL", ext.url),
                    );
                }
                if let Some(timeout) = timeout {
                    if timeout.is_zero() || timeout > MAX_EXTERNAL_TIMEOUT {
                        p(
                            format!("{at}.external.timeout"),
                            format!(
                                "must be above 0 and at most {}s: the node waits for the answer",
                                MAX_EXTERNAL_TIMEOUT.as_secs()
                            ),
                        );
                    }
                    use crate::config::ExternalMode;
                    // MyPay's answers name no payer: the position's is ANONIMO.
                    if ext.mode != ExternalMode::Json && !dt.anonymous_payer_allowed {
                        p(
                            format!("{at}.anonymous_payer_allowed"),
                            "a MyPay mode needs it true: MyPay's answers name no payer".into(),
                        );
                    }
                    let (broker, station) = (
                        cfg.pagopa.broker_fiscal_code.clone(),
                        cfg.pagopa.stations.first().cloned().unwrap_or_default(),
                    );
                    let mode = match ext.mode {
                        ExternalMode::Json => ExternalAsk::Json,
                        ExternalMode::MypaySoap => ExternalAsk::MypaySoap {
                            intermediary: broker,
                            station,
                        },
                        ExternalMode::MypayExternalVerify => {
                            ExternalAsk::MypayExternalVerify { broker, station }
                        }
                    };
                    external.push(ExternalSource {
                        mode,
                        debt_type: dt.code.clone(),
                        url: ext.url.trim_end_matches('/').to_string(),
                        timeout,
                        token: ext
                            .token
                            .as_ref()
                            .map(|t| t.0.clone())
                            .filter(|t| !t.is_empty()),
                    });
                }
            }
            if let Some(d) = &dt.demand {
                let at = format!("{at}.demand");
                if dt.external.is_some() {
                    p(
                        at.clone(),
                        "a debt type is either external or asked on demand, not both: \
                         ask the entity's system with demand.url"
                            .into(),
                    );
                }
                if let Some(offer) = demand_offer(dt, d, &at, &mut p) {
                    if let Some(other) = demand
                        .iter()
                        .find(|o| o.service == offer.service && o.provider == offer.provider)
                    {
                        p(
                            format!("{at}.service"),
                            format!(
                                "{:?} is also offered by debt type {:?}: one debt type a service",
                                offer.service, other.debt_type
                            ),
                        );
                    }
                    demand.push(offer);
                }
            }
            if dt.code.is_empty() || dt.code.len() > 64 {
                p(format!("{at}.code"), "must be 1 to 64 characters".into());
            }
            if debt_types.contains_key(&dt.code) {
                p(
                    format!("{at}.code"),
                    format!("{:?} is configured twice for this entity", dt.code),
                );
            }
            let mut iban_changes = Vec::new();
            for (k, change) in dt.iban_changes.iter().enumerate() {
                let at = format!("{at}.iban_changes[{k}]");
                let from = chrono::NaiveDate::parse_from_str(&change.from, "%Y-%m-%d");
                let iban = Iban::parse(&change.iban);
                match (from, iban) {
                    (Err(_), _) => p(
                        format!("{at}.from"),
                        format!("{:?} is not a date (YYYY-MM-DD)", change.from),
                    ),
                    (_, Err(err)) => p(format!("{at}.iban"), format!("{:?} {err}", change.iban)),
                    (Ok(from), Ok(iban)) => {
                        if iban_changes.last().is_some_and(|(last, _)| *last >= from) {
                            p(
                                format!("{at}.from"),
                                format!(
                                    "{} is not after the change before it: list them in date order",
                                    change.from
                                ),
                            );
                        }
                        iban_changes.push((from, iban));
                    }
                }
            }
            let postal = dt.postal_iban.as_deref().and_then(|given| {
                match Iban::parse(given) {
                    Err(err) => p(format!("{at}.postal_iban"), format!("{given:?} {err}")),
                    Ok(iban) if !iban.is_postal() => p(
                        format!("{at}.postal_iban"),
                        format!(
                            "{given:?} is not a Poste Italiane account (ABI {})",
                            Iban::POSTE_ABI
                        ),
                    ),
                    Ok(iban) => {
                        return Some(PostalAccount {
                            iban,
                            holder: dt
                                .postal_account_holder
                                .clone()
                                .unwrap_or_else(|| e.name.clone()),
                        })
                    }
                }
                None
            });
            if dt.postal_account_holder.is_some() && dt.postal_iban.is_none() {
                p(
                    format!("{at}.postal_account_holder"),
                    "there is no postal_iban to hold".into(),
                );
            }
            match Iban::parse(&dt.iban) {
                Err(err) => p(format!("{at}.iban"), format!("{:?} {err}", dt.iban)),
                Ok(iban) => {
                    payments.insert(
                        dt.code.clone(),
                        DebtTypePayment {
                            iban,
                            iban_changes,
                            taxonomy: dt.taxonomy.clone(),
                            late: snodo_core::payment::LatePolicy {
                                late_payment_allowed: dt.late_payment_allowed,
                                expire_after_days: dt.expire_after_days,
                            },
                            stamp: dt.stamp_duty.clone(),
                            postal,
                        },
                    );
                }
            }
            match TaxonomyCode::parse(&dt.taxonomy) {
                Err(err) => p(
                    format!("{at}.taxonomy"),
                    format!("{:?}: {err}", dt.taxonomy),
                ),
                Ok(code) => {
                    if taxonomy.as_ref().is_some_and(|t| !t.contains(&code)) {
                        p(
                            format!("{at}.taxonomy"),
                            format!("{:?} is not in the pagoPA taxonomy", dt.taxonomy),
                        );
                    }
                }
            }
            if let Some(kind) = &dt.stamp_duty {
                if kind != "01" {
                    p(
                        format!("{at}.stamp_duty"),
                        format!("{kind:?}: pagoPA's only tipoBollo is \"01\""),
                    );
                }
                if dt.external.is_some() || dt.spontaneous.is_some() {
                    p(
                        format!("{at}.stamp_duty"),
                        "a stamp-duty debt type is neither external nor spontaneous".into(),
                    );
                }
            }
            debt_types.insert(
                dt.code.clone(),
                DebtTypeRules {
                    code: dt.code.clone(),
                    active: dt.active,
                    due_date_required: dt.due_date_required,
                    anonymous_payer_allowed: dt.anonymous_payer_allowed,
                    generate_iuv: dt.generate_iuv,
                    stamp_duty: dt.stamp_duty.is_some(),
                },
            );
        }
        if let (Some(fiscal_code), Some(seg)) = (fiscal, seg) {
            entities.insert(
                e.ipa_code.clone(),
                Arc::new(EntityRuntime {
                    ipa_code: e.ipa_code.clone(),
                    fiscal_code,
                    name: e.name.clone(),
                    office_name: e.office_name.clone(),
                    cbill: e.cbill.clone(),
                    poste_authorisation: e
                        .poste_authorisation
                        .clone()
                        .filter(|a| !a.trim().is_empty()),
                    logo,
                    segregation_code: seg,
                    payments,
                    api_keys,
                    mypay_password,
                    spontaneous,
                    external,
                    demand,
                    state: e.state,
                    test_stations: e.test_stations.clone(),
                    payment_in_progress,
                    rules: EntityRules {
                        segregation_code: seg,
                        debt_types,
                        taxonomy: taxonomy.clone(),
                    },
                }),
            );
        }
    }
    let known_entities: Vec<&str> = cfg.entities.iter().map(|e| e.ipa_code.as_str()).collect();
    for (i, e) in cfg.entities.iter().enumerate() {
        if e.state == EntityState::PreProduction && e.test_stations.is_empty() {
            p(
                format!("entities[{i}].test_stations"),
                "a pre-production entity is answered only on its test stations: name at least one"
                    .into(),
            );
        }
        for (k, st) in e.test_stations.iter().enumerate() {
            if cfg.pagopa.stations.contains(st) {
                p(
                    format!("entities[{i}].test_stations[{k}]"),
                    format!("{st:?} is a live station of the broker (pagopa.stations): a test station must be another"),
                );
            }
        }
    }

    let mut pipelines = Vec::new();
    let mut names = HashSet::new();
    for (i, pc) in cfg.pipelines.iter().enumerate() {
        let at = format!("pipelines[{i}]");
        if pc.name.is_empty() {
            p(format!("{at}.name"), "must not be empty".into());
        } else if !names.insert(pc.name.clone()) {
            p(
                format!("{at}.name"),
                format!("{:?} is used by another pipeline", pc.name),
            );
        }
        if !known_entities.contains(&pc.entity.as_str()) {
            p(
                format!("{at}.entity"),
                registry::unknown_name(&pc.entity, "entity", &known_entities),
            );
        }
        let mut local = Vec::new();
        let kind = if matches!(&pc.from, Endpoint::Named(n) if n == RECEIPTS) {
            refuse_keys(
                pc,
                &at,
                &[Key::Encoding],
                "only a pipeline importing flows (files) takes this",
                &mut local,
            );
            receipts_pipeline(pc, &at, entities.get(&pc.entity).map(|e| &**e), &mut local)
        } else if matches!(&pc.from, Endpoint::Named(n) if n == REPORTS) {
            if fdr.is_none() {
                local.push(Problem::new(
                    format!("{at}.from"),
                    "settlement flows are pulled only with [pagopa.fdr] configured",
                ));
            }
            reports_pipeline(pc, &at, &mut local)
        } else if matches!(&pc.from, Endpoint::Named(n) if n == RECONCILIATION) {
            reconciliation_pipeline(pc, &at, &mut local)
        } else if matches!(&pc.from, Endpoint::Named(n) if n == EXPIRED) {
            expired_pipeline(pc, &at, entities.get(&pc.entity).map(|e| &**e), &mut local)
        } else {
            refuse_keys(
                pc,
                &at,
                &[Key::DebtTypes, Key::Batch],
                "only a receipts pipeline (from = \"receipts\") takes this",
                &mut local,
            );
            import_pipeline(pc, &at, &mut local)
        };
        if pc.notices {
            match &kind {
                Some(PipelineKind::ImportFlows { outcomes: None, .. }) => local.push(Problem::new(
                    format!("{at}.notices"),
                    "the notices zip is published beside the outcome files: set outcomes too",
                )),
                Some(PipelineKind::ImportFlows { .. }) | None => {}
                Some(_) => local.push(Problem::new(
                    format!("{at}.notices"),
                    "only a pipeline importing flows (files) prints their notices",
                )),
            }
        }
        let ok = local.is_empty();
        problems_extend(&mut p, local);
        if let (true, Some(kind)) = (ok, kind) {
            pipelines.push(PipelinePlan {
                name: pc.name.clone(),
                entity: pc.entity.clone(),
                kind,
            });
        }
    }

    // Only the keys' hashes stay in memory.
    let mut cfg = cfg;
    for e in &mut cfg.entities {
        e.api_keys.clear();
        e.mypay_password = None;
    }
    Plan {
        config: cfg,
        entities,
        checkout,
        fdr,
        idempotency_ttl,
        grace,
        payment_in_progress,
        pipelines,
        taxonomy,
        warnings,
        fingerprints: Fingerprints::default(),
    }
}

/// `[pagopa.fdr]` into [`Fdr`], every problem reported.
fn fdr_plan(
    f: &config::FdrConfig,
    pagopa: &config::PagopaConfig,
    p: &mut impl FnMut(String, String),
) -> Option<Fdr> {
    let at = |k: &str| format!("pagopa.fdr.{k}");
    let mut ok = true;
    let url = f.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        p(at("url"), format!("{:?} is not an http(s) URL", f.url));
        ok = false;
    }
    let key = f
        .subscription_key
        .as_ref()
        .map(|s| s.0.clone())
        .filter(|s| !s.is_empty());
    let password = f
        .password
        .as_ref()
        .map(|s| s.0.clone())
        .filter(|s| !s.is_empty());
    match f.mode {
        config::FdrMode::Rest if key.is_none() => {
            p(
                at("subscription_key"),
                "missing: FdR 3 needs the Ocp-Apim-Subscription-Key, e.g. subscription_key = \"${FDR_KEY}\"".into(),
            );
            ok = false;
        }
        config::FdrMode::Soap if password.is_none() => {
            p(
                at("password"),
                "missing: the node's calls carry the station's password, e.g. password = \"${NODE_PASSWORD}\"".into(),
            );
            ok = false;
        }
        _ => {}
    }
    let station = match &f.station {
        Some(s) if !pagopa.stations.contains(s) => {
            p(
                at("station"),
                format!("{s:?} is not one of pagopa.stations"),
            );
            ok = false;
            s.clone()
        }
        Some(s) => s.clone(),
        None => pagopa.stations.first().cloned().unwrap_or_default(),
    };
    let schedule = match cron::Schedule::from_str(&f.schedule) {
        Ok(s) => Some(s),
        Err(e) => {
            p(
                at("schedule"),
                format!(
                    "{:?} is not a cron expression with seconds, e.g. \"0 */15 * * * *\" ({e})",
                    f.schedule
                ),
            );
            None
        }
    };
    let mut duration = |k: &str, d: &snodo_connectors::HumanDuration| match d.get() {
        Ok(v) if !v.is_zero() => Some(v),
        Ok(_) => {
            p(at(k), "must be more than 0".into());
            None
        }
        Err(why) => {
            p(at(k), why);
            None
        }
    };
    let connect_timeout = duration("connect_timeout", &f.connect_timeout);
    let timeout = duration("timeout", &f.timeout);
    if !(1..=1000).contains(&f.page_size) {
        p(
            at("page_size"),
            format!("{} is not 1 to 1000 (FdR 3's largest page)", f.page_size),
        );
        ok = false;
    }
    if f.attempts == 0 {
        p(at("attempts"), "must be at least 1".into());
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(Fdr {
        mode: f.mode,
        url: url.trim_end_matches('/').to_string(),
        subscription_key: key,
        broker: pagopa.broker_fiscal_code.clone(),
        station,
        password,
        schedule: Box::new(schedule?),
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        page_size: f.page_size,
        attempts: f.attempts,
    })
}

/// `from` a connector, `decode` a flow format, `to = "registry"`, `outcomes` a sink.
fn import_pipeline(
    pc: &config::PipelineConfig,
    at: &str,
    local: &mut Vec<Problem>,
) -> Option<PipelineKind> {
    if let Endpoint::Connector { kind, .. } = &pc.from {
        let shape = registry::connector(kind).and_then(|c| c.source_shape());
        if shape == Some(SourceShape::Stream) {
            refuse_keys(
                pc,
                at,
                &[Key::Encoding],
                "only a pipeline importing flows (files) takes this: stream messages are UTF-8",
                local,
            );
            return stream_pipeline(pc, kind, at, local);
        }
    }
    let encoding = match pc.encoding.as_deref().map(|e| (e, Encoding::parse(e))) {
        None => Some(None),
        Some((_, Some(e))) => Some(Some(e)),
        Some((given, None)) => {
            local.push(Problem::new(
                format!("{at}.encoding"),
                registry::unknown_name(given, "encoding", Encoding::NAMES),
            ));
            None
        }
    };
    let source = match &pc.from {
        Endpoint::Connector { kind, params } => {
            registry::parse_source(kind, params.clone(), &format!("{at}.from"), local)
                .map(|(_, s)| s)
        }
        Endpoint::Named(n) => {
            local.push(Problem::new(
                format!("{at}.from"),
                format!(
                    "{n:?} is not a source: use \"{RECEIPTS}\", \"{REPORTS}\", \"{RECONCILIATION}\" or {{ connector = \"dir\", ... }}"
                ),
            ));
            None
        }
    };
    let schedule_text = source
        .as_ref()
        .and_then(|s| s.schedule().map(str::to_string))
        .unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
    let schedule = match cron::Schedule::from_str(&schedule_text) {
        Ok(s) => Some(s),
        Err(e) => {
            local.push(Problem::new(
                format!("{at}.from.schedule"),
                format!(
                    "{schedule_text:?} is not a cron expression with seconds, e.g. \"0 */5 * * * *\" ({})",
                    e.to_string().lines().last().unwrap_or_default().trim()
                ),
            ));
            None
        }
    };
    let decoders = codecs::names(|d| {
        matches!(
            d,
            Does::ImportFlows(_) | Does::TreasuryFiles(_) | Does::NotificationFiles(_)
        )
    });
    let format = match &pc.decode {
        Some(Codec { name, .. }) => match codecs::codec(name).map(|c| c.does) {
            Some(Does::ImportFlows(format)) => Some(FileDecoder::Flows(format)),
            Some(Does::TreasuryFiles(decode)) => Some(FileDecoder::Treasury(decode, TREASURY)),
            Some(Does::NotificationFiles(decode)) => {
                Some(FileDecoder::Treasury(decode, RECONCILIATION))
            }
            _ => {
                local.push(Problem::new(
                    format!("{at}.decode"),
                    registry::unknown_name(name, "decoder", &decoders),
                ));
                None
            }
        },
        None => {
            local.push(Problem::new(
                format!("{at}.decode"),
                "missing: say how to read the source, e.g. \"mypay-import\"",
            ));
            None
        }
    };
    if let Some(c) = &pc.encode {
        local.push(Problem::new(
            format!("{at}.encode"),
            format!(
                "{:?}: an import pipeline writes to the registry and encodes nothing",
                c.name
            ),
        ));
    }
    let target = match format {
        Some(FileDecoder::Treasury(_, target)) => target,
        _ => "registry",
    };
    match &pc.to {
        Endpoint::Named(n) if n == target => {}
        Endpoint::Named(n) if registry::TARGETS.contains(&n.as_str()) => local.push(Problem::new(
            format!("{at}.to"),
            format!("{n:?}: what this decoder reads goes to {target:?}"),
        )),
        Endpoint::Named(n) => local.push(Problem::new(
            format!("{at}.to"),
            registry::unknown_name(n, "target", registry::TARGETS),
        )),
        Endpoint::Connector { kind, .. } => local.push(Problem::new(
            format!("{at}.to"),
            format!("an import pipeline goes to \"registry\", not to a {kind:?} connector"),
        )),
    }
    let outcomes = match &pc.outcomes {
        None => None,
        Some(Endpoint::Connector { kind, params }) => {
            registry::parse_sink(kind, params.clone(), &format!("{at}.outcomes"), local)
        }
        Some(Endpoint::Named(n)) => {
            local.push(Problem::new(
                format!("{at}.outcomes"),
                format!("{n:?} is not a sink: use {{ connector = \"dir\", ... }}"),
            ));
            None
        }
    };
    match format? {
        FileDecoder::Flows(format) => Some(PipelineKind::ImportFlows {
            format,
            encoding: encoding?.unwrap_or(Encoding::Utf8),
            source: source?,
            schedule: Box::new(schedule?),
            notices: pc.notices && outcomes.is_some(),
            outcomes,
        }),
        FileDecoder::Treasury(decode, _) => {
            if pc.outcomes.is_some() {
                local.push(Problem::new(
                    format!("{at}.outcomes"),
                    "a treasury intake has no outcome files: a refused file goes to the source's failed/ with why",
                ));
                return None;
            }
            Some(PipelineKind::TreasuryFiles {
                decode,
                encoding: encoding?,
                source: source?,
                schedule: Box::new(schedule?),
            })
        }
    }
}

/// What an intake of files decodes.
#[derive(Clone, Copy)]
enum FileDecoder {
    Flows(&'static dyn FlowFormat),
    /// Treasury files (to `treasury`) or notification files (to `reconciliation`): applied
    /// whole, in one transaction.
    Treasury(DecodeTreasury, &'static str),
}

/// `to = "treasury"`: an intake of treasury files.
pub const TREASURY: &str = "treasury";

/// `from` a stream connector (kafka), `decode` a codec of one position per message (e.g.
/// `position-json`), `to = "registry"`, `outcomes` a message sink (a topic).
fn stream_pipeline(
    pc: &config::PipelineConfig,
    kind: &str,
    at: &str,
    local: &mut Vec<Problem>,
) -> Option<PipelineKind> {
    let source = match &pc.from {
        Endpoint::Connector { kind, params } => {
            registry::parse_source(kind, params.clone(), &format!("{at}.from"), local)
                .map(|(_, s)| s)
        }
        Endpoint::Named(_) => None,
    };
    let decoders = codecs::names(|d| matches!(d, Does::StreamPositions(_)));
    let decode = match &pc.decode {
        Some(Codec { name, .. }) => match codecs::codec(name).map(|c| c.does) {
            Some(Does::StreamPositions(decode)) => Some(decode),
            _ => None,
        },
        None => None,
    };
    match &pc.decode {
        Some(_) if decode.is_some() => {}
        Some(Codec { name, .. }) => local.push(Problem::new(
            format!("{at}.decode"),
            format!(
                "{name:?} does not read one position per message; a {kind} source takes {}",
                decoders.join(", ")
            ),
        )),
        None => local.push(Problem::new(
            format!("{at}.decode"),
            format!(
                "missing: a {kind} source takes decode = {:?}",
                decoders.first().copied().unwrap_or_default()
            ),
        )),
    }
    if let Some(c) = &pc.encode {
        local.push(Problem::new(
            format!("{at}.encode"),
            format!(
                "{:?}: an intake pipeline writes to the registry and encodes nothing",
                c.name
            ),
        ));
    }
    if !matches!(&pc.to, Endpoint::Named(n) if n == "registry") {
        local.push(Problem::new(
            format!("{at}.to"),
            format!("a {kind} intake pipeline goes to \"registry\""),
        ));
    }
    let outcomes = match &pc.outcomes {
        None => None,
        Some(Endpoint::Connector { kind, params }) if registry::is_message_sink(kind) => {
            registry::parse_message_sink(
                kind,
                params.clone(),
                &format!("{at}.outcomes"),
                "connector",
                local,
            )
        }
        Some(_) => {
            local.push(Problem::new(
                format!("{at}.outcomes"),
                format!("a {kind} intake answers on a topic: {{ connector = \"kafka\", brokers = ..., topic = ... }}"),
            ));
            None
        }
    };
    Some(PipelineKind::StreamPositions {
        source: source?,
        decode: decode?,
        outcomes,
    })
}

/// `from = "receipts"`, `encode` a receipt format, `to` a connector; `batch` for file formats.
fn receipts_pipeline(
    pc: &config::PipelineConfig,
    at: &str,
    entity: Option<&EntityRuntime>,
    local: &mut Vec<Problem>,
) -> Option<PipelineKind> {
    let format = match &pc.encode {
        Some(c) => receipt_format(c, &format!("{at}.encode"), local),
        None => {
            local.push(Problem::new(
                format!("{at}.encode"),
                "missing: say how to write receipts, e.g. \"json\"",
            ));
            None
        }
    };
    if pc.decode.is_some() {
        local.push(Problem::new(
            format!("{at}.decode"),
            "a receipts pipeline reads the hub's own receipts: nothing to decode",
        ));
    }
    if pc.outcomes.is_some() {
        local.push(Problem::new(
            format!("{at}.outcomes"),
            "a receipts pipeline has no outcome files",
        ));
    }
    for (i, dt) in pc.debt_types.iter().enumerate() {
        if let Some(e) = entity {
            if !e.rules.debt_types.contains_key(dt) {
                let known: Vec<&str> = e.rules.debt_types.keys().map(String::as_str).collect();
                local.push(Problem::new(
                    format!("{at}.debt_types[{i}]"),
                    registry::unknown_name(dt, "debt type of this entity", &known),
                ));
            }
        }
    }
    let is_file = matches!(
        format,
        Some(ReceiptFormat {
            encoding: ReceiptEncoding::File(_),
            ..
        })
    );
    let route = match (&pc.batch, format.as_ref()) {
        (Some(batch), None) => {
            // Still check what the batch says, so one run of validate lists every problem.
            batch_route(pc, batch, at, local);
            None
        }
        (None, None) => None,
        (None, Some(f)) if is_file => {
            local.push(Problem::new(
                format!("{at}.batch"),
                format!(
                    "missing: {:?} writes files; say when, e.g. batch = {{ schedule = \"0 0 2 * * *\" }}",
                    f.name()
                ),
            ));
            None
        }
        (Some(_), Some(f)) if !is_file => {
            local.push(Problem::new(
                format!("{at}.batch"),
                format!(
                    "{:?} pushes each receipt as it is stored; batch is for file formats such as \"mypay-export\"",
                    f.name()
                ),
            ));
            None
        }
        (Some(batch), Some(_)) => batch_route(pc, batch, at, local),
        (None, Some(_)) => push_route(pc, at, local),
    };
    Some(PipelineKind::Receipts {
        format: format?,
        route: route?,
        debt_types: pc.debt_types.clone(),
    })
}

/// A pipeline key that only some kinds of pipeline take.
#[derive(Clone, Copy)]
enum Key {
    Decode,
    Outcomes,
    DebtTypes,
    Batch,
    Encoding,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Decode => "decode",
            Key::Outcomes => "outcomes",
            Key::DebtTypes => "debt_types",
            Key::Batch => "batch",
            Key::Encoding => "encoding",
        }
    }

    fn given(self, pc: &config::PipelineConfig) -> bool {
        match self {
            Key::Decode => pc.decode.is_some(),
            Key::Outcomes => pc.outcomes.is_some(),
            Key::DebtTypes => !pc.debt_types.is_empty(),
            Key::Batch => pc.batch.is_some(),
            Key::Encoding => pc.encoding.is_some(),
        }
    }
}

/// Each of `keys` that `pc` sets is a problem at `<at>.<key>`: this kind of pipeline does not
/// take it.
fn refuse_keys(
    pc: &config::PipelineConfig,
    at: &str,
    keys: &[Key],
    why: &str,
    local: &mut Vec<Problem>,
) {
    for key in keys.iter().filter(|k| k.given(pc)) {
        local.push(Problem::new(format!("{at}.{}", key.name()), why));
    }
}

/// `from = "reports"`, `encode` a report format (`fdr-xml`, `fdr-json`), `to` any connector that
/// can take a message or a file.
fn reports_pipeline(
    pc: &config::PipelineConfig,
    at: &str,
    local: &mut Vec<Problem>,
) -> Option<PipelineKind> {
    refuse_keys(
        pc,
        at,
        &[Key::Decode, Key::Outcomes, Key::DebtTypes, Key::Batch, Key::Encoding],
        "a reports pipeline hands on each settlement flow as it is stored: it takes only encode and to",
        local,
    );
    let known = || codecs::names(|d| matches!(d, Does::ReportDocuments(_)));
    let codec = match &pc.encode {
        None => {
            local.push(Problem::new(
                format!("{at}.encode"),
                format!(
                    "missing: say how to write settlement flows ({})",
                    known().join(", ")
                ),
            ));
            None
        }
        Some(c) => match codecs::codec(&c.name).map(|k| k.does) {
            Some(Does::ReportDocuments(codec)) => {
                if c.params.as_object().is_some_and(|m| !m.is_empty()) {
                    local.push(Problem::new(
                        format!("{at}.encode"),
                        format!("{:?} takes no settings", c.name),
                    ));
                }
                Some(codec)
            }
            _ => {
                local.push(Problem::new(
                    format!("{at}.encode"),
                    registry::unknown_name(&c.name, "settlement flow format", &known()),
                ));
                None
            }
        },
    };
    let path = format!("{at}.to");
    let target = match &pc.to {
        Endpoint::Connector { kind, params } if registry::is_message_sink(kind) => {
            registry::parse_message_sink(kind, params.clone(), &path, "connector", local)
                .map(|sink| (kind.as_str(), sink))
        }
        Endpoint::Connector { kind, params } => {
            registry::parse_sink(kind, params.clone(), &path, local).map(|sink| {
                let files: Arc<dyn MessageSinkConfig> = Arc::new(FileMessagesConfig {
                    sink,
                    policy: RetryPolicy::default(),
                });
                (kind.as_str(), files)
            })
        }
        Endpoint::Named(n) => {
            local.push(Problem::new(
                path,
                format!("{n:?}: settlement flows go to a connector, e.g. {{ connector = \"dir\", path = \"...\" }}"),
            ));
            None
        }
    };
    let (kind, sink) = target?;
    Some(PipelineKind::Reports {
        codec: codec?,
        connector: registry::connector(kind)?.name,
        sink,
    })
}

/// `from = "reconciliation"`, `encode = { codec = "mypivot-export", version, classes }`,
/// `batch = { schedule }`, `to` a file sink.
fn reconciliation_pipeline(
    pc: &config::PipelineConfig,
    at: &str,
    local: &mut Vec<Problem>,
) -> Option<PipelineKind> {
    use snodo_adapters::mypivot::export::{TracciatoVersion, CLASSES};
    refuse_keys(
        pc,
        at,
        &[Key::Decode, Key::Outcomes, Key::DebtTypes, Key::Encoding],
        "a reconciliation export takes only encode, batch and to",
        local,
    );
    let codec_at = format!("{at}.encode");
    let (version, classes) = match &pc.encode {
        Some(c) if c.name == snodo_adapters::mypivot::MYPIVOT_EXPORT => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Params {
                version: String,
                #[serde(default)]
                classes: Vec<String>,
            }
            match serde_json::from_value::<Params>(c.params.clone()) {
                Err(e) => {
                    local.push(Problem::new(
                        codec_at.clone(),
                        format!("{e} (e.g. {{ codec = \"mypivot-export\", version = \"1.4\", classes = [\"IUF_NO_TES\"] }})"),
                    ));
                    (None, Vec::new())
                }
                Ok(p) => {
                    let version = match TracciatoVersion::parse(&p.version) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            local.push(Problem::new(format!("{codec_at}.version"), e.to_string()));
                            None
                        }
                    };
                    for c in &p.classes {
                        if !CLASSES.contains(&c.as_str()) {
                            local.push(Problem::new(
                                format!("{codec_at}.classes"),
                                registry::unknown_name(c, "class", &CLASSES),
                            ));
                        } else if let Some(Err(e)) = version.map(|v| v.check_class(c, true)) {
                            local.push(Problem::new(format!("{codec_at}.classes"), e.to_string()));
                        }
                    }
                    (version, p.classes)
                }
            }
        }
        Some(c) => {
            local.push(Problem::new(
                codec_at,
                registry::unknown_name(
                    &c.name,
                    "reconciliation format",
                    &[snodo_adapters::mypivot::MYPIVOT_EXPORT],
                ),
            ));
            (None, Vec::new())
        }
        None => {
            local.push(Problem::new(
                codec_at,
                "missing: e.g. { codec = \"mypivot-export\", version = \"1.4\" }",
            ));
            (None, Vec::new())
        }
    };
    let Some(batch) = &pc.batch else {
        local.push(Problem::new(
            format!("{at}.batch"),
            "missing: a reconciliation export is written on a schedule, e.g. batch = { schedule = \"0 0 6 * * *\" }",
        ));
        return None;
    };
    let ReceiptRoute::Batch {
        schedule,
        sink,
        skip_empty,
    } = batch_route(pc, batch, at, local)?
    else {
        return None;
    };
    Some(PipelineKind::Reconciliation {
        version: version?,
        classes,
        schedule,
        sink,
        skip_empty,
    })
}

/// `from = "expired"`, `encode = "mypay-expired"`, `batch = { schedule }`, `to` a file sink;
/// `debt_types` narrows it.
fn expired_pipeline(
    pc: &config::PipelineConfig,
    at: &str,
    entity: Option<&EntityRuntime>,
    local: &mut Vec<Problem>,
) -> Option<PipelineKind> {
    use snodo_adapters::mypay_expired::MYPAY_EXPIRED;
    refuse_keys(
        pc,
        at,
        &[Key::Decode, Key::Outcomes, Key::Encoding],
        "an expired export takes only encode, batch, debt_types and to",
        local,
    );
    match &pc.encode {
        Some(c) if c.name == MYPAY_EXPIRED => {
            if c.params.as_object().is_some_and(|m| !m.is_empty()) {
                local.push(Problem::new(
                    format!("{at}.encode"),
                    format!("{MYPAY_EXPIRED:?} takes no settings"),
                ));
            }
        }
        Some(c) => local.push(Problem::new(
            format!("{at}.encode"),
            registry::unknown_name(&c.name, "expired positions format", &[MYPAY_EXPIRED]),
        )),
        None => local.push(Problem::new(
            format!("{at}.encode"),
            format!("missing: encode = \"{MYPAY_EXPIRED}\""),
        )),
    }
    if let Some(e) = entity {
        for (i, code) in pc.debt_types.iter().enumerate() {
            match e.payments.get(code) {
                None => local.push(Problem::new(
                    format!("{at}.debt_types[{i}]"),
                    format!("{code:?} is not a debt type of {}", e.ipa_code),
                )),
                Some(p) if p.late.expire_after_days.is_none() => local.push(Problem::new(
                    format!("{at}.debt_types[{i}]"),
                    format!("{code:?} never expires: give it expire_after_days"),
                )),
                Some(_) => {}
            }
        }
    }
    let Some(batch) = &pc.batch else {
        local.push(Problem::new(
            format!("{at}.batch"),
            "missing: an expired export is written on a schedule, e.g. batch = { schedule = \"0 0 6 * * *\" }",
        ));
        return None;
    };
    let ReceiptRoute::Batch {
        schedule,
        sink,
        skip_empty,
    } = batch_route(pc, batch, at, local)?
    else {
        return None;
    };
    Some(PipelineKind::Expired {
        debt_types: pc.debt_types.clone(),
        schedule,
        sink,
        skip_empty,
    })
}

fn receipt_format(c: &Codec, at: &str, local: &mut Vec<Problem>) -> Option<ReceiptFormat> {
    let no_settings = |local: &mut Vec<Problem>| {
        if c.params.as_object().is_some_and(|m| !m.is_empty()) {
            local.push(Problem::new(at, format!("{:?} takes no settings", c.name)));
        }
    };
    let known = || codecs::names(|d| matches!(d, Does::ReceiptMessages(_) | Does::ReceiptFiles(_)));
    let Some(codec) = codecs::codec(&c.name) else {
        local.push(Problem::new(
            at,
            registry::unknown_name(&c.name, "receipt format", &known()),
        ));
        return None;
    };
    let encoding = match codec.does {
        Does::ReceiptMessages(encode) => {
            no_settings(local);
            ReceiptEncoding::PerMessage(encode)
        }
        Does::ReceiptFiles(settings) => ReceiptEncoding::File(settings(&c.params, at, local)?),
        Does::ImportFlows(_)
        | Does::StreamPositions(_)
        | Does::ReportDocuments(_)
        | Does::TreasuryFiles(_)
        | Does::NotificationFiles(_) => {
            local.push(Problem::new(
                at,
                registry::unknown_name(&c.name, "receipt format", &known()),
            ));
            return None;
        }
    };
    Some(ReceiptFormat {
        name: codec.name,
        encoding,
        holds_flagged: codec.holds_flagged,
        says_secondary: codec.says_secondary,
    })
}

fn push_route(
    pc: &config::PipelineConfig,
    at: &str,
    local: &mut Vec<Problem>,
) -> Option<ReceiptRoute> {
    match &pc.to {
        Endpoint::Connector { kind, params } => {
            let path = format!("{at}.to");
            let sink =
                registry::parse_message_sink(kind, params.clone(), &path, "push connector", local)?;
            let connector = registry::connector(kind)?.name;
            Some(ReceiptRoute::Push(PushTarget { connector, sink }))
        }
        Endpoint::Named(n) => {
            local.push(Problem::new(
                format!("{at}.to"),
                format!("{n:?}: receipts go to a connector, e.g. {{ connector = \"http\", url = \"...\" }}"),
            ));
            None
        }
    }
}

fn batch_route(
    pc: &config::PipelineConfig,
    batch: &config::BatchConfig,
    at: &str,
    local: &mut Vec<Problem>,
) -> Option<ReceiptRoute> {
    let schedule = match cron::Schedule::from_str(&batch.schedule) {
        Ok(s) => Some(s),
        Err(e) => {
            local.push(Problem::new(
                format!("{at}.batch.schedule"),
                format!(
                    "{:?} is not a cron expression with seconds, e.g. \"0 0 2 * * *\" ({})",
                    batch.schedule,
                    e.to_string().lines().last().unwrap_or_default().trim()
                ),
            ));
            None
        }
    };
    let sink = match &pc.to {
        Endpoint::Connector { kind, params } => {
            registry::parse_sink(kind, params.clone(), &format!("{at}.to"), local)
        }
        Endpoint::Named(n) => {
            local.push(Problem::new(
                format!("{at}.to"),
                format!("{n:?}: export files go to a connector, e.g. {{ connector = \"dir\", path = \"...\" }}"),
            ));
            None
        }
    };
    Some(ReceiptRoute::Batch {
        schedule: Box::new(schedule?),
        sink: sink?,
        skip_empty: batch.skip_empty,
    })
}

fn problems_extend(p: &mut impl FnMut(String, String), list: Vec<Problem>) {
    for x in list {
        p(x.path, x.message);
    }
}

fn spontaneous_rule(
    sp: &config::SpontaneousConfig,
) -> Result<snodo_core::spontaneous::SpontaneousRule, String> {
    use snodo_core::spontaneous::{AmountRule, FieldDef, SpontaneousRule};
    let a = &sp.amount;
    let amount = match (a.fixed_cents, a.min_cents, a.max_cents) {
        (Some(cents), None, None) => AmountRule::Fixed { cents },
        (None, Some(min), Some(max)) => AmountRule::Range { min, max },
        _ => {
            return Err("amount is { fixed_cents = N } or { min_cents = N, max_cents = M }".into())
        }
    };
    let fields = sp
        .fields
        .iter()
        .map(|f| {
            FieldDef::new(
                &f.name,
                f.label.clone(),
                &f.kind,
                f.required,
                f.pattern.clone(),
                f.values.clone(),
                f.max_length,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    SpontaneousRule::new(amount, &sp.causale, fields)
}

/// A debt type's `demand` keys as the running hub uses them; every problem names its key.
fn demand_offer(
    dt: &config::DebtTypeConfig,
    d: &config::DemandConfig,
    at: &str,
    p: &mut impl FnMut(String, String),
) -> Option<crate::demand::DemandOffer> {
    use crate::demand::{DemandAmount, DemandOffer, DemandSchema};
    use snodo_adapters::car_tax::VehicleType;
    let mut ok = true;
    let mut bad = |key: &str, why: String| {
        ok = false;
        p(format!("{at}.{key}"), why);
    };
    // stIdentificativoServizio and stIdentificativoSoggettoServizio: length 5.
    if d.service.chars().count() != 5 {
        bad(
            "service",
            format!("{:?} is not 5 characters (idServizio)", d.service),
        );
    }
    if let Some(provider) = d.provider.as_deref().filter(|v| v.chars().count() != 5) {
        bad(
            "provider",
            format!("{provider:?} is not 5 characters (idSoggettoServizio)"),
        );
    }
    let schema = match d.schema.as_str() {
        snodo_adapters::car_tax::SCHEMA => Some(DemandSchema::CarTax),
        other => {
            bad(
                "schema",
                format!(
                    "{other:?} is not a schema the hub reads; known: {}",
                    snodo_adapters::car_tax::SCHEMA
                ),
            );
            None
        }
    };
    let positive = |cents: i64| (1..=99_999_999_999).contains(&cents);
    let ways = [
        d.amount_cents.is_some(),
        !d.amount_cents_by_vehicle_type.is_empty(),
        d.url.is_some(),
    ];
    let amount = match (d.amount_cents, &d.url) {
        _ if ways.iter().filter(|w| **w).count() != 1 => {
            bad(
                "amount_cents",
                "give exactly one of amount_cents, amount_cents_by_vehicle_type, url".into(),
            );
            None
        }
        (Some(cents), _) => {
            if !positive(cents) {
                bad("amount_cents", format!("{cents} is not a positive amount"));
            }
            Some(DemandAmount::Fixed(cents))
        }
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bad("url", format!("{url:?} is not an http(s) URL"));
            }
            match d.timeout.get() {
                Err(why) => {
                    bad("timeout", why);
                    None
                }
                Ok(t) if t.is_zero() || t > MAX_EXTERNAL_TIMEOUT => {
                    bad(
                        "timeout",
                        format!(
                            "must be above 0 and at most {}s: the node waits for the answer",
                            MAX_EXTERNAL_TIMEOUT.as_secs()
                        ),
                    );
                    None
                }
                Ok(timeout) => Some(DemandAmount::External(ExternalSource {
                    debt_type: dt.code.clone(),
                    url: url.clone(),
                    timeout,
                    token: d
                        .token
                        .as_ref()
                        .map(|t| t.0.clone())
                        .filter(|t| !t.is_empty()),
                    // The demand call is JSON only (docs/API.md).
                    mode: ExternalAsk::Json,
                })),
            }
        }
        (None, None) => {
            let mut table = HashMap::new();
            for (name, &cents) in &d.amount_cents_by_vehicle_type {
                let kind = VehicleType::ALL.into_iter().find(|v| v.name() == name);
                match kind {
                    None => bad(
                        &format!("amount_cents_by_vehicle_type.{name}"),
                        "is not a vehicle type: car, trailer or motorcycle".into(),
                    ),
                    Some(_) if !positive(cents) => bad(
                        &format!("amount_cents_by_vehicle_type.{name}"),
                        format!("{cents} is not a positive amount"),
                    ),
                    Some(kind) => {
                        table.insert(kind, cents);
                    }
                }
            }
            Some(DemandAmount::ByVehicleType(table))
        }
    };
    let by_rule = !matches!(amount, Some(DemandAmount::External(_)) | None);
    let causale = match (&d.causale, by_rule) {
        (Some(c), _) => {
            if let Err(why) = crate::demand::check_causale(c) {
                bad("causale", why);
            }
            c.clone()
        }
        (None, true) => {
            bad(
                "causale",
                "required with amount_cents or amount_cents_by_vehicle_type".into(),
            );
            String::new()
        }
        (None, false) => String::new(),
    };
    // A rule knows no payer: the notice is issued to ANONIMO, which the debt type must allow.
    if by_rule && !dt.anonymous_payer_allowed {
        ok = false;
        p(
            format!("{at}.amount_cents"),
            "a notice priced by a rule has no payer (ANONIMO): set anonymous_payer_allowed = \
             true on the debt type, or ask the entity's system with url"
                .into(),
        );
    }
    match (ok, schema, amount) {
        (true, Some(schema), Some(amount)) => Some(DemandOffer {
            debt_type: dt.code.clone(),
            service: d.service.clone(),
            provider: d.provider.clone(),
            schema,
            amount,
            causale,
            due_in_days: d.due_in_days,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded demo plus `extra` pipelines, loaded from a file.
    /// The demo with c_g224's first debt type announcing `changes`.
    fn plan_with_iban_changes(changes: &str) -> Result<Plan, Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let demo = include_str!("../../config/demo.toml")
            .replace(
                "${SNODO_TAXONOMY_FILE:-adapters/specs/mypay/tassonomia.csv}",
                "/nonexistent/tassonomia.csv",
            )
            .replacen(
                "  iban = \"IT60X0542811101000000123456\"\n",
                &format!("  iban = \"IT60X0542811101000000123456\"\n  iban_changes = {changes}\n"),
                1,
            );
        std::fs::write(&path, demo).unwrap();
        load(Some(&path))
    }

    /// The demo with `edit` applied to its text.
    fn demo_edited(edit: impl Fn(String) -> String) -> Result<Plan, Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let demo = include_str!("../../config/demo.toml").replace(
            "${SNODO_TAXONOMY_FILE:-adapters/specs/mypay/tassonomia.csv}",
            "/nonexistent/tassonomia.csv",
        );
        std::fs::write(&path, edit(demo)).unwrap();
        load(Some(&path))
    }

    /// The demo with r_veneto's ZTL debt type followed by a car tax debt type whose extra
    /// keys are `keys` (after `code`, `iban`, `taxonomy`).
    fn plan_with_car_tax(keys: &str) -> Result<Plan, Vec<Problem>> {
        demo_edited(|demo| {
            demo.replacen(
                "timeout = \"2s\" }\n",
                &format!(
                    "timeout = \"2s\" }}\n\n  [[entities.debt_types]]\n  code = \"BOLLO\"\n  \
                     description = \"Bollo\"\n  iban = \"IT23Z0622512100100000300299\"\n  \
                     taxonomy = \"9/0301105TS/\"\n{keys}\n"
                ),
                1,
            )
        })
    }

    fn problems_of(r: Result<Plan, Vec<Problem>>) -> Vec<String> {
        match r {
            Ok(_) => panic!("the plan was accepted"),
            Err(ps) => ps
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect(),
        }
    }

    #[test]
    fn demand_offers_are_read_and_checked_key_by_key() {
        let plan = plan_with_car_tax(
            "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"Bollo {plate}\", amount_cents_by_vehicle_type = { car = 15000, motorcycle = 3000 } }",
        )
        .unwrap_or_else(|ps| panic!("{ps:?}"));
        let veneto = &plan.entities["r_veneto"];
        assert_eq!(veneto.demand.len(), 1);
        let offer = &veneto.demand[0];
        assert_eq!(
            (offer.debt_type.as_str(), offer.service.as_str()),
            ("BOLLO", "00001")
        );
        assert!(matches!(
            &offer.amount,
            crate::demand::DemandAmount::ByVehicleType(t) if t.len() == 2
        ));
        let at = "entities[2].debt_types[3].demand";
        let cases: &[(&str, &str)] = &[
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"001\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"x\", amount_cents = 100 }",
                "service: \"001\" is not 5 characters (idServizio)",
            ),
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", provider = \"7\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"x\", amount_cents = 100 }",
                "provider: \"7\" is not 5 characters (idSoggettoServizio)",
            ),
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", schema = \"Pesca_1_0_0\", causale = \"x\", amount_cents = 100 }",
                "schema: \"Pesca_1_0_0\" is not a schema the hub reads",
            ),
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"x\" }",
                "amount_cents: give exactly one of amount_cents, amount_cents_by_vehicle_type, url",
            ),
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"x\", amount_cents = 100, url = \"http://erp\" }",
                "amount_cents: give exactly one of",
            ),
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"x\", amount_cents = 0 }",
                "amount_cents: 0 is not a positive amount",
            ),
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"x\", amount_cents_by_vehicle_type = { bus = 100 } }",
                "amount_cents_by_vehicle_type.bus: is not a vehicle type: car, trailer or motorcycle",
            ),
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"Bollo {targa}\", amount_cents = 100 }",
                "causale: {targa} is not a placeholder",
            ),
            (
                "  anonymous_payer_allowed = true\n  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", amount_cents = 100 }",
                "causale: required with amount_cents or amount_cents_by_vehicle_type",
            ),
            (
                "  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", causale = \"x\", amount_cents = 100 }",
                "amount_cents: a notice priced by a rule has no payer (ANONIMO)",
            ),
            (
                "  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", url = \"ftp://erp\" }",
                "url: \"ftp://erp\" is not an http(s) URL",
            ),
            (
                "  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", url = \"http://erp\", timeout = \"9s\" }",
                "timeout: must be above 0 and at most 4s",
            ),
            (
                "  external = { url = \"http://erp\" }\n  demand = { service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", url = \"http://erp\" }",
                "demand: a debt type is either external or asked on demand, not both",
            ),
        ];
        for (keys, expected) in cases {
            let problems = problems_of(plan_with_car_tax(keys));
            let want = format!("{at}.{expected}");
            let want = want.replace("demand.demand:", "demand:");
            assert!(
                problems.iter().any(|p| p.starts_with(&want)),
                "{keys}: no {want:?} in {problems:?}"
            );
        }
        // The same service twice for one entity.
        let twice = demo_edited(|demo| {
            let bollo = |code: &str| {
                format!(
                    "\n  [[entities.debt_types]]\n  code = \"{code}\"\n  description = \"Bollo\"\n  \
                     iban = \"IT23Z0622512100100000300299\"\n  taxonomy = \"9/0301105TS/\"\n  \
                     demand = {{ service = \"00001\", schema = \"TassaAutomobilistica_1_1_0\", url = \"http://erp\" }}\n"
                )
            };
            demo.replacen(
                "timeout = \"2s\" }\n",
                &format!("timeout = \"2s\" }}\n{}{}", bollo("B1"), bollo("B2")),
                1,
            )
        });
        let problems = problems_of(twice);
        assert!(
            problems.iter().any(|p| p.starts_with(
                "entities[2].debt_types[4].demand.service: \"00001\" is also offered by debt type \"B1\""
            )),
            "{problems:?}"
        );
    }

    #[test]
    fn a_reload_diff_names_what_changed_and_what_needs_a_restart() {
        let old = demo_edited(|d| d).unwrap();
        let same = demo_edited(|d| d).unwrap();
        assert!(PlanDiff::between(&old, &same).is_empty());
        assert!(old.pipeline_unchanged("padova-dovuti-in", &same));

        // A debt type's account changes: the entity, the debt type and its pipelines change.
        let new = demo_edited(|d| {
            d.replace("IT95O0306911884000100012345", "IT60X0542811101000000123456")
                .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:9999\"")
        })
        .unwrap();
        let diff = PlanDiff::between(&old, &new);
        assert_eq!(diff.entities.changed, ["c_d530"]);
        assert_eq!(diff.debt_types.changed, ["c_d530/TARI"]);
        assert!(diff.pipelines.is_empty());
        assert!(!old.pipeline_unchanged("feltre-dovuti-in", &new));
        assert!(old.pipeline_unchanged("padova-dovuti-in", &new));
        assert_eq!(old.restart_needed(&new), ["http"]);
        assert!(old.pipeline_unchanged("padova-dovuti-in", &new));
        assert!(!old.pipeline_unchanged("nope", &new));

        // A suspended entity's intake does not run; its export does.
        let suspended = demo_edited(|d| {
            d.replacen(
                "name = \"Comune di Padova\"\n",
                "name = \"Comune di Padova\"\nstate = \"suspended\"\n",
                1,
            )
        })
        .unwrap();
        let runs = |name: &str| {
            let p = suspended.pipelines.iter().find(|p| p.name == name).unwrap();
            suspended.pipeline_runs(p)
        };
        assert!(!runs("padova-dovuti-in"));
        assert!(runs("padova-receipts-export"));
        assert!(runs("feltre-dovuti-in"));
    }

    #[test]
    fn notices_postal_accounts_and_their_mistakes() {
        let with = |edit: &'static str| {
            demo_edited(move |d| {
                d.replacen(
                    "outcomes = { connector = \"dir\", path = \"var/c_g224/out\" }\n",
                    edit,
                    1,
                )
                .replacen(
                    "  iban = \"IT60X0542811101000000123456\"\n",
                    "  iban = \"IT60X0542811101000000123456\"\n  postal_iban = \"IT24M0760112100000012345678\"\n  postal_account_holder = \"Comune di Padova - Tributi\"\n",
                    1,
                )
                .replacen(
                    "segregation_code = \"01\"\n",
                    "segregation_code = \"01\"\nposte_authorisation = \"AUT. 123 DEL 01/01/2020\"\n",
                    1,
                )
            })
        };
        let plan =
            with("outcomes = { connector = \"dir\", path = \"var/c_g224/out\" }\nnotices = true\n")
                .unwrap();
        let p = plan
            .pipelines
            .iter()
            .find(|p| p.name == "padova-dovuti-in")
            .unwrap();
        assert!(matches!(
            p.kind,
            PipelineKind::ImportFlows { notices: true, .. }
        ));
        let padova = &plan.entities["c_g224"];
        let postal = padova.payments["TARI"].postal.as_ref().unwrap();
        assert_eq!(postal.number(), "000012345678");
        assert_eq!(postal.holder, "Comune di Padova - Tributi");
        assert!(padova.payments["MENSA"].postal.is_none());
        assert_eq!(
            padova.poste_authorisation.as_deref(),
            Some("AUT. 123 DEL 01/01/2020")
        );

        // Notices go beside the outcome files: none without them.
        let problems = with("notices = true\n").err().unwrap();
        assert_eq!(problems[0].path, "pipelines[0].notices", "{problems:?}");
        // Only flows have notices.
        let problems = demo_edited(|d| {
            d.replacen(
                "batch = { schedule = \"0 0 2 * * *\" }\n",
                "batch = { schedule = \"0 0 2 * * *\" }\nnotices = true\n",
                1,
            )
        })
        .err()
        .unwrap();
        assert!(
            problems.iter().any(|p| p.path.ends_with(".notices")),
            "{problems:?}"
        );
        // A postal IBAN is Poste's (ABI 07601), and valid.
        let problems = demo_edited(|d| {
            d.replacen(
                "  iban = \"IT60X0542811101000000123456\"\n",
                "  iban = \"IT60X0542811101000000123456\"\n  postal_iban = \"IT60X0542811101000000123456\"\n",
                1,
            )
        })
        .err()
        .unwrap();
        assert_eq!(
            problems[0].path, "entities[0].debt_types[0].postal_iban",
            "{problems:?}"
        );
        assert!(problems[0].message.contains("07601"), "{problems:?}");
        let problems = demo_edited(|d| {
            d.replacen(
                "  iban = \"IT60X0542811101000000123456\"\n",
                "  iban = \"IT60X0542811101000000123456\"\n  postal_iban = \"IT25M0760112100000012345678\"\n",
                1,
            )
        })
        .err()
        .unwrap();
        assert_eq!(
            problems[0].path, "entities[0].debt_types[0].postal_iban",
            "{problems:?}"
        );
        // A logo is a PNG, read at load.
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("logo.png");
        std::fs::write(&bad, b"not a png").unwrap();
        for path in [bad, dir.path().join("missing.png")] {
            let line = format!("segregation_code = \"01\"\nlogo = \"{}\"\n", path.display());
            let problems =
                demo_edited(move |d| d.replacen("segregation_code = \"01\"\n", &line, 1))
                    .err()
                    .unwrap();
            assert_eq!(problems[0].path, "entities[0].logo", "{problems:?}");
        }
        let good = format!(
            "segregation_code = \"01\"\nlogo = \"{}/../tests/data/logo-example.png\"\n",
            env!("CARGO_MANIFEST_DIR")
        );
        let plan =
            demo_edited(move |d| d.replacen("segregation_code = \"01\"\n", &good, 1)).unwrap();
        let logo = plan.entities["c_g224"].logo.as_ref().unwrap();
        assert_eq!((logo.width(), logo.height()), (240, 80));
    }

    #[test]
    fn reports_pipelines_need_fdr_and_a_report_format() {
        let pipeline = |encode: &str, to: &str| {
            format!(
                "\n[[pipelines]]\nname = \"fdr\"\nentity = \"c_g224\"\nfrom = \"reports\"\nencode = \"{encode}\"\nto = {to}\n"
            )
        };
        let fdr = "\n[pagopa.fdr]\nmode = \"rest\"\nurl = \"http://127.0.0.1:1/fdr\"\nsubscription_key = \"k\"\n";
        let files = pipeline("fdr-xml", "{ connector = \"dir\", path = \"/tmp/fdr\" }");
        let with_fdr = |extra: String| {
            demo_edited(move |d| {
                d.replacen("[[entities]]", &format!("{fdr}\n[[entities]]"), 1) + &extra
            })
        };
        let plan = with_fdr(files.clone()).unwrap();
        assert_eq!(plan.report_pipelines("c_g224"), ["fdr"]);
        assert!(plan.report_pipelines("c_d530").is_empty());
        let problems = demo_edited(move |d| d + &files).err().unwrap();
        assert_eq!(problems[0].path, "pipelines[4].from", "{problems:?}");
        let problems = with_fdr(pipeline(
            "json",
            "{ connector = \"http\", url = \"http://x\" }",
        ))
        .err()
        .unwrap();
        assert_eq!(problems[0].path, "pipelines[4].encode");
        assert!(problems[0].message.contains("fdr-json"), "{}", problems[0]);
    }

    #[test]
    fn reconciliation_exports_name_version_classes_and_schedule() {
        let export = |encode: &str, batch: &str| {
            format!(
                "\n[[pipelines]]\nname = \"riconc\"\nentity = \"c_g224\"\nfrom = \"reconciliation\"\nencode = {encode}\n{batch}to = {{ connector = \"dir\", path = \"/tmp/riconc\" }}\n"
            )
        };
        let batch = "batch = { schedule = \"0 0 6 * * *\" }\n";
        let good = export(
            "{ codec = \"mypivot-export\", version = \"1.4\", classes = [\"IUF_NO_TES\"] }",
            batch,
        );
        let plan = demo_edited(move |d| d + &good).unwrap();
        let p = plan.pipelines.iter().find(|p| p.name == "riconc").unwrap();
        assert!(
            matches!(&p.kind, PipelineKind::Reconciliation { classes, .. } if classes == &["IUF_NO_TES"])
        );
        let refused = |encode: &str, batch: &str| {
            let text = export(encode, batch);
            demo_edited(move |d| d + &text).err().unwrap()
        };
        let p = refused("{ codec = \"mypivot-export\", version = \"2.0\" }", batch);
        assert_eq!(p[0].path, "pipelines[4].encode.version", "{p:?}");
        assert!(p[0].message.contains("1.4"), "{}", p[0]);
        let p = refused(
            "{ codec = \"mypivot-export\", version = \"1.4\", classes = [\"NOPE\"] }",
            batch,
        );
        assert_eq!(p[0].path, "pipelines[4].encode.classes", "{p:?}");
        assert!(p[0].message.contains("IUF_NO_TES"), "{}", p[0]);
        // DOPPI is not in MyPivot's 1.1.
        let p = refused(
            "{ codec = \"mypivot-export\", version = \"1.1\", classes = [\"DOPPI\"] }",
            batch,
        );
        assert!(p[0].message.contains("DOPPI"), "{}", p[0]);
        let p = refused("{ codec = \"mypivot-export\", version = \"1.4\" }", "");
        assert_eq!(p[0].path, "pipelines[4].batch", "{p:?}");
        let p = refused("\"mypay-export\"", batch);
        assert_eq!(p[0].path, "pipelines[4].encode", "{p:?}");
    }

    #[test]
    fn notification_intakes_go_to_reconciliation() {
        let intake = |to: &str| {
            format!(
                "\n[[pipelines]]\nname = \"pagati\"\nentity = \"c_g224\"\nfrom = {{ connector = \"dir\", path = \"/tmp/pagati\" }}\ndecode = \"mypivot-import-pagati\"\nto = \"{to}\"\n"
            )
        };
        assert!(demo_edited(|d| d + &intake("reconciliation")).is_ok());
        let problems = demo_edited(|d| d + &intake("treasury")).err().unwrap();
        assert_eq!(problems[0].path, "pipelines[4].to");
        assert!(
            problems[0].message.contains("\"reconciliation\""),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn treasury_intakes_go_to_the_treasury_without_outcomes() {
        let intake = |to: &str, extra: &str| {
            format!(
                "\n[[pipelines]]\nname = \"tes\"\nentity = \"c_g224\"\nfrom = {{ connector = \"dir\", path = \"/tmp/tes\" }}\ndecode = \"opi\"\nto = \"{to}\"\n{extra}"
            )
        };
        let plan = demo_edited(|d| d + &intake("treasury", "")).unwrap();
        let p = plan.pipelines.iter().find(|p| p.name == "tes").unwrap();
        assert!(matches!(
            p.kind,
            PipelineKind::TreasuryFiles { encoding: None, .. }
        ));
        let problems = demo_edited(|d| d + &intake("registry", "")).err().unwrap();
        assert_eq!(problems[0].path, "pipelines[4].to");
        assert!(
            problems[0].message.contains("\"treasury\""),
            "{}",
            problems[0]
        );
        let problems = demo_edited(|d| {
            d + &intake(
                "treasury",
                "outcomes = { connector = \"dir\", path = \"/tmp/o\" }\n",
            )
        })
        .err()
        .unwrap();
        assert_eq!(problems[0].path, "pipelines[4].outcomes");
        // The flows' decoder still goes to the registry only.
        let problems = demo_edited(|d| d.replacen("to = \"registry\"", "to = \"treasury\"", 1))
            .err()
            .unwrap();
        assert_eq!(problems[0].path, "pipelines[0].to");
    }

    #[test]
    fn a_pre_production_entity_names_test_stations_other_than_the_live_ones() {
        let problems = demo_edited(|d| {
            d.replacen(
                "name = \"Comune di Feltre\"\n",
                "name = \"Comune di Feltre\"\nstate = \"pre-production\"\n",
                1,
            )
        })
        .err()
        .unwrap();
        assert_eq!(problems[0].path, "entities[1].test_stations");
        let problems = demo_edited(|d| {
            d.replacen(
                "name = \"Comune di Feltre\"\n",
                "name = \"Comune di Feltre\"\nstate = \"pre-production\"\ntest_stations = [\"80007580279_01\"]\n",
                1,
            )
        })
        .err()
        .unwrap();
        assert_eq!(problems[0].path, "entities[1].test_stations[0]");
        assert!(
            problems[0].message.contains("live station"),
            "{}",
            problems[0]
        );
        let problems = demo_edited(|d| {
            d.replacen(
                "name = \"Comune di Feltre\"\n",
                "name = \"Comune di Feltre\"\nstate = \"testing\"\n",
                1,
            )
        })
        .err()
        .unwrap();
        assert!(
            problems[0].path.starts_with("entities[1].state"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn an_account_announced_ahead_of_time_applies_from_its_day() {
        let plan = plan_with_iban_changes(
            r#"[{ from = "2027-01-01", iban = "IT90J0200812100000041234567" }]"#,
        )
        .expect("valid");
        let entity = plan.entities.get("c_g224").expect("c_g224");
        let (_, dt) = entity
            .payments
            .iter()
            .find(|(_, d)| !d.iban_changes.is_empty())
            .expect("the debt type with the change");
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            dt.iban_on(day("2026-12-31")).as_str(),
            "IT60X0542811101000000123456"
        );
        assert_eq!(
            dt.iban_on(day("2027-01-01")).as_str(),
            "IT90J0200812100000041234567"
        );
        assert_eq!(
            dt.iban_on(day("2030-06-01")).as_str(),
            "IT90J0200812100000041234567"
        );

        let problems = plan_with_iban_changes(
            r#"[{ from = "2027-02-01", iban = "IT90J0200812100000041234567" }, { from = "2027-01-01", iban = "IT60X0542811101000000123456" }, { from = "1 March", iban = "IT90J0200812100000041234567" }, { from = "2028-01-01", iban = "IT00X0542811101000000123456" }]"#,
        )
        .err()
        .expect("problems");
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let has = |path: &str, words: &str| {
            assert!(
                text.iter().any(|t| t.contains(path) && t.contains(words)),
                "no {path} … {words} in {text:#?}"
            )
        };
        has("iban_changes[1].from", "date order");
        has("iban_changes[2].from", "is not a date");
        has("iban_changes[3].iban", "IT00X");
    }

    fn plan_with(extra: &str) -> Result<Plan, Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let demo = include_str!("../../config/demo.toml").replace(
            "${SNODO_TAXONOMY_FILE:-adapters/specs/mypay/tassonomia.csv}",
            "/nonexistent/tassonomia.csv",
        );
        std::fs::write(&path, format!("{demo}\n{extra}")).unwrap();
        load(Some(&path))
    }

    const PUSHES: &str = r#"
[[pipelines]]
name = "padova-erp"
entity = "c_g224"
from = "receipts"
encode = "json"
to = { connector = "http", url = "http://127.0.0.1:9/r" }

[[pipelines]]
name = "padova-mensa"
entity = "c_g224"
from = "receipts"
debt_types = ["MENSA"]
encode = "mypay-push"
to = { connector = "http", url = "http://127.0.0.1:9/m" }

[[pipelines]]
name = "feltre-export-1-0"
entity = "c_d530"
from = "receipts"
encode = { codec = "mypay-export", version = "1.0" }
batch = { schedule = "0 0 2 * * *" }
to = { connector = "dir", path = "var/x" }

[[pipelines]]
name = "feltre-export-1-3"
entity = "c_d530"
from = "receipts"
encode = { codec = "mypay-export", version = "1_3" }
batch = { schedule = "0 0 3 * * *" }
to = { connector = "dir", path = "var/y" }
"#;

    #[test]
    fn fdr_is_planned_with_its_defaults_and_its_mistakes_named() {
        let ok = plan_with(
            "[pagopa.fdr]\nmode = \"rest\"\nurl = \"https://api.example/fdr-org/service/v1/\"\nsubscription_key = \"k\"\n",
        )
        .unwrap_or_else(|p| panic!("{p:?}"));
        let f = ok.fdr.as_ref().expect("planned");
        assert_eq!(f.url, "https://api.example/fdr-org/service/v1");
        assert_eq!(f.station, "80007580279_01");
        assert_eq!((f.page_size, f.attempts), (1000, 4));
        assert_eq!(f.timeout, std::time::Duration::from_secs(60));
        // Every quarter of an hour by default.
        let ticks: Vec<_> = f
            .schedule
            .upcoming(chrono_tz::Europe::Rome)
            .take(2)
            .collect();
        assert_eq!((ticks[1] - ticks[0]).num_minutes(), 15);
        assert!(plan_with("")
            .unwrap_or_else(|p| panic!("{p:?}"))
            .fdr
            .is_none());

        let problems = |toml: &str| -> Vec<String> {
            plan_with(toml)
                .err()
                .expect("problems")
                .iter()
                .map(|p| p.to_string())
                .collect()
        };
        let rest = problems(
            "[pagopa.fdr]\nmode = \"rest\"\nurl = \"ftp://x\"\nschedule = \"hourly\"\ntimeout = \"0s\"\npage_size = 5000\n",
        );
        for want in [
            "pagopa.fdr.url: \"ftp://x\" is not an http(s) URL",
            "pagopa.fdr.subscription_key: missing",
            "pagopa.fdr.schedule: \"hourly\" is not a cron expression",
            "pagopa.fdr.timeout: must be more than 0",
            "pagopa.fdr.page_size: 5000 is not 1 to 1000",
        ] {
            assert!(
                rest.iter().any(|p| p.starts_with(want)),
                "{want} not in {rest:?}"
            );
        }
        let soap = problems(
            "[pagopa.fdr]\nmode = \"soap\"\nurl = \"http://node/x\"\nstation = \"99999999999_01\"\n",
        );
        assert!(
            soap.iter()
                .any(|p| p.starts_with("pagopa.fdr.password: missing")),
            "{soap:?}"
        );
        assert!(
            soap.iter().any(|p| p.starts_with("pagopa.fdr.station:")),
            "{soap:?}"
        );
        let mode = problems("[pagopa.fdr]\nmode = \"ftp\"\nurl = \"http://x\"\n");
        assert!(
            mode.iter().any(|p| p.contains("pagopa.fdr.mode")),
            "{mode:?}"
        );
    }

    #[test]
    fn receipts_go_to_the_entity_pipelines_and_to_secondary_1_3_exports() {
        let plan = plan_with(PUSHES).unwrap_or_else(|p| panic!("{p:?}"));
        let to = plan.deliver_to("c_g224", &["00644060287", "00133880252", "99999999999"]);
        let names: Vec<(&str, &str, bool)> = to
            .iter()
            .map(|d| (d.pipeline.as_str(), d.entity.as_str(), d.secondary))
            .collect();
        assert_eq!(
            names,
            [
                ("padova-receipts-export", "c_g224", false),
                ("padova-erp", "c_g224", false),
                ("padova-mensa", "c_g224", false),
                ("feltre-export-1-3", "c_d530", true),
            ],
            "Feltre's 1.0 export has no secondary rows; unknown fiscal codes are ignored"
        );
        assert_eq!(to[2].debt_types, ["MENSA"]);
        // MyPay's formats cannot say a receipt is flagged: they hold such receipts; json can.
        let holds: Vec<bool> = to.iter().map(|d| d.holds_flagged).collect();
        assert_eq!(holds, [true, false, true, true]);
        assert!(plan
            .deliver_to("c_d530", &["00133880252"])
            .iter()
            .all(|d| !d.secondary));
        // Feltre's own copy as a secondary beneficiary: of a foreign issuer, to the pipelines
        // that can say so; of Padova's, to none (Padova's copy reaches them, above).
        let foreign = plan.secondary_deliver_to("c_d530", "00339370272");
        assert_eq!(
            foreign
                .iter()
                .map(|d| (d.pipeline.as_str(), d.secondary))
                .collect::<Vec<_>>(),
            [("feltre-export-1-3", true)]
        );
        assert!(plan
            .secondary_deliver_to("c_d530", "00644060287")
            .is_empty());
        // json says the role: a Feltre json pipeline would get Padova's receipt as secondary.
        let with_json = format!(
            "{PUSHES}\n[[pipelines]]\nname = \"feltre-erp\"\nentity = \"c_d530\"\nfrom = \"receipts\"\nencode = \"json\"\nto = {{ connector = \"http\", url = \"http://127.0.0.1:9/erp\" }}\n"
        );
        let plan = plan_with(&with_json).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(plan
            .deliver_to("c_g224", &["00133880252"])
            .iter()
            .any(|d| d.pipeline == "feltre-erp" && d.secondary));
    }

    #[test]
    fn kafka_pipelines_are_planned_and_their_mistakes_named() {
        let good = r#"
[[pipelines]]
name = "k-in"
entity = "c_g224"
from = { connector = "kafka", brokers = "127.0.0.1:9092", topic = "c_g224.positions", group = "snodo" }
decode = "position-json"
to = "registry"
outcomes = { connector = "kafka", brokers = "127.0.0.1:9092", topic = "c_g224.outcomes" }

[[pipelines]]
name = "k-out"
entity = "c_g224"
from = "receipts"
encode = "json"
to = { connector = "kafka", brokers = "127.0.0.1:9092", topic = "c_g224.receipts" }
"#;
        let plan = plan_with(good).unwrap_or_else(|p| panic!("{p:?}"));
        let kinds: Vec<bool> = plan
            .pipelines
            .iter()
            .filter(|p| p.name.starts_with("k-"))
            .map(|p| {
                matches!(
                    &p.kind,
                    PipelineKind::StreamPositions {
                        outcomes: Some(_),
                        ..
                    } | PipelineKind::Receipts {
                        route: ReceiptRoute::Push(PushTarget {
                            connector: "kafka",
                            ..
                        }),
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(kinds, [true, true]);

        let bad = r#"
[[pipelines]]
name = "k-bad"
entity = "c_g224"
from = { connector = "kafka", brokers = "127.0.0.1:9092", topic = "t", group = "g" }
decode = "mypay-import"
to = "registry"
outcomes = { connector = "dir", path = "var/out" }
"#;
        let problems: Vec<String> = plan_with(bad)
            .err()
            .expect("problems")
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert!(
            problems
                .iter()
                .any(|p| p.contains(".decode") && p.contains("position-json")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains(".outcomes") && p.contains("topic")),
            "{problems:?}"
        );
    }

    #[test]
    fn receipts_pipelines_say_what_is_wrong() {
        let bad = r#"
[[pipelines]]
name = "p1"
entity = "c_g224"
from = "receipts"
debt_types = ["TARY"]
encode = "mypay-export"
to = { connector = "dir", path = "var/x" }

[[pipelines]]
name = "p2"
entity = "c_g224"
from = "receipts"
encode = "json"
batch = { schedule = "0 0 2 * * *" }
to = { connector = "http", url = "http://127.0.0.1:9/r" }

[[pipelines]]
name = "p3"
entity = "c_g224"
from = "receipts"
encode = { codec = "mypay-export", version = "2.0" }
batch = { schedule = "every night" }
to = { connector = "dir", path = "var/x" }
"#;
        let problems = plan_with(bad).err().expect("problems");
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let has = |path: &str, words: &str| {
            assert!(
                text.iter()
                    .any(|t| t.starts_with(path) && t.contains(words)),
                "no {path} … {words} in {text:#?}"
            )
        };
        let n = plan_with("").map(|p| p.pipelines.len()).unwrap_or(0);
        let at = |i: usize| format!("pipelines[{}]", n + i);
        has(&format!("{}.debt_types[0]", at(0)), "did you mean \"TARI\"");
        has(&format!("{}.batch", at(0)), "writes files");
        has(&format!("{}.batch", at(1)), "pushes each receipt");
        has(&format!("{}.encode.version", at(2)), "1.0, 1.1, 1.2, 1.3");
        has(&format!("{}.batch.schedule", at(2)), "cron");
    }
}
