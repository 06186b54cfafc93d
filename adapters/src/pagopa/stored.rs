//! A receipt as the hub decoded it on arrival, kept beside the raw XML: deliveries and exports
//! encode from it instead of parsing the XML again for every attempt of every pipeline.

use serde::{Deserialize, Serialize};

use super::{Request, SendRtRequest, SendRtV2Request};

#[derive(Serialize)]
enum Out<'r> {
    V1(&'r SendRtRequest),
    V2(&'r SendRtV2Request),
}

#[derive(Deserialize)]
enum In {
    V1(SendRtRequest),
    V2(SendRtV2Request),
}

/// The stored form of a `paSendRT` / `paSendRTV2` request; `None` for any other request.
pub fn receipt_to_stored(request: &Request) -> Option<String> {
    let out = match request {
        Request::SendRt(r) => Out::V1(r),
        Request::SendRtV2(r) => Out::V2(r),
        Request::Verify(_)
        | Request::GetPayment(_)
        | Request::GetPaymentV2(_)
        | Request::Demand(_) => return None,
    };
    serde_json::to_string(&out).ok()
}

/// The request back from [`receipt_to_stored`]'s bytes.
pub fn receipt_from_stored(bytes: &[u8]) -> Result<Request, serde_json::Error> {
    Ok(match serde_json::from_slice(bytes)? {
        In::V1(r) => Request::SendRt(r),
        In::V2(r) => Request::SendRtV2(r),
    })
}

/// One transfer of a stored receipt, as [`stored_transfers`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredTransfer {
    /// `idTransfer`.
    pub id_transfer: u8,
    /// `fiscalCodePA`: the entity the transfer credits.
    pub fiscal_code_pa: String,
    /// `transferAmount`, as on the wire.
    pub transfer_amount: String,
}

#[derive(Deserialize)]
struct TransfersOf {
    receipt: TransferList,
}

#[derive(Deserialize)]
struct TransferList {
    transfer_list: Vec<StoredTransfer>,
}

#[derive(Deserialize)]
enum TransfersIn {
    V1(TransfersOf),
    V2(TransfersOf),
}

/// The transfers of [`receipt_to_stored`]'s bytes, in order, without decoding the rest of the
/// request: linking a 100 000-row settlement flow reads only these (a third of the time).
pub fn stored_transfers(bytes: &[u8]) -> Result<Vec<StoredTransfer>, serde_json::Error> {
    Ok(match serde_json::from_slice(bytes)? {
        TransfersIn::V1(r) | TransfersIn::V2(r) => r.receipt.transfer_list,
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse_request;
    use super::*;
    use crate::test_fixtures::{receipt_v1, receipt_v2, send_rt, send_rt_v2};

    #[test]
    fn stored_receipts_read_back_as_parsed() {
        for xml in [send_rt(receipt_v1()), send_rt_v2(receipt_v2())] {
            let parsed = parse_request(xml.as_bytes()).unwrap();
            let stored = receipt_to_stored(&parsed).expect("a receipt");
            assert_eq!(receipt_from_stored(stored.as_bytes()).unwrap(), parsed);
        }
        assert!(receipt_from_stored(b"{\"V3\":{}}").is_err());
        assert!(receipt_from_stored(b"<xml/>").is_err());
        assert!(stored_transfers(b"{\"V3\":{}}").is_err());
        assert!(stored_transfers(b"{\"V2\":{}}").is_err());
        let verify = parse_request(crate::test_fixtures::verify_request().as_bytes()).unwrap();
        assert_eq!(receipt_to_stored(&verify), None);
    }

    #[test]
    fn stored_transfers_are_the_view_s() {
        use crate::pagopa::ReceiptView;
        for xml in [send_rt(receipt_v1()), send_rt_v2(receipt_v2())] {
            let parsed = parse_request(xml.as_bytes()).unwrap();
            let stored = receipt_to_stored(&parsed).unwrap();
            let view = ReceiptView::of(&parsed).unwrap();
            let want: Vec<(u8, &str, &str)> = view
                .transfers
                .iter()
                .map(|t| (t.id_transfer, t.fiscal_code_pa, t.amount))
                .collect();
            let got = stored_transfers(stored.as_bytes()).unwrap();
            let got: Vec<(u8, &str, &str)> = got
                .iter()
                .map(|t| {
                    (
                        t.id_transfer,
                        t.fiscal_code_pa.as_str(),
                        t.transfer_amount.as_str(),
                    )
                })
                .collect();
            assert!(!want.is_empty());
            assert_eq!(got, want);
        }
    }

    /// Not a benchmark: says how the two decodings compare on this machine.
    #[test]
    #[ignore]
    fn decoding_the_stored_form_is_faster() {
        let xml = send_rt_v2(receipt_v2());
        let stored = receipt_to_stored(&parse_request(xml.as_bytes()).unwrap()).unwrap();
        let n = 20_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(parse_request(std::hint::black_box(xml.as_bytes())).unwrap());
        }
        let parse = t.elapsed();
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                receipt_from_stored(std::hint::black_box(stored.as_bytes())).unwrap(),
            );
        }
        let load = t.elapsed();
        eprintln!("per receipt: xml {:?}, stored {:?}", parse / n, load / n);
    }
}
