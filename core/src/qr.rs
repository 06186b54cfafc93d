//! The pagoPA QR code payload printed on payment notices, so a PSP app can pay by scanning.

use crate::{Amount, EntityFiscalCode, NoticeNumber};

/// `PAGOPA|002|<notice number>|<entity fiscal code>|<amount in cents>`, as the notice
/// specification fixes it (version 002).
pub fn qr_payload(notice: &NoticeNumber, entity: &EntityFiscalCode, amount: Amount) -> String {
    format!("PAGOPA|002|{notice}|{entity}|{}", amount.cents())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_layout() {
        let notice = NoticeNumber::parse("301000000000012373").unwrap();
        let entity = EntityFiscalCode::parse("00644060287").unwrap();
        assert_eq!(
            qr_payload(&notice, &entity, Amount::from_cents(1250)),
            "PAGOPA|002|301000000000012373|00644060287|1250"
        );
    }
}
