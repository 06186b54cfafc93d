//! The page: where each field of the single-payment notice sits (A4, points from bottom left).

use super::poste::{self, Matrix};
use super::text::{self, cut, fit, Font};
use super::{Logo, Notice, QR_MODULES};
use pdf_writer::{Content, Filter, Name, Pdf, Rect, Ref, Str};

const A4: (f32, f32) = (595.28, 841.89);
const LEFT: f32 = 42.0;
const RIGHT: f32 = 553.0;
const COL2: f32 = 310.0;
/// 25 mm in points.
pub(super) const QR_SIDE: f32 = 25.0 * 72.0 / 25.4;
/// Bottom-left corner of the QR code in the payment slip (without the Poste slip).
pub(super) const QR_AT: (f32, f32) = (56.0, 112.0);
/// The QR code's quiet zone: 4 modules.
const QR_QUIET: f32 = 4.0 * QR_SIDE / QR_MODULES as f32;
/// The Data Matrix: 25 mm wide, with 2 mm kept white around it (at least 4 modules of the
/// 256-character symbol, 1 is required).
pub(super) const DM_SIDE: f32 = QR_SIDE;
const DM_QUIET: f32 = 2.0 * 72.0 / 25.4;
/// The box a logo is scaled into, keeping its aspect ratio: 30 × 15 mm.
pub(super) const LOGO_BOX: (f32, f32) = (30.0 * 72.0 / 25.4, 15.0 * 72.0 / 25.4);
/// Top of the header's logo.
const LOGO_TOP: f32 = 810.0;
/// Poste slip text limits: the holder as MyPay prints it; the authorisation is fitted.
pub(super) const HOLDER_MAX: usize = 50;
const AUTHORISATION_MAX: usize = 300;
/// Text boxes' reach above and below a baseline, in em: Helvetica's accented capitals rise to
/// about 0.94, its descenders (ç, j) go to about 0.23.
const ASCENT: f32 = 0.95;
const DESCENT: f32 = 0.25;

const REGULAR: Name = Name(b"F1");
const BOLD: Name = Name(b"F2");
const LOGO: Name = Name(b"Im1");

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
    pub poste: Option<PrintedPoste>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PrintedPoste {
    pub account: String,
    pub holder: String,
    pub authorisation: String,
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
            poste: n.poste.as_ref().map(|p| PrintedPoste {
                account: poste::padded_account(&p.account),
                holder: cut(&p.holder, HOLDER_MAX),
                authorisation: cut(&p.authorisation, AUTHORISATION_MAX),
            }),
        }
    }
}

type Boxes = Vec<(&'static str, [f32; 4])>;

struct Canvas {
    c: Content,
    /// Every drawn item's box, when asked for (tests of the layout), else nothing is recorded.
    boxes: Option<Boxes>,
}

impl Canvas {
    fn mark(&mut self, name: &'static str, b: [f32; 4]) {
        if let Some(v) = &mut self.boxes {
            v.push((name, b));
        }
    }

    fn show(&mut self, font: Font, size: f32, x: f32, y: f32, s: &str) {
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

    /// One line of a short text of bounded length (codes, amounts, fixed wording).
    fn text(&mut self, name: &'static str, font: Font, size: f32, x: f32, y: f32, s: &str) {
        if self.boxes.is_some() {
            let w = font.width(s, size);
            self.mark(name, [x, y - DESCENT * size, x + w, y + ASCENT * size]);
        }
        self.show(font, size, x, y, s);
    }

    /// Text fitted into a box `width` wide starting with its first baseline at `y`; returns the
    /// baseline after it. Its recorded box is the width given and the lines used (at most
    /// `max_lines`) at the size used.
    #[allow(clippy::too_many_arguments)]
    fn boxed(
        &mut self,
        name: &'static str,
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
        if self.boxes.is_some() {
            let lines = f.lines.len().clamp(1, max_lines.max(1)) as f32;
            let bottom = y - (lines - 1.0) * lead - DESCENT * f.size;
            self.mark(name, [x, bottom, x + width, y + ASCENT * f.size]);
        }
        let mut y = y;
        for line in &f.lines {
            self.show(font, f.size, x, y, line);
            y -= lead;
        }
        // A shrunk text still leaves room for a next line at the size asked for.
        y + lead - lead.max((ASCENT + DESCENT) * size)
    }

    fn label(&mut self, x: f32, y: f32, s: &str) {
        self.c.set_fill_gray(0.35);
        self.text("label", Font::Bold, 7.0, x, y, s);
        self.c.set_fill_gray(0.0);
    }

    fn rule(&mut self, y: f32) {
        self.mark("rule", [LEFT - 0.25, y - 0.25, RIGHT + 0.25, y + 0.25]);
        self.c
            .set_line_width(0.5)
            .move_to(LEFT, y)
            .line_to(RIGHT, y)
            .stroke();
    }

    /// A slip's frame, `top` to `bottom` across the page.
    fn frame(&mut self, bottom: f32, top: f32) {
        let w = 0.4;
        self.mark("frame", [LEFT - w, top - w, RIGHT + w, top + w]);
        self.mark("frame", [LEFT - w, bottom - w, RIGHT + w, bottom + w]);
        self.mark("frame", [LEFT - w, bottom + w, LEFT + w, top - w]);
        self.mark("frame", [RIGHT - w, bottom + w, RIGHT + w, top - w]);
        self.c
            .set_line_width(0.8)
            .rect(LEFT, bottom, RIGHT - LEFT, top - bottom)
            .stroke();
    }

    /// Dark modules (`n` × `n`, row by row) as filled squares, runs of a row merged into one
    /// rectangle, in a module-sized coordinate system (small integers keep the stream short).
    fn modules(&mut self, modules: &[bool], n: usize, x: f32, y: f32, side: f32) {
        if n == 0 {
            return;
        }
        let m = side / n as f32;
        self.c
            .save_state()
            .transform([m, 0.0, 0.0, m, x, y])
            .set_fill_gray(0.0);
        for (row, cells) in modules.chunks(n).enumerate() {
            let bottom = (n - row - 1) as f32;
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
                self.c.rect(start as f32, bottom, (col - start) as f32, 1.0);
            }
        }
        self.c.fill_nonzero().restore_state();
    }

    fn qr(&mut self, modules: &[bool], x: f32, y: f32) {
        let q = QR_QUIET;
        self.mark("qr", [x - q, y - q, x + QR_SIDE + q, y + QR_SIDE + q]);
        self.modules(modules, QR_MODULES, x, y, QR_SIDE);
    }

    fn datamatrix(&mut self, dm: Option<&Matrix>, x: f32, y: f32) {
        let q = DM_QUIET;
        self.mark(
            "datamatrix",
            [x - q, y - q, x + DM_SIDE + q, y + DM_SIDE + q],
        );
        if let Some(dm) = dm {
            self.modules(&dm.modules, dm.side, x, y, DM_SIDE);
        }
    }

    /// The logo scaled into `LOGO_BOX` from its top-left corner; returns its width and height.
    fn logo(&mut self, logo: &Logo, x: f32, top: f32) -> (f32, f32) {
        let (lw, lh) = (logo.width() as f32, logo.height() as f32);
        let scale = (LOGO_BOX.0 / lw).min(LOGO_BOX.1 / lh);
        let (w, h) = (lw * scale, lh * scale);
        self.mark("logo", [x, top - h, x + w, top]);
        self.c
            .save_state()
            .transform([w, 0.0, 0.0, h, x, top - h])
            .x_object(LOGO)
            .restore_state();
        (w, h)
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
const POSTE_NOTE: &str = "Bollettino postale PA: paga in Posta, in Ricevitoria, dal Tabaccaio, \
sul sito e con le app di Poste Italiane, inquadrando il codice qui accanto.";

/// Where the bank slip's rows sit, below its top `t`.
struct BankRows {
    top: f32,
    bottom: f32,
    qr_y: f32,
    dest: f32,
    entity: f32,
    subject: f32,
    codes: f32,
}

/// Without the Poste slip: the bank slip as it always was, 250 pt tall.
const BANK_ALONE: BankRows = BankRows {
    top: 310.0,
    bottom: 60.0,
    qr_y: QR_AT.1,
    dest: 240.0,
    entity: 212.0,
    subject: 176.0,
    codes: 132.0,
};

/// With the Poste slip below it: the same rows, closer.
const BANK_WITH_POSTE: BankRows = BankRows {
    top: 484.0,
    bottom: 296.0,
    qr_y: 484.0 - 58.0 - QR_SIDE,
    dest: 484.0 - 64.0,
    entity: 484.0 - 92.0,
    subject: 484.0 - 126.0,
    codes: 484.0 - 162.0,
};

/// Top of the Poste slip.
const POSTE_TOP: f32 = 284.0;
const POSTE_BOTTOM: f32 = 56.0;

pub(super) fn page(notice: &Notice, qr: &[bool], dm: Option<&Matrix>) -> Vec<u8> {
    let mut k = Canvas {
        c: Content::new(),
        boxes: None,
    };
    draw(&mut k, notice, qr, dm);
    let content = k.c.finish();
    let (catalog, tree, page, body, f1, f2, im, mask) = (
        Ref::new(1),
        Ref::new(2),
        Ref::new(3),
        Ref::new(4),
        Ref::new(5),
        Ref::new(6),
        Ref::new(7),
        Ref::new(8),
    );
    let logo = notice.creditor.logo.as_deref();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    {
        let mut pg = pdf.page(page);
        pg.parent(tree)
            .media_box(Rect::new(0.0, 0.0, A4.0, A4.1))
            .contents(body);
        let mut res = pg.resources();
        res.fonts().pair(REGULAR, f1).pair(BOLD, f2);
        if logo.is_some() {
            res.x_objects().pair(LOGO, im);
        }
    }
    pdf.stream(body, content.as_slice());
    for (id, base) in [(f1, Name(b"Helvetica")), (f2, Name(b"Helvetica-Bold"))] {
        pdf.type1_font(id)
            .base_font(base)
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    if let Some(logo) = logo {
        // The streams were compressed once, when the logo was loaded.
        let (w, h) = (logo.width() as i32, logo.height() as i32);
        let mut image = pdf.image_xobject(im, &logo.rgb);
        image.filter(Filter::FlateDecode);
        image.width(w).height(h);
        image.color_space().device_rgb();
        image.bits_per_component(8);
        if logo.alpha.is_some() {
            image.s_mask(mask);
        }
        drop(image);
        if let Some(alpha) = &logo.alpha {
            let mut m = pdf.image_xobject(mask, alpha);
            m.filter(Filter::FlateDecode);
            m.width(w).height(h);
            m.color_space().device_gray();
            m.bits_per_component(8);
        }
    }
    pdf.finish()
}

/// Every drawn item's box, as `page` draws them.
pub(super) fn boxes(notice: &Notice) -> Vec<(&'static str, [f32; 4])> {
    let mut k = Canvas {
        c: Content::new(),
        boxes: Some(Vec::new()),
    };
    draw(&mut k, notice, &[], None);
    k.boxes.unwrap_or_default()
}

fn draw(k: &mut Canvas, notice: &Notice, qr: &[bool], dm: Option<&Matrix>) {
    let p = Printed::of(notice);
    let due = match &p.due {
        Some(d) => format!("entro il {d}"),
        None => "senza scadenza".to_string(),
    };

    // Header: title and subject on the left, the entity on the right, after its logo.
    k.text(
        "title",
        Font::Bold,
        18.0,
        LEFT,
        800.0,
        "AVVISO DI PAGAMENTO",
    );
    k.boxed(
        "subject",
        Font::Bold,
        11.0,
        LEFT,
        778.0,
        250.0,
        3,
        &p.subject,
    );
    let logo = notice
        .creditor
        .logo
        .as_deref()
        .map(|l| k.logo(l, COL2, LOGO_TOP));
    let name_x = logo.map_or(COL2, |(w, _)| COL2 + w + 8.0);
    let mut y = k.boxed(
        "entity_name",
        Font::Bold,
        10.0,
        name_x,
        800.0,
        RIGHT - name_x,
        3,
        &p.entity_name,
    );
    if let Some((_, h)) = logo {
        // The lines after the name go under the logo, across the column.
        y = y.min(LOGO_TOP - h - 9.0);
    }
    for line in [&p.sector, &p.info].into_iter().flatten() {
        y = k.boxed(
            "entity_line",
            Font::Regular,
            8.0,
            COL2,
            y,
            RIGHT - COL2,
            1,
            line,
        );
    }
    k.boxed(
        "entity_cf",
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
        "creditor_name",
        Font::Bold,
        10.0,
        LEFT,
        694.0,
        COL2 - LEFT - 18.0,
        2,
        &p.entity_name,
    );
    k.text(
        "creditor_cf",
        Font::Regular,
        9.0,
        LEFT,
        y - 2.0,
        &format!("Codice Fiscale {}", p.entity_cf),
    );
    k.label(COL2, 708.0, "DESTINATARIO AVVISO");
    let mut y = k.boxed(
        "debtor_name",
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
            "debtor_cf",
            Font::Regular,
            9.0,
            COL2,
            y - 2.0,
            &format!("Codice Fiscale {cf}"),
        );
        y -= 13.0;
    }
    if let Some(a) = &p.debtor_address {
        k.boxed(
            "debtor_address",
            Font::Regular,
            9.0,
            COL2,
            y - 2.0,
            RIGHT - COL2,
            3,
            a,
        );
    }
    k.rule(622.0);

    // How much, by when, where.
    k.label(LEFT, 608.0, "QUANTO E QUANDO PAGARE?");
    k.text(
        "amount",
        Font::Bold,
        20.0,
        LEFT,
        582.0,
        &format!("{} Euro", p.amount),
    );
    k.text("due", Font::Regular, 11.0, LEFT, 564.0, &due);
    k.boxed(
        "static",
        Font::Regular,
        8.0,
        LEFT,
        546.0,
        COL2 - LEFT - 18.0,
        6,
        AMOUNT_NOTE,
    );
    k.label(COL2, 608.0, "DOVE PAGARE?");
    k.text(
        "static",
        Font::Bold,
        9.0,
        COL2,
        590.0,
        "PAGA SUL SITO O CON LE APP",
    );
    let y = k.boxed(
        "static",
        Font::Regular,
        8.0,
        COL2,
        578.0,
        RIGHT - COL2,
        3,
        ONLINE,
    );
    k.text(
        "static",
        Font::Bold,
        9.0,
        COL2,
        y - 6.0,
        "PAGA SUL TERRITORIO",
    );
    k.boxed(
        "static",
        Font::Regular,
        8.0,
        COL2,
        y - 18.0,
        RIGHT - COL2,
        3,
        ON_SITE,
    );
    k.text(
        "static",
        Font::Regular,
        8.0,
        COL2,
        y - 50.0,
        "Lista dei canali di pagamento su www.pagopa.gov.it",
    );

    let rows = match &p.poste {
        None => BANK_ALONE,
        Some(_) => BANK_WITH_POSTE,
    };
    bank_slip(k, &p, &due, qr, &rows);
    if let Some(ps) = &p.poste {
        poste_slip(k, &p, ps, &due, dm);
    }
}

impl Canvas {
    /// A slip's frame from `bottom` to `top`, its title, "RATA UNICA" with the due date, and its
    /// note in at most `note_lines` lines.
    fn slip_head(
        &mut self,
        bottom: f32,
        top: f32,
        title: &str,
        due: &str,
        note: &str,
        note_lines: usize,
    ) {
        self.frame(bottom, top);
        self.text("static", Font::Bold, 10.0, LEFT + 10.0, top - 18.0, title);
        let due = format!("RATA UNICA {due}");
        self.text("due", Font::Bold, 9.0, COL2, top - 18.0, &due);
        let width = RIGHT - LEFT - 20.0;
        self.boxed(
            "static",
            Font::Regular,
            8.0,
            LEFT + 10.0,
            top - 34.0,
            width,
            note_lines,
            note,
        );
    }
}

/// The payment slip for banks and other channels.
fn bank_slip(k: &mut Canvas, p: &Printed, due: &str, qr: &[bool], r: &BankRows) {
    let t = r.top;
    k.slip_head(r.bottom, t, "BANCHE E ALTRI CANALI", due, SLIP_NOTE, 2);
    k.qr(qr, QR_AT.0, r.qr_y);

    let fx = 160.0;
    let wide = 400.0 - fx;
    k.label(fx, r.dest, "Destinatario");
    k.boxed(
        "bank_debtor_name",
        Font::Bold,
        9.0,
        fx,
        r.dest - 11.0,
        wide,
        1,
        &p.debtor_name,
    );
    k.label(420.0, r.dest, "Euro");
    k.text("amount", Font::Bold, 14.0, 420.0, r.dest - 16.0, &p.amount);
    k.label(fx, r.entity, "Ente Creditore");
    k.boxed(
        "bank_entity_name",
        Font::Bold,
        9.0,
        fx,
        r.entity - 11.0,
        wide,
        2,
        &p.entity_name,
    );
    k.label(fx, r.subject, "Oggetto del pagamento");
    k.boxed(
        "bank_subject",
        Font::Regular,
        9.0,
        fx,
        r.subject - 11.0,
        RIGHT - 10.0 - fx,
        2,
        &p.subject,
    );
    if let Some(cbill) = &p.cbill {
        k.label(fx, r.codes, "Codice CBILL");
        k.text("cbill", Font::Bold, 10.0, fx, r.codes - 12.0, cbill);
    }
    k.label(240.0, r.codes, "Codice Avviso");
    k.text("notice", Font::Bold, 10.0, 240.0, r.codes - 12.0, &p.notice);
    k.label(420.0, r.codes, "Cod. Fiscale Ente Creditore");
    k.text(
        "entity_cf",
        Font::Bold,
        10.0,
        420.0,
        r.codes - 12.0,
        &p.entity_cf,
    );
}

/// The Poste slip ("Bollettino Postale PA") with its Data Matrix.
fn poste_slip(k: &mut Canvas, p: &Printed, ps: &PrintedPoste, due: &str, dm: Option<&Matrix>) {
    let t = POSTE_TOP;
    k.slip_head(POSTE_BOTTOM, t, "BOLLETTINO POSTALE PA", due, POSTE_NOTE, 1);
    k.datamatrix(dm, QR_AT.0, t - 58.0 - DM_SIDE);

    let fx = 160.0;
    let wide = RIGHT - 10.0 - fx;
    k.label(fx, t - 58.0, "sul C/C n.");
    k.text("poste_account", Font::Bold, 11.0, fx, t - 71.0, &ps.account);
    k.label(420.0, t - 58.0, "Euro");
    k.text("amount", Font::Bold, 14.0, 420.0, t - 74.0, &p.amount);
    k.label(fx, t - 86.0, "Intestato a");
    k.boxed(
        "poste_holder",
        Font::Bold,
        9.0,
        fx,
        t - 97.0,
        wide,
        1,
        &ps.holder,
    );
    k.label(fx, t - 114.0, "Destinatario");
    k.boxed(
        "poste_debtor_name",
        Font::Bold,
        9.0,
        fx,
        t - 125.0,
        wide,
        1,
        &p.debtor_name,
    );
    k.label(fx, t - 142.0, "Oggetto del pagamento");
    k.boxed(
        "poste_subject",
        Font::Regular,
        9.0,
        fx,
        t - 153.0,
        wide,
        2,
        &p.subject,
    );
    let codes = t - 180.0;
    k.label(fx, codes, "Codice Avviso");
    k.text("notice", Font::Bold, 10.0, fx, codes - 12.0, &p.notice);
    k.label(300.0, codes, "Tipo");
    k.text("poste_type", Font::Bold, 10.0, 300.0, codes - 12.0, "P1");
    k.label(340.0, codes, "Tipo documento");
    k.text("poste_type", Font::Bold, 10.0, 340.0, codes - 12.0, "896");
    k.label(420.0, codes, "Cod. Fiscale Ente Creditore");
    k.text(
        "entity_cf",
        Font::Bold,
        10.0,
        420.0,
        codes - 12.0,
        &p.entity_cf,
    );
    // Poste's authorisation to print the slip, last, across the slip's foot.
    k.boxed(
        "poste_authorisation",
        Font::Regular,
        7.0,
        LEFT + 10.0,
        POSTE_BOTTOM + 10.0,
        RIGHT - LEFT - 20.0,
        1,
        &ps.authorisation,
    );
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

    fn long(mut n: Notice) -> Notice {
        n.subject = "Oggetto lunghissimo ".repeat(15);
        n.debtor.name = "Nome Cognome Àltro ".repeat(11);
        n.creditor.name = "Ente ÀÉ ".repeat(25);
        n.debtor.address = Some("Via Giù ".repeat(40));
        n.creditor.sector = Some("Settore ".repeat(30));
        n.creditor.info = Some("info@ ".repeat(40));
        if let Some(p) = &mut n.poste {
            p.holder = "Intestatario ".repeat(16);
            p.authorisation = "AUT. ".repeat(60);
        }
        n
    }

    fn with_logo(mut n: Notice, w: u32, h: u32) -> Notice {
        let rgb = vec![0u8; (w * h * 3) as usize];
        let png =
            super::super::tests::png_bytes(w, h, png::ColorType::Rgb, png::BitDepth::Eight, &rgb);
        n.creditor.logo = Some(std::sync::Arc::new(Logo::from_png(&png).unwrap()));
        n
    }

    /// Every drawn item has its own room: no two boxes overlap, and all stay inside the page's
    /// margins, whatever the texts, with and without the Poste slip and a logo.
    #[test]
    fn boxes_are_disjoint_and_inside_the_margins() {
        use super::super::tests::{sample, with_poste};
        let mut no_cf = sample();
        no_cf.debtor.fiscal_code = None;
        no_cf.debtor.address = None;
        no_cf.creditor.sector = None;
        for (what, n) in [
            ("sample", sample()),
            ("poste", with_poste()),
            ("long", long(sample())),
            ("long poste", long(with_poste())),
            ("no cf", no_cf),
            ("logo", with_logo(with_poste(), 40, 10)),
            ("tall logo", with_logo(long(with_poste()), 10, 40)),
            ("wide logo", with_logo(long(sample()), 400, 10)),
        ] {
            let b = boxes(&n);
            assert!(b.len() > 40, "{what}");
            for (i, (a, ra)) in b.iter().enumerate() {
                assert!(
                    ra[0] >= LEFT - 1.0 && ra[2] <= RIGHT + 1.0 && ra[1] >= 36.0 && ra[3] <= 820.0,
                    "{what}: {a} {ra:?} outside the margins"
                );
                assert!(ra[0] < ra[2] && ra[1] < ra[3], "{what}: {a} {ra:?}");
                for (c, rc) in &b[i + 1..] {
                    // Boxes may touch (a line's descent is the next line's ascent).
                    let e = 0.01;
                    let overlap = ra[0] + e < rc[2]
                        && rc[0] + e < ra[2]
                        && ra[1] + e < rc[3]
                        && rc[1] + e < ra[3];
                    // A frame's edges meet at the corners.
                    let frames = *a == "frame" && *c == "frame";
                    assert!(frames || !overlap, "{what}: {a} {ra:?} overlaps {c} {rc:?}");
                }
            }
        }
    }

    #[test]
    fn without_poste_the_bank_slip_is_where_it_was() {
        let b = boxes(&super::super::tests::sample());
        let qr = b.iter().find(|(k, _)| *k == "qr").unwrap().1;
        assert!((qr[0] + QR_QUIET - QR_AT.0).abs() < 1e-3);
        assert!((qr[1] + QR_QUIET - QR_AT.1).abs() < 1e-3);
        assert!(!b.iter().any(|(k, _)| *k == "datamatrix"));
        let dm = boxes(&super::super::tests::with_poste());
        assert_eq!(dm.iter().filter(|(k, _)| *k == "datamatrix").count(), 1);
    }

    #[test]
    fn qr_is_25_mm() {
        assert!((QR_SIDE / 72.0 * 25.4 - 25.0).abs() < 1e-3);
    }
}
