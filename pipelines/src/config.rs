//! The hub's configuration: the TOML file, `SNODO__SECTION__KEY` environment overrides and
//! `${VAR}` / `${VAR:-default}` substitution, read into typed structs.
//!
//! Loading never stops at the first mistake: unknown keys are collected (with a suggestion) and
//! removed, so one run of `snodo validate` shows an operator everything to fix.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use snodo_connectors::HumanDuration;
use std::fmt;
use std::path::{Path, PathBuf};

/// The demo configuration, compiled in so `snodo run` works with no file at all.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");
pub const DEMO_PATH: &str = "config/demo.toml";

/// One thing wrong with the configuration, at a path like `entities[1].debt_types[0].iban`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub hub: HubConfig,
    #[serde(default)]
    pub http: HttpConfig,
    pub pagopa: PagopaConfig,
    #[serde(default)]
    pub entities: Vec<EntityConfig>,
    #[serde(default)]
    pub pipelines: Vec<PipelineConfig>,
    /// The hub's own Kafka: when set, the ops event stream is published to `hub.events_topic`.
    pub kafka: Option<KafkaHubConfig>,
    /// The entity REST API under `/api/v1`.
    #[serde(default)]
    pub api: ApiConfig,
    /// Reconciliation's grace periods (docs/RECONCILIATION.md).
    #[serde(default)]
    pub reconciliation: ReconciliationConfig,
}

/// `[reconciliation]`: how long a payment waits before a missing report or credit is an anomaly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationConfig {
    /// From the receipt to `RT_NO_IUF` (settlement flows are published by D+2).
    #[serde(default = "default_report_grace")]
    pub report_grace: HumanDuration,
    /// From the flow's date to `IUF_NO_TES` (the SCT reaches the treasury a few banking days on).
    #[serde(default = "default_credit_grace")]
    pub credit_grace: HumanDuration,
}

impl Default for ReconciliationConfig {
    fn default() -> Self {
        Self {
            report_grace: default_report_grace(),
            credit_grace: default_credit_grace(),
        }
    }
}

fn default_report_grace() -> HumanDuration {
    "72h".into()
}
fn default_credit_grace() -> HumanDuration {
    "120h".into()
}

/// `[api]`: limits of the entity REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Most positions in one `POST .../positions` array.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Largest request body accepted.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Requests per second each key may make on average...
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// ...and in a burst.
    #[serde(default = "default_burst")]
    pub rate_burst: u32,
    /// How long an `Idempotency-Key` answer is kept.
    #[serde(default = "default_idempotency_ttl")]
    pub idempotency_ttl: HumanDuration,
    /// Where MyPay's SOAP services for entity systems are served (docs/MYPAY.md); the WSDL at
    /// `<path>?wsdl`.
    #[serde(default = "default_mypay_ws_path")]
    pub mypay_ws_path: String,
    /// The entity whose MyPay password may ask a payer's positions across every entity
    /// (`paaSILChiediPosizioniAperte`, `…StoricoPagamenti`), as MyPay's `pa.codIpaEntePredefinito`
    /// (usually the Region). Unset: each entity asks only for its own.
    #[serde(default)]
    pub mypay_admin_entity: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_batch: default_max_batch(),
            max_body_bytes: default_max_body_bytes(),
            rate_per_second: default_rate(),
            rate_burst: default_burst(),
            idempotency_ttl: default_idempotency_ttl(),
            mypay_ws_path: default_mypay_ws_path(),
            mypay_admin_entity: None,
        }
    }
}

fn default_mypay_ws_path() -> String {
    "/ws/pa/PagamentiTelematiciDovutiPagati".into()
}

fn default_max_batch() -> usize {
    1000
}
fn default_max_body_bytes() -> usize {
    4 << 20
}
fn default_rate() -> u32 {
    100
}
fn default_burst() -> u32 {
    200
}
fn default_idempotency_ttl() -> HumanDuration {
    "24h".into()
}

/// `[kafka]`: the broker the hub publishes its event stream to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaHubConfig {
    pub brokers: String,
    /// Passed to librdkafka as is: `security.protocol`, `sasl.*`, `ssl.*`...
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
    /// Partitions of the event topic when the hub creates it.
    #[serde(default = "one")]
    pub events_partitions: i32,
}

fn one() -> i32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Embedded store, staged flows and relative `dir` paths live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `sqlite` (embedded, the default) or a `postgres://` URL (several hubs may share it).
    #[serde(default = "default_store")]
    pub store: String,
    /// This hub's name among several sharing a store (leases, claims); default host name + pid.
    pub instance: Option<String>,
    /// Topic of the ops event stream (with `[kafka]`).
    #[serde(default = "default_events_topic")]
    pub events_topic: String,
    /// Events kept in the store for `snodo tail` (older ones are pruned).
    #[serde(default = "default_events_kept")]
    pub events_kept: u64,
    /// MyPay's tassonomia.csv: when set, taxonomy codes must be in it.
    pub taxonomy_file: Option<PathBuf>,
    /// Largest uncompressed flow accepted (zip-bomb guard).
    #[serde(default = "default_max_flow_bytes")]
    pub max_flow_bytes: u64,
    /// Most entries a flow's zip may hold, checked before its directory is read.
    #[serde(default = "default_max_flow_entries")]
    pub max_flow_entries: u64,
    /// Rows applied per transaction during an import (also the crash-recovery granularity).
    #[serde(default = "default_chunk_rows")]
    pub import_chunk_rows: usize,
    /// Threads printing a flow's payment notices (default: one per core, at most 8).
    #[serde(default)]
    pub notice_threads: Option<usize>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            store: default_store(),
            instance: None,
            events_topic: default_events_topic(),
            events_kept: default_events_kept(),
            taxonomy_file: None,
            max_flow_bytes: default_max_flow_bytes(),
            max_flow_entries: default_max_flow_entries(),
            import_chunk_rows: default_chunk_rows(),
            notice_threads: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("var")
}
fn default_store() -> String {
    "sqlite".into()
}
fn default_events_topic() -> String {
    "snodo.events".into()
}
fn default_events_kept() -> u64 {
    100_000
}
fn default_max_flow_bytes() -> u64 {
    1 << 30
}
fn default_max_flow_entries() -> u64 {
    snodo_adapters::mypay_import::DEFAULT_MAX_ENTRIES
}
fn default_chunk_rows() -> usize {
    20_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL the national node and entity systems use to reach this hub.
    pub public_url: Option<String>,
    /// Bearer token for `/admin/` (dead letters, replay); unset or empty: `/admin/` is off.
    pub admin_token: Option<Secret>,
    // Listener bounds, TLS and `/metrics` placement (docs/SECURITY.md).
    /// A request's head must arrive whole within this (slow-header clients are cut off).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// A request must be answered within this (else 503).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// A kept-alive connection with no request for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Connections served at once; more are answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest SOAP request body (`/pagopa/paForNode`).
    #[serde(default = "default_soap_max_body")]
    pub soap_max_body_bytes: usize,
    /// Largest `/admin/` request body.
    #[serde(default = "default_admin_max_body")]
    pub admin_max_body_bytes: usize,
    /// Failed authentications (API keys, admin or metrics token) a peer address may make a minute.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: u32,
    /// Serve `/metrics` on this address only (not on `listen`).
    pub metrics_listen: Option<String>,
    /// Bearer token `/metrics` asks for (unset or empty: none).
    pub metrics_token: Option<Secret>,
    /// `[http.tls]`: serve https.
    pub tls: Option<TlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            admin_token: None,
            header_timeout: default_header_timeout(),
            request_timeout: default_request_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            soap_max_body_bytes: default_soap_max_body(),
            admin_max_body_bytes: default_admin_max_body(),
            auth_failures_per_minute: default_auth_failures(),
            metrics_listen: None,
            metrics_token: None,
            tls: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagopaConfig {
    pub broker_fiscal_code: String,
    pub stations: Vec<String>,
    /// pagoPA Checkout, for carts started at an entity's site (Gateway mode).
    pub checkout: Option<CheckoutConfig>,
    /// Who may call `/pagopa/paForNode`: `"mtls"`, `"proxy"`, `"allowlist"`, `"none"` or a table.
    #[serde(default, deserialize_with = "NodeAuthConfig::deserialize_opt")]
    pub node_auth: Option<NodeAuthConfig>,
    /// `[pagopa.fdr]`: pull pagoPA's settlement flows (FdR) for every entity.
    pub fdr: Option<FdrConfig>,
    /// How long after the node's activation (`paGetPayment`) a position counts as being paid:
    /// meanwhile no intake may modify or annul it. A new activation starts it again.
    #[serde(default = "default_payment_in_progress")]
    pub payment_in_progress: HumanDuration,
}

fn default_payment_in_progress() -> HumanDuration {
    "30m".into()
}

/// How the hub asks pagoPA for settlement flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FdrMode {
    /// FdR 3's organization REST API (`GET /organizations/{fiscalCode}/fdrs`).
    Rest,
    /// The node's legacy `nodoChiediElencoFlussiRendicontazione` / `nodoChiediFlussoRendicontazione`.
    Soap,
}

/// `[pagopa.fdr]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdrConfig {
    pub mode: FdrMode,
    /// REST: the organization API's base URL; SOAP: the nodeForPa endpoint.
    pub url: String,
    /// REST: sent as `Ocp-Apim-Subscription-Key`.
    pub subscription_key: Option<Secret>,
    /// SOAP: the station's password for the node.
    pub password: Option<Secret>,
    /// SOAP: the station the calls name (default: the first of `pagopa.stations`).
    pub station: Option<String>,
    /// When to pull: cron with seconds, Europe/Rome.
    #[serde(default = "default_fdr_schedule")]
    pub schedule: String,
    /// Connecting to pagoPA must succeed within this.
    #[serde(default = "default_fdr_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Each call must be answered (whole body) within this.
    #[serde(default = "default_fdr_timeout")]
    pub timeout: HumanDuration,
    /// REST: rows asked per page (FdR 3 allows up to 1000).
    #[serde(default = "default_fdr_page_size")]
    pub page_size: u32,
    /// Attempts at a call failing transiently (connection, timeout, 5xx, 429) before the
    /// entity's pull stops until the next tick.
    #[serde(default = "default_fdr_attempts")]
    pub attempts: u32,
}

fn default_fdr_schedule() -> String {
    "0 */15 * * * *".into()
}
fn default_fdr_connect_timeout() -> HumanDuration {
    "10s".into()
}
fn default_fdr_timeout() -> HumanDuration {
    "60s".into()
}
fn default_fdr_page_size() -> u32 {
    1000
}
fn default_fdr_attempts() -> u32 {
    4
}

/// `[pagopa.checkout]`: the Checkout EC API (`checkout_v2.json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutConfig {
    /// Base URL, e.g. `https://api.platform.pagopa.it/checkout/ec/v2`; the hub posts to `{url}/carts`.
    pub url: String,
    /// Sent as `Ocp-Apim-Subscription-Key`.
    pub subscription_key: Secret,
    #[serde(default = "default_checkout_timeout")]
    pub timeout: HumanDuration,
}

fn default_checkout_timeout() -> HumanDuration {
    "10s".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    pub ipa_code: String,
    pub fiscal_code: String,
    pub name: String,
    pub segregation_code: String,
    pub office_name: Option<String>,
    /// Interbank (SIA) code printed on payment notices for CBILL home banking.
    pub cbill: Option<String>,
    /// The entity's logo on its payment notices: a PNG file (at most 1 MiB, 4096 px a side).
    pub logo: Option<PathBuf>,
    /// Poste's authorisation to print the postal slip on notices (`AUT. ...`): with it, the
    /// notices of debt types with a postal account carry the Poste section.
    pub poste_authorisation: Option<String>,
    /// Keys of the entity's systems for `/api/v1` (empty values are ignored, so an unset
    /// `${VAR:-}` turns a key off).
    #[serde(default)]
    pub api_keys: Vec<Secret>,
    /// The password its systems give MyPay's SOAP services (`paaSIL*`, 8 to 15 characters as
    /// the WSDL says); kept only as a hash. Unset (or `${VAR:-}` empty): those services refuse it.
    #[serde(default)]
    pub mypay_password: Option<Secret>,
    #[serde(default)]
    pub debt_types: Vec<DebtTypeConfig>,
    /// Where the entity is in its adhesion: `pre-production` (answered only on its
    /// `test_stations`), `live` (the broker's `pagopa.stations`), or `suspended`.
    #[serde(default)]
    pub state: EntityState,
    /// The stations pagoPA gave the entity for pre-production (its UAT), if any.
    #[serde(default)]
    pub test_stations: Vec<String>,
}

/// An entity's adhesion state (docs/ADHESION.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntityState {
    /// Rehearsing with pagoPA's pre-production: only its test stations are answered.
    PreProduction,
    #[default]
    Live,
    /// Not enabled: the node's calls are refused, its intakes pause.
    Suspended,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebtTypeConfig {
    pub code: String,
    pub description: String,
    pub iban: String,
    /// Accounts announced ahead of time: each replaces `iban` from its date (Europe/Rome) on.
    #[serde(default)]
    pub iban_changes: Vec<IbanChange>,
    /// The postal current account (a Poste Italiane IBAN, ABI 07601) citizens may pay into
    /// at Poste offices and with the postal slip of the notice.
    pub postal_iban: Option<String>,
    /// The postal account's holder as printed on the slip (default: the entity's name).
    pub postal_account_holder: Option<String>,
    pub taxonomy: String,
    #[serde(default)]
    pub due_date_required: bool,
    #[serde(default = "yes")]
    pub active: bool,
    /// Payer `ANONIMO` accepted (MyPay's flg_cf_anonimo).
    #[serde(default)]
    pub anonymous_payer_allowed: bool,
    /// Generate an IUV for rows that leave it empty, even without `flgGeneraIuv`.
    #[serde(default)]
    pub generate_iuv: bool,
    /// The node may take a payment after the due date (else `PAA_PAGAMENTO_SCADUTO`).
    #[serde(default = "yes")]
    pub late_payment_allowed: bool,
    /// Positions expire this many days after their due date (Europe/Rome): the node answers
    /// `PAA_PAGAMENTO_SCADUTO`, they become `expired` and go to `from = "expired"` exports.
    /// Absent: they never expire.
    pub expire_after_days: Option<u32>,
    /// The debt type is a digital revenue stamp (`tipoBollo`, `"01"`): the node is answered a
    /// `richiestaMarcaDaBollo` for the position's document (`hashDocumento`) and the payer's
    /// province instead of an account.
    pub stamp_duty: Option<String>,
    /// Citizens may pay it spontaneously through `/api/v1/.../spontaneous` (Base mode).
    pub spontaneous: Option<SpontaneousConfig>,
    /// Its positions live in the entity's own system, asked when the node verifies a notice.
    pub external: Option<ExternalConfig>,
    /// pagoPA's service catalogue may ask a notice of it with `paDemandPaymentNotice`.
    pub demand: Option<DemandConfig>,
}

/// `iban_changes = [{ from = "2027-01-01", iban = "IT..." }]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IbanChange {
    /// The first day (Europe/Rome, `YYYY-MM-DD`) the node is given this account.
    pub from: String,
    pub iban: String,
}

/// `spontaneous = { amount = {...}, causale = "...", fields = [...] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpontaneousConfig {
    pub amount: AmountRuleConfig,
    /// With `{field}` placeholders for declared fields.
    pub causale: String,
    #[serde(default)]
    pub fields: Vec<FieldConfig>,
}

/// `{ fixed_cents = 5000 }` or `{ min_cents = 100, max_cents = 50000 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountRuleConfig {
    pub fixed_cents: Option<i64>,
    pub min_cents: Option<i64>,
    pub max_cents: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    pub name: String,
    pub label: Option<String>,
    /// `string` (default), `integer`, `date` or `enum`.
    #[serde(default = "default_field_type", rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    pub pattern: Option<String>,
    /// The choices of an `enum` field.
    #[serde(default)]
    pub values: Vec<String>,
    pub max_length: Option<usize>,
}

fn default_field_type() -> String {
    "string".into()
}

/// `external = { url = "...", timeout = "3s", token = "${...}", mode = "json" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// `json`: the hub asks `GET {url}/{noticeNumber}`; `mypay-soap`: it POSTs MyPay's
    /// `paaSILVerificaEsterna` to `url`.
    pub url: String,
    #[serde(default)]
    pub mode: ExternalMode,
    #[serde(default = "default_external_timeout")]
    pub timeout: HumanDuration,
    /// Sent as a bearer token when set.
    pub token: Option<Secret>,
}

/// How the entity's system is asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExternalMode {
    /// The hub's JSON contract (docs/API.md).
    #[default]
    Json,
    /// An entity system built for MyPay's `esterni-per-pa.wsdl` (docs/MYPAY.md).
    MypaySoap,
    /// An entity system built for MyPay4's new-model verification
    /// (`paExternalVerifyPaymentNotice` of `esterni-per-pa.wsdl`, docs/MYPAY.md).
    MypayExternalVerify,
}

/// `demand = { service = "00001", schema = "TassaAutomobilistica_1_1_0", causale = "...", ... }`
/// with one way of finding the amount: `amount_cents`, `amount_cents_by_vehicle_type` or `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandConfig {
    /// `idServizio` in pagoPA's service catalogue (5 characters).
    pub service: String,
    /// `idSoggettoServizio` pagoPA gave the entity for the service (5 characters); unset: any.
    pub provider: Option<String>,
    /// The schema of `datiSpecificiServizioRequest`; `TassaAutomobilistica_1_1_0` today.
    pub schema: String,
    /// With `{plate}` and `{vehicle_type}` placeholders; used by the config rules.
    pub causale: Option<String>,
    /// The same amount for every request.
    pub amount_cents: Option<i64>,
    /// An amount per vehicle type (`car`, `trailer`, `motorcycle`); a type left out is refused.
    #[serde(default)]
    pub amount_cents_by_vehicle_type: std::collections::BTreeMap<String, i64>,
    /// The entity's system computes it: the hub POSTs the request as JSON here.
    pub url: Option<String>,
    #[serde(default = "default_external_timeout")]
    pub timeout: HumanDuration,
    /// Sent as a bearer token when set.
    pub token: Option<Secret>,
    /// The notice's due date, this many days after the request (Europe/Rome); unset: none.
    pub due_in_days: Option<u32>,
}

fn default_external_timeout() -> HumanDuration {
    "3s".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    pub entity: String,
    pub from: Endpoint,
    pub decode: Option<Codec>,
    pub encode: Option<Codec>,
    pub to: Endpoint,
    pub outcomes: Option<Endpoint>,
    /// Receipts pipelines: only receipts of positions of these debt types (empty: all).
    #[serde(default)]
    pub debt_types: Vec<String>,
    /// Receipts pipelines writing files: when to write the next one.
    pub batch: Option<BatchConfig>,
    /// Import pipelines: the flows' character encoding (default UTF-8); outcome files are
    /// written back in it.
    pub encoding: Option<String>,
    /// Import pipelines: print the payment notice of every accepted position with a notice
    /// number into `<flow>_AVVISI_PDF.zip`, published with the outcome files.
    #[serde(default)]
    pub notices: bool,
}

/// A value never shown by `Debug` (tokens, passwords).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `batch = { schedule = "0 0 2 * * *" }`: one file per tick with every receipt not yet written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Cron with seconds, Europe/Rome.
    pub schedule: String,
    /// Write no file on a tick with no receipts (default: a file with the header only, so the
    /// entity can tell "nothing paid" from "no export ran").
    #[serde(default)]
    pub skip_empty: bool,
}

/// A pipeline end: a built-in target by name (`"registry"`) or a connector with its settings.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Named(String),
    Connector { kind: String, params: Value },
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Self::Named(s)),
            Value::Object(mut map) => match map.remove("connector") {
                Some(Value::String(kind)) => Ok(Self::Connector {
                    kind,
                    params: Value::Object(map),
                }),
                _ => Err(D::Error::custom(
                    "expected a table with a `connector` key, e.g. { connector = \"dir\", path = \"...\" }",
                )),
            },
            _ => Err(D::Error::custom(
                "expected a name such as \"registry\" or a table { connector = ..., ... }",
            )),
        }
    }
}

/// A format by name (`"mypay-import"`) or with settings (`{ codec = "mypay-export", version = "1.3" }`).
#[derive(Debug, Clone)]
pub struct Codec {
    pub name: String,
    pub params: Value,
}

impl<'de> Deserialize<'de> for Codec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(name) => Ok(Self {
                name,
                params: Value::Object(Default::default()),
            }),
            Value::Object(mut map) => match map.remove("codec") {
                Some(Value::String(name)) => Ok(Self {
                    name,
                    params: Value::Object(map),
                }),
                _ => Err(D::Error::custom("expected a table with a `codec` key")),
            },
            _ => Err(D::Error::custom(
                "expected a codec name or a { codec = ... } table",
            )),
        }
    }
}

// ---- The listeners' guard (issue #14): bounds, TLS, node authentication. ----

fn default_header_timeout() -> HumanDuration {
    "10s".into()
}
fn default_request_timeout() -> HumanDuration {
    "60s".into()
}
fn default_idle_timeout() -> HumanDuration {
    "60s".into()
}
fn default_max_connections() -> usize {
    1024
}
fn default_soap_max_body() -> usize {
    1 << 20
}
fn default_admin_max_body() -> usize {
    64 << 10
}
fn default_auth_failures() -> u32 {
    60
}

/// `[http.tls]`: the listeners' certificate, re-read when the files change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[pagopa] node_auth`: a mode alone (`node_auth = "none"`), or a table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAuthConfig {
    /// `mtls`, `proxy`, `allowlist` or `none`.
    pub mode: String,
    /// mtls: PEM bundle of the CAs the node's client certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// The client certificate's subject must hold these attributes (`CN=..., O=...`).
    pub subject: Option<String>,
    /// mtls: the client certificate must name this DNS SAN.
    pub san: Option<String>,
    /// Peer addresses (CIDRs) allowed; checked before the body is read. proxy: the proxy's.
    #[serde(default)]
    pub allow: Vec<String>,
    /// proxy: the header carrying the proxy's verified client-certificate subject.
    pub subject_header: Option<String>,
}

impl NodeAuthConfig {
    fn deserialize_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(mode) => Ok(Some(Self {
                mode,
                ..Self::default()
            })),
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(Some)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "expected \"mtls\", \"proxy\", \"allowlist\", \"none\" or a table",
            )),
        }
    }
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    EmbeddedDemo,
}

/// Reads the file (or the embedded demo when `path` is `None`), applies environment overrides
/// and `${VAR}` substitution; returns the raw tree, or the problems found reading it.
pub fn load_value(path: Option<&Path>) -> Result<(Value, ConfigSource), Vec<Problem>> {
    let (text, source) = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (t, ConfigSource::File(p.to_path_buf())),
            Err(e) => {
                return Err(vec![Problem::new(
                    "",
                    format!("cannot read {}: {e}", p.display()),
                )])
            }
        },
        None => (DEMO_TOML.to_string(), ConfigSource::EmbeddedDemo),
    };
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("SNODO")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| {
            vec![Problem::new(
                "",
                format!("cannot parse the configuration: {e}"),
            )]
        })?;
    let mut value = built;
    let mut problems = Vec::new();
    substitute_env(&mut value, String::new(), &mut problems);
    if problems.is_empty() {
        Ok((value, source))
    } else {
        Err(problems)
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string; a missing variable without a default
/// is a problem at that path (a secret silently left empty is worse than a refusal to start).
fn substitute_env(v: &mut Value, path: String, problems: &mut Vec<Problem>) {
    match v {
        Value::String(s) if s.contains("${") => match expand(s) {
            Ok(new) => *s = new,
            Err(msg) => problems.push(Problem::new(path, msg)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, format!("{path}[{i}]"), problems);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                substitute_env(item, p, problems);
            }
        }
        _ => {}
    }
}

pub fn expand(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{...}} in {s:?}"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("${{{expr}}} is not a valid variable reference"));
        }
        match (std::env::var(name), default) {
            // `:-` also replaces an empty value, as in the shell.
            (Ok(val), None) => out.push_str(&val),
            (Ok(val), Some(_)) if !val.is_empty() => out.push_str(&val),
            (_, Some(d)) => out.push_str(d),
            (Err(_), None) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Deserializes `value` into `T`, collecting every unknown key (with a suggestion) instead of
/// stopping at the first; a type error is reported with its path and ends the attempt.
pub fn deserialize_collecting<T: DeserializeOwned>(
    mut value: Value,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    // Each round removes one unknown key; the bound only guards against a loop on odd input.
    for _ in 0..1000 {
        match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return Some(t),
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.inner().to_string();
                let full = join_path(prefix, if path == "." { "" } else { &path });
                if let Some((field, expected)) = parse_unknown_field(&inner) {
                    let suggestion = strsim_suggestion(&field, &expected);
                    let key_path = if full.ends_with(&field) {
                        full.clone()
                    } else {
                        join_path(&full, &field)
                    };
                    let mut msg = format!("unknown key `{field}`");
                    if let Some(s) = suggestion {
                        msg.push_str(&format!(" (did you mean `{s}`?)"));
                    } else if !expected.is_empty() {
                        msg.push_str(&format!(" (expected one of: {})", expected.join(", ")));
                    }
                    problems.push(Problem::new(key_path, msg));
                    let container = if path.ends_with(&field) {
                        path[..path.len() - field.len()]
                            .trim_end_matches('.')
                            .to_string()
                    } else {
                        path.clone()
                    };
                    if !remove_key(&mut value, &container, &field) {
                        return None;
                    }
                } else {
                    problems.push(Problem::new(full, inner));
                    return None;
                }
            }
        }
    }
    None
}

fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or "there are
/// no fields").
fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let field = rest[..end].to_string();
    let expected = rest[end + 1..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field, expected))
}

fn strsim_suggestion(field: &str, expected: &[String]) -> Option<String> {
    expected
        .iter()
        .map(|e| (strsim::jaro_winkler(field, e), e))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, e)| e.clone())
}

/// Removes `key` from the object at `path` (serde_path_to_error's `a.b[1].c` form).
fn remove_key(root: &mut Value, path: &str, key: &str) -> bool {
    let mut cur = root;
    for seg in path_segments(path) {
        cur = match seg {
            Seg::Key(k) => match cur.get_mut(&k) {
                Some(v) => v,
                None => return false,
            },
            Seg::Index(i) => match cur.get_mut(i) {
                Some(v) => v,
                None => return false,
            },
        };
    }
    cur.as_object_mut().and_then(|m| m.remove(key)).is_some()
}

enum Seg {
    Key(String),
    Index(usize),
}

fn path_segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            if b > 0 {
                out.push(Seg::Key(rest[..b].to_string()));
            }
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(i) = stripped[..close].parse() {
                    out.push(Seg::Index(i));
                }
                rest = &stripped[close + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_with_defaults() {
        std::env::set_var("SNODO_TEST_X", "v");
        assert_eq!(expand("a${SNODO_TEST_X}b").unwrap(), "avb");
        assert_eq!(expand("${SNODO_TEST_UNSET_Y:-dflt}").unwrap(), "dflt");
        assert!(expand("${SNODO_TEST_UNSET_Y}")
            .unwrap_err()
            .contains("SNODO_TEST_UNSET_Y"));
        assert!(expand("${oops").is_err());
    }

    #[test]
    fn collects_every_unknown_key_with_suggestions() {
        let v = serde_json::json!({
            "pagopa": {"broker_fiscal_code": "80007580279", "stations": [], "statons": 1},
            "hub": {"data_dri": "x"},
            "entities": [{"ipa_code": "a", "fiscal_code": "b", "name": "c", "segregation_code": "01",
                          "debt_types": [{"code": "T", "description": "d", "iban": "i", "taxonomy": "t", "ibann": 2}]}]
        });
        let mut problems = Vec::new();
        let cfg: Option<Config> = deserialize_collecting(v, "", &mut problems);
        assert!(cfg.is_some(), "{problems:?}");
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            shown.contains(
                &"pagopa.statons: unknown key `statons` (did you mean `stations`?)".to_string()
            ),
            "{shown:?}"
        );
        assert!(
            shown.contains(
                &"hub.data_dri: unknown key `data_dri` (did you mean `data_dir`?)".to_string()
            ),
            "{shown:?}"
        );
        assert!(
            shown.contains(
                &"entities[0].debt_types[0].ibann: unknown key `ibann` (did you mean `iban`?)"
                    .to_string()
            ),
            "{shown:?}"
        );
    }

    #[test]
    fn type_errors_name_their_path() {
        let v = serde_json::json!({"pagopa": {"broker_fiscal_code": "x", "stations": "notalist"}});
        let mut problems = Vec::new();
        let cfg: Option<Config> = deserialize_collecting(v, "", &mut problems);
        assert!(cfg.is_none());
        assert_eq!(problems[0].path, "pagopa.stations");
    }

    #[test]
    fn embedded_demo_loads() {
        let (v, _) = load_value(None).unwrap();
        let mut problems = Vec::new();
        let cfg: Config = deserialize_collecting(v, "", &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(cfg.entities.iter().any(|e| e.ipa_code == "c_g224"));
    }
}
