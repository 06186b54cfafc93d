//! The payloads of paForNode as plain structs, one field per XSD element, in XSD order.
//!
//! Amounts and dates stay the strings of the wire (`12.50`, `2024-05-31`, `2024-05-31T10:00:00`)
//! so a parsed message renders back byte-for-byte; [`super::to_cents`] and the `*_cents` methods
//! give integer cents. `Option` is an element with `minOccurs="0"`; a `metadata` list that is
//! empty is an absent `metadata` element (the XSD wants 1 to 15 `mapEntry`).

use serde::{Deserialize, Serialize};
use snodo_core::amount::AmountError;
use snodo_core::Amount;

/// `stOutcome`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    #[default]
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "KO")]
    Ko,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Ko => "KO",
        }
    }
}

/// `stAmountOption`: how the PSP may vary the amount. The XSD has no `GE`; its comments call
/// `LS` "greater than" and `GT` "less than", so rely on the codes, not on the comments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AmountOption {
    #[default]
    #[serde(rename = "EQ")]
    Eq,
    #[serde(rename = "LS")]
    Ls,
    #[serde(rename = "GT")]
    Gt,
    #[serde(rename = "ANY")]
    Any,
}

impl AmountOption {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "EQ",
            Self::Ls => "LS",
            Self::Gt => "GT",
            Self::Any => "ANY",
        }
    }
}

/// `stTransferType`: the PSP asks for postal accounts when it pays by postal slip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferType {
    #[serde(rename = "POSTAL")]
    Postal,
    #[serde(rename = "PAGOPA")]
    PagoPa,
}

impl TransferType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postal => "POSTAL",
            Self::PagoPa => "PAGOPA",
        }
    }
}

/// `stEntityUniqueIdentifierType`: F natural person, G legal person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntityType {
    #[default]
    F,
    G,
}

impl EntityType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F => "F",
            Self::G => "G",
        }
    }
}

/// `ctQrCode`: the notice being asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrCode {
    /// The entity's 11-digit fiscal code.
    pub fiscal_code: String,
    /// 18 digits.
    pub notice_number: String,
}

/// `ctMapEntry`: one key/value of `metadata` (1 to 140 characters each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    pub key: String,
    pub value: String,
}

/// `ctEntityUniqueIdentifier`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueIdentifier {
    pub kind: EntityType,
    /// Fiscal code or VAT number, 2 to 16 characters.
    pub value: String,
}

/// `ctSubject`: debtor or payer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub unique_identifier: UniqueIdentifier,
    pub full_name: String,
    pub street_name: Option<String>,
    pub civic_number: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub state_province_region: Option<String>,
    /// Two upper-case letters.
    pub country: Option<String>,
    /// Element `e-mail`.
    pub email: Option<String>,
}

/// `ctFaultBean`: why the answer is KO.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// A `PAA_*` code, see [`super::fault_codes`].
    pub fault_code: String,
    pub fault_string: String,
    /// Who raised the fault (the entity or the broker).
    pub id: String,
    pub description: Option<String>,
    pub serial: Option<i32>,
    pub original_fault_code: Option<String>,
    pub original_fault_string: Option<String>,
    pub original_description: Option<String>,
}

impl Fault {
    pub fn new(
        fault_code: impl Into<String>,
        fault_string: impl Into<String>,
        id: impl Into<String>,
    ) -> Self {
        Self {
            fault_code: fault_code.into(),
            fault_string: fault_string.into(),
            id: id.into(),
            ..Self::default()
        }
    }

    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// `paVerifyPaymentNoticeReq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub id_pa: String,
    pub id_broker_pa: String,
    pub id_station: String,
    pub qr_code: QrCode,
}

/// `paGetPaymentReq`, and `paGetPaymentV2Request` which has the same content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPaymentRequest {
    pub id_pa: String,
    pub id_broker_pa: String,
    pub id_station: String,
    pub qr_code: QrCode,
    /// The amount the PSP is about to collect (`stAmount`, may be `0.00`).
    pub amount: Option<String>,
    /// Up to 210 characters.
    pub payment_note: Option<String>,
    pub transfer_type: Option<TransferType>,
    pub due_date: Option<String>,
}

impl GetPaymentRequest {
    pub fn amount_cents(&self) -> Option<Result<Amount, AmountError>> {
        self.amount.as_deref().map(super::to_cents)
    }
}

/// `ctTransferPA`: one beneficiary of a payment (V1 messages).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// 1 to 5.
    pub id_transfer: u8,
    pub transfer_amount: String,
    pub fiscal_code_pa: String,
    pub iban: String,
    pub remittance_information: String,
    /// Taxonomy code, e.g. `9/0101100IM/`.
    pub transfer_category: String,
    pub metadata: Vec<MapEntry>,
}

/// `ctRichiestaMarcaDaBollo`: a digital revenue stamp paid instead of a credit to an IBAN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarcaDaBollo {
    /// Base64 SHA-256 of the stamped document (4 to 72 characters).
    pub hash_documento: String,
    /// Only `01` exists.
    pub tipo_bollo: String,
    /// Two upper-case letters.
    pub provincia_residenza: String,
}

/// The `IBAN | richiestaMarcaDaBollo` choice of `ctTransferPAV2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    Iban(String),
    MarcaDaBollo(MarcaDaBollo),
}

/// `ctTransferPAV2`: a transfer of `paGetPaymentV2Response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferV2 {
    pub id_transfer: u8,
    pub transfer_amount: String,
    pub fiscal_code_pa: String,
    /// The beneficiary's name, for multi-beneficiary payments.
    pub company_name: Option<String>,
    pub destination: Destination,
    pub remittance_information: String,
    pub transfer_category: String,
    pub metadata: Vec<MapEntry>,
}

/// The `IBAN | MBDAttachment` choice of `ctTransferPAReceiptV2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptDestination {
    Iban(String),
    /// The stamp bought (base64 of the MBD XML), as on the wire.
    MbdAttachment(String),
}

/// `ctTransferPAReceiptV2`: a transfer of `paSendRTV2Request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptTransferV2 {
    pub id_transfer: u8,
    pub transfer_amount: String,
    pub fiscal_code_pa: String,
    pub company_name: Option<String>,
    pub destination: ReceiptDestination,
    pub remittance_information: String,
    pub transfer_category: String,
    pub metadata: Vec<MapEntry>,
}

/// `ctReceipt`: the receipt of `paSendRTReq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The payment token; unique per receipt, so the key for duplicate detection.
    pub receipt_id: String,
    pub notice_number: String,
    pub fiscal_code: String,
    pub outcome: Outcome,
    pub creditor_reference_id: String,
    pub payment_amount: String,
    pub description: String,
    pub company_name: String,
    pub office_name: Option<String>,
    pub debtor: Subject,
    pub transfer_list: Vec<Transfer>,
    pub id_psp: String,
    pub psp_fiscal_code: Option<String>,
    pub psp_partita_iva: Option<String>,
    /// Element `PSPCompanyName`.
    pub psp_company_name: String,
    pub id_channel: String,
    pub channel_description: String,
    pub payer: Option<Subject>,
    pub payment_method: Option<String>,
    pub fee: Option<String>,
    pub payment_date_time: Option<String>,
    pub application_date: Option<String>,
    pub transfer_date: Option<String>,
    pub metadata: Vec<MapEntry>,
    pub stand_in: Option<bool>,
}

/// `ctReceiptV2`: as [`Receipt`] plus payment note, fees borne by the entity, bundles, and
/// V2 transfers (beneficiary name, revenue stamp).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptV2 {
    pub receipt_id: String,
    pub notice_number: String,
    pub fiscal_code: String,
    pub outcome: Outcome,
    pub creditor_reference_id: String,
    pub payment_amount: String,
    pub description: String,
    pub company_name: String,
    pub office_name: Option<String>,
    pub debtor: Subject,
    pub transfer_list: Vec<ReceiptTransferV2>,
    pub id_psp: String,
    pub psp_fiscal_code: Option<String>,
    pub psp_partita_iva: Option<String>,
    pub psp_company_name: String,
    pub id_channel: String,
    pub channel_description: String,
    pub payer: Option<Subject>,
    pub payment_method: Option<String>,
    pub payment_note: Option<String>,
    pub fee: Option<String>,
    pub primary_ci_incurred_fee: Option<String>,
    pub id_bundle: Option<String>,
    pub id_ci_bundle: Option<String>,
    pub payment_date_time: Option<String>,
    pub application_date: Option<String>,
    pub transfer_date: Option<String>,
    pub metadata: Vec<MapEntry>,
    pub stand_in: Option<bool>,
}

impl Receipt {
    pub fn payment_amount_cents(&self) -> Result<Amount, AmountError> {
        super::to_cents(&self.payment_amount)
    }
}

impl ReceiptV2 {
    pub fn payment_amount_cents(&self) -> Result<Amount, AmountError> {
        super::to_cents(&self.payment_amount)
    }
}

/// `paSendRTReq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRtRequest {
    pub id_pa: String,
    pub id_broker_pa: String,
    pub id_station: String,
    pub receipt: Receipt,
}

/// `paSendRTV2Request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRtV2Request {
    pub id_pa: String,
    pub id_broker_pa: String,
    pub id_station: String,
    pub receipt: ReceiptV2,
}

/// `paDemandPaymentNoticeRequest`: the node asks the entity to issue a notice for a service of
/// pagoPA's catalogue, described by `datiSpecificiServizioRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandRequest {
    pub id_pa: String,
    pub id_broker_pa: String,
    pub id_station: String,
    /// `idServizio`: the catalogue's service, 5 characters.
    pub id_servizio: String,
    /// `idSoggettoServizio`: the entity's code as provider of that service, 5 characters.
    pub id_soggetto_servizio: String,
    /// `datiSpecificiServizioRequest` as on the wire: base64 of an XML document valid against
    /// the service's XSD (`crate::car_tax` reads the car tax's).
    pub dati_specifici_servizio: String,
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// `ctPaymentOptionDescriptionPA`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOption {
    /// `stAmountNotZero`.
    pub amount: String,
    pub options: AmountOption,
    pub due_date: Option<String>,
    pub detail_description: Option<String>,
    /// Whether every transfer goes to a postal account (`allCCP`).
    pub all_ccp: bool,
}

impl PaymentOption {
    pub fn amount_cents(&self) -> Result<Amount, AmountError> {
        super::to_cents(&self.amount)
    }
}

/// `paVerifyPaymentNoticeRes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResponse {
    pub outcome: Outcome,
    pub fault: Option<Fault>,
    /// Element `paymentList`, which the XSD limits to exactly one `paymentOptionDescription`.
    pub payment_option: Option<PaymentOption>,
    pub payment_description: Option<String>,
    pub fiscal_code_pa: Option<String>,
    pub company_name: Option<String>,
    pub office_name: Option<String>,
}

/// `paDemandPaymentNoticeResponse`: the notice issued, then what a verify would say of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandResponse {
    pub outcome: Outcome,
    pub fault: Option<Fault>,
    pub qr_code: Option<QrCode>,
    /// Element `paymentList`, one `paymentOptionDescription` as in the verify.
    pub payment_option: Option<PaymentOption>,
    pub payment_description: Option<String>,
    pub fiscal_code_pa: Option<String>,
    pub company_name: Option<String>,
    pub office_name: Option<String>,
}

/// `ctPaymentPA`: the position returned by `paGetPayment`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentData {
    pub creditor_reference_id: String,
    /// `stAmountNotZero`; the transfers must add up to it.
    pub payment_amount: String,
    pub due_date: String,
    /// `xsd:dateTime`.
    pub retention_date: Option<String>,
    pub last_payment: Option<bool>,
    pub description: String,
    pub company_name: Option<String>,
    pub office_name: Option<String>,
    pub debtor: Subject,
    /// 1 to 5 transfers.
    pub transfer_list: Vec<Transfer>,
    pub metadata: Vec<MapEntry>,
}

impl PaymentData {
    pub fn payment_amount_cents(&self) -> Result<Amount, AmountError> {
        super::to_cents(&self.payment_amount)
    }
}

/// `ctPaymentPAV2`: as [`PaymentData`] but `companyName` is mandatory and transfers are V2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDataV2 {
    pub creditor_reference_id: String,
    pub payment_amount: String,
    pub due_date: String,
    pub retention_date: Option<String>,
    pub last_payment: Option<bool>,
    pub description: String,
    pub company_name: String,
    pub office_name: Option<String>,
    pub debtor: Subject,
    pub transfer_list: Vec<TransferV2>,
    pub metadata: Vec<MapEntry>,
}

impl PaymentDataV2 {
    pub fn payment_amount_cents(&self) -> Result<Amount, AmountError> {
        super::to_cents(&self.payment_amount)
    }
}

/// `paGetPaymentRes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPaymentResponse {
    pub outcome: Outcome,
    pub fault: Option<Fault>,
    pub data: Option<PaymentData>,
}

/// `paGetPaymentV2Response`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPaymentV2Response {
    pub outcome: Outcome,
    pub fault: Option<Fault>,
    pub data: Option<PaymentDataV2>,
}

/// `paSendRTRes` and `paSendRTV2Response` (both a bare `ctResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRtResponse {
    pub outcome: Outcome,
    pub fault: Option<Fault>,
}

impl SendRtResponse {
    pub fn ok() -> Self {
        Self::default()
    }

    pub fn ko(fault: Fault) -> Self {
        Self {
            outcome: Outcome::Ko,
            fault: Some(fault),
        }
    }
}
