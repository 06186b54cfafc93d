//! The page: where each field of the single-payment notice sits (A4, points from bottom left).

use super::text::{self, cut, fit, Font};
use super::{Notice, QR_MODULES};
use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};

const A4: (f32, f32) = (595.28, 841.89);
const LEFT: f32 = 42.0;
const RIGHT: f32 = 553.0;
const COL2: f32 = 310.0;
/// 25 mm in points.
pub(super) const QR_SIDE: f32 = 25.0 * 72.0 / 25.4;
/// Bottom-left corner of the QR code in the payment slip.
pub(super) const QR_AT: (f32, f32) = (56.0, 112.0);

const REGULAR: Name = Name(b"F1");
const BOLD: Name = Name(b"F2");

/// The notice's texts after the specification's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Printed {
    pub subject: String,
    pub entity_name: String,
    pub entity_cf: String,
    pub sector: Option<String>,
    pub info: Option<String>,
    pub cbill: Option<String>,
    pub debtor_name: String,
    pub debtor_cf: Option<String>,
    pub debtor_address: Option<String>,
    pub notice: String,
    pub amount: String,
    pub due: Option<String>,
}

impl Printed {
    pub(super) fn of(n: &Notice) -> Self {
        let opt =
            |s: &Option<String>, max| s.as_deref().map(|s| cut(s, max)).filter(|s| !s.is_empty());
        Printed {
            subject: cut(&n.subject, text::SUBJECT_MAX),
            entity_name: cut(&n.creditor.name, text::ENTITY_NAME_MAX),
            entity_cf: cut(n.creditor.fiscal_code.as_str(), text::FISCAL_CODE_MAX).to_uppercase(),
            sector: opt(&n.creditor.sector, text::ENTITY_LINE_MAX),
            info: opt(&n.creditor.info, text::ENTITY_LINE_MAX),
            cbill: opt(&n.creditor.cbill, text::CBILL_MAX).map(|s| s.to_uppercase()),
            debtor_name: cut(&n.debtor.name, text::DEBTOR_NAME_MAX),
            debtor_cf: opt(&n.debtor.fiscal_code, text::FISCAL_CODE_MAX).map(|s| s.to_uppercase()),
            debtor_address: opt(&n.debtor.address, text::DEBTOR_ADDRESS_MAX),
            notice: text::grouped(n.notice_number.as_str()),
            amount: text::euro(n.amount),
            due: n.due_date.map(text::date),
        }
    }
}

struct Canvas {
    c: Content,
}

impl Canvas {
    fn text(&mut self, font: Font, size: f32, x: f32, y: f32, s: &str) {
        let name = match font {
            Font::Regular => REGULAR,
            Font::Bold => BOLD,
        };
        let bytes = text::encode(s);
        self.c
            .begin_text()
            .set_font(name, size)
            .next_line(x, y)
            .show(Str(&bytes))
            .end_text();
    }

    /// Text fitted into a box `width` wide starting with its first baseline at `y`; returns the
    /// baseline after it.
    #[allow(clippy::too_many_arguments)]
    fn boxed(
        &mut self,
        font: Font,
        size: f32,
        x: f32,
        y: f32,
        width: f32,
        max_lines: usize,
        s: &str,
    ) -> f32 {
        let f = fit(s, font, size, size * 0.7, width, max_lines);
        let lead = f.size * 1.2;
        let mut y = y;
        for line in &f.lines {
            self.text(font, f.size, x, y, line);
            y -= lead;
        }
        y
    }

    fn label(&mut self, x: f32, y: f32, s: &str) {
        self.c.set_fill_gray(0.35);
        self.text(Font::Bold, 7.0, x, y, s);
        self.c.set_fill_gray(0.0);
    }

    fn rule(&mut self, y: f32) {
        self.c
            .set_line_width(0.5)
            .move_to(LEFT, y)
            .line_to(RIGHT, y)
            .stroke();
    }

    /// Dark modules as filled squares, runs of a row merged into one rectangle.
    fn qr(&mut self, modules: &[bool], x: f32, y: f32, side: f32) {
        let m = side / QR_MODULES as f32;
        self.c.set_fill_gray(0.0);
        for (row, cells) in modules.chunks(QR_MODULES).enumerate() {
            let top = y + side - (row as f32 + 1.0) * m;
            let mut col = 0;
            while col < cells.len() {
                if !cells[col] {
                    col += 1;
                    continue;
                }
                let start = col;
                while col < cells.len() && cells[col] {
                    col += 1;
                }
                self.c
                    .rect(x + start as f32 * m, top, (col - start) as f32 * m, m);
            }
        }
        self.c.fill_nonzero();
    }
}

const AMOUNT_NOTE: &str = "L'importo è aggiornato automaticamente dal sistema e potrebbe subire \
variazioni per eventuali sgravi, note di credito, indennità di mora, sanzioni o interessi. Un \
operatore, il sito o l'app che userai potrebbero quindi chiederti una cifra diversa da quella qui \
indicata.";
const ONLINE: &str = "del tuo Ente Creditore, della tua Banca o degli altri canali di pagamento. \
Potrai pagare con carte, conto corrente, CBILL.";
const ON_SITE: &str = "in Banca, in Ricevitoria, dal Tabaccaio, al Bancomat, al Supermercato. \
Potrai pagare in contanti, con carte o conto corrente.";
const SLIP_NOTE: &str =
    "Qui accanto trovi il codice QR e il codice interbancario CBILL per pagare \
attraverso il circuito bancario e gli altri canali di pagamento abilitati.";

pub(super) fn page(notice: &Notice, qr: &[bool]) -> Vec<u8> {
    let p = Printed::of(notice);
    let mut k = Canvas { c: Content::new() };
    let due = match &p.due {
        Some(d) => format!("entro il {d}"),
        None => "senza scadenza".to_string(),
    };

    // Header: title and subject on the left, the entity on the right.
    k.text(Font::Bold, 18.0, LEFT, 800.0, "AVVISO DI PAGAMENTO");
    k.boxed(Font::Bold, 11.0, LEFT, 778.0, 250.0, 3, &p.subject);
    let mut y = k.boxed(
        Font::Bold,
        10.0,
        COL2,
        800.0,
        RIGHT - COL2,
        3,
        &p.entity_name,
    );
    for line in [&p.sector, &p.info].into_iter().flatten() {
        y = k.boxed(Font::Regular, 8.0, COL2, y, RIGHT - COL2, 1, line);
    }
    k.boxed(
        Font::Regular,
        8.0,
        COL2,
        y,
        RIGHT - COL2,
        1,
        &format!("Codice Fiscale {}", p.entity_cf),
    );
    k.rule(722.0);

    // Who: creditor and debtor.
    k.label(LEFT, 708.0, "ENTE CREDITORE");
    let y = k.boxed(
        Font::Bold,
        10.0,
        LEFT,
        694.0,
        COL2 - LEFT - 18.0,
        2,
        &p.entity_name,
    );
    k.text(
        Font::Regular,
        9.0,
        LEFT,
        y - 2.0,
        &format!("Codice Fiscale {}", p.entity_cf),
    );
    k.label(COL2, 708.0, "DESTINATARIO AVVISO");
    let mut y = k.boxed(
        Font::Bold,
        10.0,
        COL2,
        694.0,
        RIGHT - COL2,
        2,
        &p.debtor_name,
    );
    if let Some(cf) = &p.debtor_cf {
        k.text(
            Font::Regular,
            9.0,
            COL2,
            y - 2.0,
            &format!("Codice Fiscale {cf}"),
        );
        y -= 13.0;
    }
    if let Some(a) = &p.debtor_address {
        k.boxed(Font::Regular, 9.0, COL2, y - 2.0, RIGHT - COL2, 3, a);
    }
    k.rule(622.0);

    // How much, by when, where.
    k.label(LEFT, 608.0, "QUANTO E QUANDO PAGARE?");
    k.text(Font::Bold, 20.0, LEFT, 582.0, &format!("{} Euro", p.amount));
    k.text(Font::Regular, 11.0, LEFT, 564.0, &due);
    k.boxed(
        Font::Regular,
        8.0,
        LEFT,
        546.0,
        COL2 - LEFT - 18.0,
        6,
        AMOUNT_NOTE,
    );
    k.label(COL2, 608.0, "DOVE PAGARE?");
    k.text(Font::Bold, 9.0, COL2, 590.0, "PAGA SUL SITO O CON LE APP");
    let y = k.boxed(Font::Regular, 8.0, COL2, 578.0, RIGHT - COL2, 3, ONLINE);
    k.text(Font::Bold, 9.0, COL2, y - 6.0, "PAGA SUL TERRITORIO");
    k.boxed(Font::Regular, 8.0, COL2, y - 18.0, RIGHT - COL2, 3, ON_SITE);
    k.text(
        Font::Regular,
        8.0,
        COL2,
        y - 50.0,
        "Lista dei canali di pagamento su www.pagopa.gov.it",
    );

    // The payment slip for banks and other channels.
    k.c.set_line_width(0.8)
        .rect(LEFT, 60.0, RIGHT - LEFT, 250.0)
        .stroke();
    k.text(
        Font::Bold,
        10.0,
        LEFT + 10.0,
        292.0,
        "BANCHE E ALTRI CANALI",
    );
    k.text(Font::Bold, 9.0, COL2, 292.0, &format!("RATA UNICA {due}"));
    k.boxed(
        Font::Regular,
        8.0,
        LEFT + 10.0,
        276.0,
        RIGHT - LEFT - 20.0,
        2,
        SLIP_NOTE,
    );
    k.qr(qr, QR_AT.0, QR_AT.1, QR_SIDE);

    let fx = 160.0;
    let wide = 400.0 - fx;
    k.label(fx, 240.0, "Destinatario");
    k.boxed(Font::Bold, 9.0, fx, 229.0, wide, 1, &p.debtor_name);
    k.label(420.0, 240.0, "Euro");
    k.text(Font::Bold, 14.0, 420.0, 225.0, &p.amount);
    k.label(fx, 212.0, "Ente Creditore");
    k.boxed(Font::Bold, 9.0, fx, 201.0, wide, 2, &p.entity_name);
    k.label(fx, 176.0, "Oggetto del pagamento");
    k.boxed(
        Font::Regular,
        9.0,
        fx,
        165.0,
        RIGHT - 10.0 - fx,
        2,
        &p.subject,
    );
    if let Some(cbill) = &p.cbill {
        k.label(fx, 132.0, "Codice CBILL");
        k.text(Font::Bold, 10.0, fx, 120.0, cbill);
    }
    k.label(240.0, 132.0, "Codice Avviso");
    k.text(Font::Bold, 10.0, 240.0, 120.0, &p.notice);
    k.label(420.0, 132.0, "Cod. Fiscale Ente Creditore");
    k.text(Font::Bold, 10.0, 420.0, 120.0, &p.entity_cf);

    let content = k.c.finish();
    let (catalog, tree, page, body, f1, f2) = (
        Ref::new(1),
        Ref::new(2),
        Ref::new(3),
        Ref::new(4),
        Ref::new(5),
        Ref::new(6),
    );
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    {
        let mut pg = pdf.page(page);
        pg.parent(tree)
            .media_box(Rect::new(0.0, 0.0, A4.0, A4.1))
            .contents(body);
        pg.resources().fonts().pair(REGULAR, f1).pair(BOLD, f2);
    }
    pdf.stream(body, content.as_slice());
    for (id, base) in [(f1, Name(b"Helvetica")), (f2, Name(b"Helvetica-Bold"))] {
        pdf.type1_font(id)
            .base_font(base)
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_texts_are_cut_at_the_specification_limits() {
        let mut n = super::super::tests::sample();
        n.subject = "Oggetto ".repeat(30);
        n.creditor.name = "Ente ".repeat(40);
        n.debtor.name = "Nome ".repeat(30);
        n.debtor.address = Some("Via ".repeat(60));
        n.debtor.fiscal_code = Some("rssmra80a01h501uEXTRA".into());
        let p = Printed::of(&n);
        assert_eq!(p.subject.chars().count(), text::SUBJECT_MAX);
        assert!(p.entity_name.chars().count() <= text::ENTITY_NAME_MAX);
        assert!(p.entity_name.chars().count() >= text::ENTITY_NAME_MAX - 1);
        assert!(p.debtor_name.chars().count() <= text::DEBTOR_NAME_MAX);
        assert!(p.debtor_address.unwrap().chars().count() <= text::DEBTOR_ADDRESS_MAX);
        assert_eq!(p.debtor_cf.as_deref(), Some("RSSMRA80A01H501U"));
        assert_eq!(p.notice, "3010 0000 0000 0123 73");
        assert_eq!(p.due.as_deref(), Some("31/12/2026"));
    }

    #[test]
    fn qr_is_25_mm() {
        assert!((QR_SIDE / 72.0 * 25.4 - 25.0).abs() < 1e-3);
    }
}
