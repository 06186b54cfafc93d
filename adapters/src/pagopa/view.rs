//! One borrowed view over the receipt of `paSendRT` and of `paSendRTV2`.
//!
//! [`Receipt`](super::Receipt) and [`ReceiptV2`](super::ReceiptV2) (and their transfers) have
//! like-named fields but are different types, and the formats built on a receipt (the MyPay
//! export, MyPay's `Pagati`) read both versions the same way. [`ReceiptView::of`] maps either
//! one, once, to the fields they use, so no format has to write the mapping again per version.

use super::{Outcome, ReceiptDestination, Request, Subject};

/// The fields of `ctReceipt` and `ctReceiptV2` (plus the sender's station) that the receipt
/// formats use, borrowed from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptView<'r> {
    /// `idStation` of the request.
    pub id_station: &'r str,
    pub receipt_id: &'r str,
    pub fiscal_code: &'r str,
    pub outcome: Outcome,
    pub creditor_reference_id: &'r str,
    pub payment_amount: &'r str,
    pub company_name: &'r str,
    pub debtor: &'r Subject,
    pub payer: Option<&'r Subject>,
    pub id_psp: &'r str,
    pub psp_company_name: &'r str,
    pub fee: Option<&'r str>,
    pub payment_date_time: Option<&'r str>,
    pub application_date: Option<&'r str>,
    /// `transferList`, in order.
    pub transfers: Vec<ReceiptTransferView<'r>>,
}

/// The fields of a receipt's transfer (`ctTransferPA` / `ctTransferPAReceiptV2`) the receipt
/// formats use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptTransferView<'r> {
    /// 1-based position in `transferList`, for error paths.
    pub position: usize,
    pub id_transfer: u8,
    /// `transferAmount`.
    pub amount: &'r str,
    pub fiscal_code_pa: &'r str,
    pub remittance_information: &'r str,
    /// `transferCategory`.
    pub category: &'r str,
    /// The revenue stamp's `MBDAttachment` (base64, as on the wire): V2 only.
    pub mbd_attachment: Option<&'r str>,
}

/// The view of a `SendRtRequest` or `SendRtV2Request` (both have the same field names);
/// `|t| mbd` gives a transfer `t`'s MBD attachment, the one field only V2 has.
macro_rules! receipt_view {
    ($request:expr, |$t:ident| $mbd:expr) => {{
        let r = $request;
        let rc = &r.receipt;
        ReceiptView {
            id_station: &r.id_station,
            receipt_id: &rc.receipt_id,
            fiscal_code: &rc.fiscal_code,
            outcome: rc.outcome,
            creditor_reference_id: &rc.creditor_reference_id,
            payment_amount: &rc.payment_amount,
            company_name: &rc.company_name,
            debtor: &rc.debtor,
            payer: rc.payer.as_ref(),
            id_psp: &rc.id_psp,
            psp_company_name: &rc.psp_company_name,
            fee: rc.fee.as_deref(),
            payment_date_time: rc.payment_date_time.as_deref(),
            application_date: rc.application_date.as_deref(),
            transfers: rc
                .transfer_list
                .iter()
                .enumerate()
                .map(|(i, $t)| ReceiptTransferView {
                    position: i + 1,
                    id_transfer: $t.id_transfer,
                    amount: &$t.transfer_amount,
                    fiscal_code_pa: &$t.fiscal_code_pa,
                    remittance_information: &$t.remittance_information,
                    category: &$t.transfer_category,
                    mbd_attachment: $mbd,
                })
                .collect(),
        }
    }};
}

impl<'r> ReceiptView<'r> {
    /// The receipt of a `paSendRT` or `paSendRTV2` request; `None` for any other request.
    pub fn of(request: &'r Request) -> Option<Self> {
        match request {
            Request::SendRt(r) => Some(receipt_view!(r, |_t| None)),
            Request::SendRtV2(r) => Some(receipt_view!(r, |t| match &t.destination {
                ReceiptDestination::MbdAttachment(b64) => Some(b64.as_str()),
                ReceiptDestination::Iban(_) => None,
            })),
            Request::Verify(_)
            | Request::GetPayment(_)
            | Request::GetPaymentV2(_)
            | Request::Demand(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn subject(name: &str) -> Subject {
        Subject {
            unique_identifier: UniqueIdentifier {
                kind: EntityType::F,
                value: "JHNDOE00A01F205N".into(),
            },
            full_name: name.into(),
            city: Some("Reggio Calabria".into()),
            ..Subject::default()
        }
    }

    fn transfer(id: u8, amount: &str, fiscal_code: &str, category: &str) -> Transfer {
        Transfer {
            id_transfer: id,
            transfer_amount: amount.into(),
            fiscal_code_pa: fiscal_code.into(),
            iban: "IT96R0123454321000000012345".into(),
            remittance_information: format!("quota {id}"),
            transfer_category: category.into(),
            metadata: Vec::new(),
        }
    }

    fn send_rt() -> SendRtRequest {
        SendRtRequest {
            id_pa: "77777777777".into(),
            id_broker_pa: "80000000001".into(),
            id_station: "80000000001_01".into(),
            receipt: Receipt {
                receipt_id: "c110729d258c4ab1b765fe902aae41d6".into(),
                notice_number: "301000000000012373".into(),
                fiscal_code: "77777777777".into(),
                outcome: Outcome::Ok,
                creditor_reference_id: "01000000000012373".into(),
                payment_amount: "46.00".into(),
                description: "TARI 2024".into(),
                company_name: "Comune di Prova".into(),
                debtor: subject("Debitore"),
                transfer_list: vec![
                    transfer(1, "30.00", "77777777777", "9/0101100IM/"),
                    transfer(2, "16.00", "77777777778", "9/0301109AP/"),
                ],
                id_psp: "88888888888".into(),
                psp_company_name: "PSP & Co".into(),
                id_channel: "88888888888_01".into(),
                channel_description: "app".into(),
                payer: Some(subject("Pagatore")),
                fee: Some("1.50".into()),
                payment_date_time: Some("2024-05-31T10:11:12.345+02:00".into()),
                application_date: Some("2024-05-31".into()),
                ..Receipt::default()
            },
        }
    }

    /// The V2 twin of `v1`, with a revenue stamp as its second transfer.
    fn send_rt_v2(v1: &SendRtRequest) -> SendRtV2Request {
        let r = v1.receipt.clone();
        let transfer_list = r
            .transfer_list
            .into_iter()
            .map(|t| ReceiptTransferV2 {
                id_transfer: t.id_transfer,
                transfer_amount: t.transfer_amount,
                fiscal_code_pa: t.fiscal_code_pa,
                company_name: None,
                destination: if t.id_transfer == 2 {
                    ReceiptDestination::MbdAttachment(
                        "PG1hcmNhRGFCb2xsbz48L21hcmNhRGFCb2xsbz4=".into(),
                    )
                } else {
                    ReceiptDestination::Iban(t.iban)
                },
                remittance_information: t.remittance_information,
                transfer_category: t.transfer_category,
                metadata: t.metadata,
            })
            .collect();
        SendRtV2Request {
            id_pa: v1.id_pa.clone(),
            id_broker_pa: v1.id_broker_pa.clone(),
            id_station: v1.id_station.clone(),
            receipt: ReceiptV2 {
                receipt_id: r.receipt_id,
                notice_number: r.notice_number,
                fiscal_code: r.fiscal_code,
                outcome: r.outcome,
                creditor_reference_id: r.creditor_reference_id,
                payment_amount: r.payment_amount,
                description: r.description,
                company_name: r.company_name,
                debtor: r.debtor,
                transfer_list,
                id_psp: r.id_psp,
                psp_company_name: r.psp_company_name,
                id_channel: r.id_channel,
                channel_description: r.channel_description,
                payer: r.payer,
                fee: r.fee,
                payment_date_time: r.payment_date_time,
                application_date: r.application_date,
                ..ReceiptV2::default()
            },
        }
    }

    /// `req` as the hub gets it: rendered by the node, parsed back.
    fn from_the_wire(req: Request) -> Request {
        parse_request(render_request(&req).as_bytes()).expect("a valid request")
    }

    #[test]
    fn both_receipt_versions_give_the_same_view() {
        let v1 = send_rt();
        let v2 = send_rt_v2(&v1);
        let v1 = from_the_wire(Request::SendRt(v1));
        let v2 = from_the_wire(Request::SendRtV2(v2));
        let a = ReceiptView::of(&v1).expect("paSendRT has a receipt");
        let mut b = ReceiptView::of(&v2).expect("paSendRTV2 has a receipt");

        assert_eq!(a.id_station, "80000000001_01");
        assert_eq!(a.receipt_id, "c110729d258c4ab1b765fe902aae41d6");
        assert_eq!(a.outcome, Outcome::Ok);
        assert_eq!(a.payment_amount, "46.00");
        assert_eq!(a.debtor.full_name, "Debitore");
        assert_eq!(a.payer.map(|p| p.full_name.as_str()), Some("Pagatore"));
        assert_eq!(a.fee, Some("1.50"));
        assert_eq!(a.payment_date_time, Some("2024-05-31T10:11:12.345+02:00"));
        assert_eq!(a.application_date, Some("2024-05-31"));
        let positions: Vec<_> = a.transfers.iter().map(|t| t.position).collect();
        assert_eq!(positions, [1, 2]);
        assert_eq!(a.transfers[1].id_transfer, 2);
        assert_eq!(a.transfers[1].amount, "16.00");
        assert_eq!(a.transfers[1].fiscal_code_pa, "77777777778");
        assert_eq!(a.transfers[1].remittance_information, "quota 2");
        assert_eq!(a.transfers[1].category, "9/0301109AP/");

        // The MBD attachment is V2's only: on the stamp's transfer, nowhere in V1.
        assert!(a.transfers.iter().all(|t| t.mbd_attachment.is_none()));
        assert_eq!(b.transfers[0].mbd_attachment, None);
        assert_eq!(
            b.transfers[1].mbd_attachment,
            Some("PG1hcmNhRGFCb2xsbz48L21hcmNhRGFCb2xsbz4=")
        );
        b.transfers[1].mbd_attachment = None;
        assert_eq!(a, b);
    }

    #[test]
    fn other_requests_have_no_receipt_view() {
        let verify = Request::Verify(VerifyRequest {
            id_pa: "77777777777".into(),
            id_broker_pa: "80000000001".into(),
            id_station: "80000000001_01".into(),
            qr_code: QrCode {
                fiscal_code: "77777777777".into(),
                notice_number: "301000000000012373".into(),
            },
        });
        assert_eq!(ReceiptView::of(&from_the_wire(verify)), None);
    }
}
