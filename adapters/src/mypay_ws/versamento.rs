//! The `Versamento` document of `paaSILImportaDovuto` (`ctVersamento`): one position and its
//! action, read into the fields of an import flow row so it meets the same rules
//! ([`snodo_core::dovuto::validate`]) with the same MyPay codes.
//!
//! The structure is checked as the XSD checks it (root, namespace, order, cardinality); the values
//! are left to the row rules, which name the field and the code.

use snodo_core::dovuto::RawDovuto;

use crate::mypay_push::PAGATI_NS;
use crate::pagopa::xml::{read_document, Node};

/// A `Versamento` read: the row's fields as text, as a CSV row would carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versamento {
    pub tipo_identificativo_univoco: String,
    pub codice_identificativo_univoco: String,
    pub anagrafica_pagatore: String,
    pub indirizzo_pagatore: String,
    pub civico_pagatore: String,
    pub cap_pagatore: String,
    pub localita_pagatore: String,
    pub provincia_pagatore: String,
    pub nazione_pagatore: String,
    pub mail_pagatore: String,
    pub data_esecuzione_pagamento: String,
    pub tipo_versamento: String,
    pub iuv: String,
    pub iud: String,
    pub importo: String,
    pub commissione_carico_pa: String,
    pub tipo_dovuto: String,
    pub causale: String,
    pub dati_specifici_riscossione: String,
    /// `<bilancio>…</bilancio>` as the CSV's column carries it.
    pub bilancio: String,
    pub azione: String,
    /// Whether it named a payer (`soggettoPagatore` is optional in `Versamento`; MyPay refuses
    /// a position without one with its own code).
    pub has_payer: bool,
    /// The secondary beneficiary the call's `listaDovutiEntiSecondari` names, if any.
    pub secondary: Option<EnteSecondario>,
}

/// A `DovutiEntiSecondari` document (`ctDatiVersamentoDovutiEntiSecondari`): the one secondary
/// beneficiary of a position, as the 1_4 import row's `*EnteSecondario` columns carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnteSecondario {
    pub codice_fiscale: String,
    pub denominazione: String,
    pub iban: String,
    pub indirizzo: String,
    pub civico: String,
    pub cap: String,
    pub localita: String,
    pub provincia: String,
    pub nazione: String,
    pub causale: String,
    pub dati_specifici_riscossione: String,
    pub importo: String,
}

impl Versamento {
    /// The fields as an import row; `generate_iuv` is the call's `flagGeneraIuv`.
    pub fn raw(&self, generate_iuv: bool) -> RawDovuto<'_> {
        RawDovuto {
            iud: &self.iud,
            cod_iuv: &self.iuv,
            tipo_identificativo_univoco: &self.tipo_identificativo_univoco,
            codice_identificativo_univoco: &self.codice_identificativo_univoco,
            anagrafica_pagatore: &self.anagrafica_pagatore,
            indirizzo_pagatore: &self.indirizzo_pagatore,
            civico_pagatore: &self.civico_pagatore,
            cap_pagatore: &self.cap_pagatore,
            localita_pagatore: &self.localita_pagatore,
            provincia_pagatore: &self.provincia_pagatore,
            nazione_pagatore: &self.nazione_pagatore,
            mail_pagatore: &self.mail_pagatore,
            data_esecuzione_pagamento: &self.data_esecuzione_pagamento,
            importo_dovuto: &self.importo,
            commissione_carico_pa: &self.commissione_carico_pa,
            tipo_dovuto: &self.tipo_dovuto,
            tipo_versamento: &self.tipo_versamento,
            causale_versamento: &self.causale,
            dati_specifici_riscossione: &self.dati_specifici_riscossione,
            bilancio: &self.bilancio,
            flg_genera_iuv: if generate_iuv { "true" } else { "false" },
            azione: &self.azione,
            ..self.secondary_raw()
        }
    }

    /// The row's secondary-beneficiary columns (all empty without one).
    fn secondary_raw(&self) -> RawDovuto<'_> {
        let Some(s) = &self.secondary else {
            return RawDovuto::default();
        };
        RawDovuto {
            flag_multi_beneficiario: "true",
            codice_fiscale_ente_secondario: &s.codice_fiscale,
            denominazione_ente_secondario: &s.denominazione,
            iban_accredito_ente_secondario: &s.iban,
            indirizzo_ente_secondario: &s.indirizzo,
            civico_ente_secondario: &s.civico,
            cap_ente_secondario: &s.cap,
            localita_ente_secondario: &s.localita,
            provincia_ente_secondario: &s.provincia,
            nazione_ente_secondario: &s.nazione,
            dati_specifici_riscossione_ente_secondario: &s.dati_specifici_riscossione,
            causale_versamento_ente_secondario: &s.causale,
            importo_versamento_ente_secondario: &s.importo,
            ..RawDovuto::default()
        }
    }
}

/// Why a `Versamento` is refused before its values are looked at: the path and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct NotVersamento {
    /// Like `Versamento/datiVersamento/importoSingoloVersamento`.
    pub path: String,
    pub reason: String,
}

fn fail(path: &str, reason: impl Into<String>) -> NotVersamento {
    NotVersamento {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Children of `node` taken in XSD order: each `take` consumes the next child when it has the
/// expected name, and what is left at the end is an unexpected element.
struct Seq<'a> {
    path: String,
    children: &'a [Node],
    at: usize,
}

impl<'a> Seq<'a> {
    fn of(node: &'a Node, path: String) -> Result<Self, NotVersamento> {
        if !node.text.trim().is_empty() {
            return Err(fail(&path, "holds text where the XSD allows only elements"));
        }
        Ok(Self {
            path,
            children: &node.children,
            at: 0,
        })
    }

    fn next_named(&mut self, name: &str) -> Result<Option<&'a Node>, NotVersamento> {
        match self.children.get(self.at) {
            Some(c) if c.name == name => {
                if c.ns.as_deref() != Some(PAGATI_NS) {
                    return Err(fail(
                        &format!("{}/{name}", self.path),
                        format!("is not in the namespace {PAGATI_NS}"),
                    ));
                }
                self.at += 1;
                Ok(Some(c))
            }
            _ => Ok(None),
        }
    }

    fn optional_text(&mut self, name: &str) -> Result<String, NotVersamento> {
        match self.next_named(name)? {
            None => Ok(String::new()),
            Some(c) if !c.children.is_empty() => Err(fail(
                &format!("{}/{name}", self.path),
                "holds elements where the XSD wants text",
            )),
            Some(c) => Ok(c.text.clone()),
        }
    }

    fn text(&mut self, name: &str) -> Result<String, NotVersamento> {
        match self.children.get(self.at) {
            Some(c) if c.name == name => self.optional_text(name),
            _ => Err(self.missing(name)),
        }
    }

    fn element(&mut self, name: &str) -> Result<&'a Node, NotVersamento> {
        self.next_named(name)?.ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> NotVersamento {
        match self.children.get(self.at) {
            Some(c) => fail(
                &format!("{}/{}", self.path, c.name),
                format!("is not expected here: {name} is required first"),
            ),
            None => fail(&format!("{}/{name}", self.path), "is required"),
        }
    }

    fn end(self) -> Result<(), NotVersamento> {
        match self.children.get(self.at) {
            None => Ok(()),
            Some(c) => Err(fail(
                &format!("{}/{}", self.path, c.name),
                "is not an element of this type, or is out of order or repeated",
            )),
        }
    }
}

/// Reads a `Versamento` document (the decoded `dovuto` field).
pub fn decode(xml: &[u8]) -> Result<Versamento, NotVersamento> {
    let root = read_document(xml).map_err(|e| fail("Versamento", e.to_string()))?;
    if root.name != "Versamento" || root.ns.as_deref() != Some(PAGATI_NS) {
        return Err(fail(
            &root.name,
            format!("the document must be a Versamento of {PAGATI_NS}"),
        ));
    }
    let mut v = Versamento::default();
    let mut seq = Seq::of(&root, "Versamento".into())?;
    let _version = seq.text("versioneOggetto")?;
    if let Some(sp) = seq.next_named("soggettoPagatore")? {
        payer(sp, "Versamento/soggettoPagatore", &mut v)?;
        v.has_payer = true;
    }
    let dv = seq.element("datiVersamento")?;
    let mut d = Seq::of(dv, "Versamento/datiVersamento".into())?;
    v.data_esecuzione_pagamento = d.optional_text("dataEsecuzionePagamento")?;
    v.tipo_versamento = d.optional_text("tipoVersamento")?;
    v.iuv = d.optional_text("identificativoUnivocoVersamento")?;
    v.iud = d.optional_text("identificativoUnivocoDovuto")?;
    v.importo = d.text("importoSingoloVersamento")?;
    v.commissione_carico_pa = d.optional_text("commissioneCaricoPA")?;
    v.tipo_dovuto = d.text("identificativoTipoDovuto")?;
    v.causale = d.text("causaleVersamento")?;
    v.dati_specifici_riscossione = d.text("datiSpecificiRiscossione")?;
    if let Some(b) = d.next_named("bilancio")? {
        let mut out = String::new();
        write_unqualified(b, &mut out);
        v.bilancio = out;
    }
    d.end()?;
    v.azione = seq.text("azione")?;
    seq.end()?;
    Ok(v)
}

/// Reads a `DovutiEntiSecondari` document (the decoded `dovutiEntiSecondari` field).
pub fn decode_secondario(xml: &[u8]) -> Result<EnteSecondario, NotVersamento> {
    let root = read_document(xml).map_err(|e| fail("DovutiEntiSecondari", e.to_string()))?;
    if root.name != "DovutiEntiSecondari" || root.ns.as_deref() != Some(PAGATI_NS) {
        return Err(fail(
            &root.name,
            format!("the document must be a DovutiEntiSecondari of {PAGATI_NS}"),
        ));
    }
    let mut seq = Seq::of(&root, "DovutiEntiSecondari".into())?;
    let _version = seq.text("versioneOggetto")?;
    let dv = seq.element("datiVersamentoEntiSecondari")?;
    seq.end()?;
    let mut d = Seq::of(dv, "DovutiEntiSecondari/datiVersamentoEntiSecondari".into())?;
    let s = EnteSecondario {
        codice_fiscale: d.text("codiceFiscaleBeneficiario")?,
        denominazione: d.text("denominazioneBeneficiario")?,
        iban: d.text("ibanAccreditoBeneficiario")?,
        indirizzo: d.optional_text("indirizzoBeneficiario")?,
        civico: d.optional_text("civicoBeneficiario")?,
        cap: d.optional_text("capBeneficiario")?,
        localita: d.optional_text("localitaBeneficiario")?,
        provincia: d.optional_text("provinciaBeneficiario")?,
        nazione: d.optional_text("nazioneBeneficiario")?,
        causale: d.optional_text("causaleVersamento")?,
        dati_specifici_riscossione: d.text("datiSpecificiRiscossione")?,
        importo: d.text("importoSingoloVersamento")?,
    };
    d.end()?;
    Ok(s)
}

/// Reads a `Dovuti` document (`paaSILInviaDovuti`, a cart's `elementoListaDovuti`): one payer,
/// one to five payments, each read as an insert of its own position (`azione` `I`).
pub fn decode_dovuti(xml: &[u8]) -> Result<Vec<Versamento>, NotVersamento> {
    let root = read_document(xml).map_err(|e| fail("Dovuti", e.to_string()))?;
    if root.name != "Dovuti" || root.ns.as_deref() != Some(PAGATI_NS) {
        return Err(fail(
            &root.name,
            format!("the document must be a Dovuti of {PAGATI_NS}"),
        ));
    }
    let mut base = Versamento::default();
    let mut seq = Seq::of(&root, "Dovuti".into())?;
    let _version = seq.text("versioneOggetto")?;
    let sp = seq.element("soggettoPagatore")?;
    payer(sp, "Dovuti/soggettoPagatore", &mut base)?;
    let dv = seq.element("datiVersamento")?;
    seq.end()?;
    let mut d = Seq::of(dv, "Dovuti/datiVersamento".into())?;
    base.tipo_versamento = d.text("tipoVersamento")?;
    base.iuv = d.optional_text("identificativoUnivocoVersamento")?;
    base.azione = "I".into();
    let mut out = Vec::new();
    while let Some(single) = d.next_named("datiSingoloVersamento")? {
        if out.len() == 5 {
            return Err(fail(
                "Dovuti/datiVersamento/datiSingoloVersamento",
                "occurs more than 5 times",
            ));
        }
        let path = format!(
            "Dovuti/datiVersamento/datiSingoloVersamento[{}]",
            out.len() + 1
        );
        let mut v = base.clone();
        let mut s = Seq::of(single, path.clone())?;
        v.iud = s.text("identificativoUnivocoDovuto")?;
        v.importo = s.text("importoSingoloVersamento")?;
        v.commissione_carico_pa = s.optional_text("commissioneCaricoPA")?;
        v.tipo_dovuto = s.text("identificativoTipoDovuto")?;
        v.causale = s.text("causaleVersamento")?;
        v.dati_specifici_riscossione = s.text("datiSpecificiRiscossione")?;
        if s.next_named("datiMarcaBolloDigitale")?.is_some() {
            return Err(fail(
                &format!("{path}/datiMarcaBolloDigitale"),
                "the digital revenue stamp is not offered by this hub",
            ));
        }
        if let Some(b) = s.next_named("bilancio")? {
            write_unqualified(b, &mut v.bilancio);
        }
        s.end()?;
        out.push(v);
    }
    if out.is_empty() {
        return Err(d.missing("datiSingoloVersamento"));
    }
    d.end()?;
    Ok(out)
}

/// `soggettoPagatore` into `v`.
fn payer(sp: &Node, path: &str, v: &mut Versamento) -> Result<(), NotVersamento> {
    let mut p = Seq::of(sp, path.into())?;
    let id = p.element("identificativoUnivocoPagatore")?;
    let mut i = Seq::of(id, format!("{path}/identificativoUnivocoPagatore"))?;
    v.tipo_identificativo_univoco = i.text("tipoIdentificativoUnivoco")?;
    v.codice_identificativo_univoco = i.text("codiceIdentificativoUnivoco")?;
    i.end()?;
    v.anagrafica_pagatore = p.text("anagraficaPagatore")?;
    v.indirizzo_pagatore = p.optional_text("indirizzoPagatore")?;
    v.civico_pagatore = p.optional_text("civicoPagatore")?;
    v.cap_pagatore = p.optional_text("capPagatore")?;
    v.localita_pagatore = p.optional_text("localitaPagatore")?;
    v.provincia_pagatore = p.optional_text("provinciaPagatore")?;
    v.nazione_pagatore = p.optional_text("nazionePagatore")?;
    v.mail_pagatore = p.optional_text("e-mailPagatore")?;
    p.end()
}

/// A subtree as the CSV's `bilancio` column writes it: names without prefix, text escaped.
fn write_unqualified(node: &Node, out: &mut String) {
    out.push('<');
    out.push_str(&node.name);
    out.push('>');
    if node.children.is_empty() {
        for c in node.text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                c => out.push(c),
            }
        }
    } else {
        for c in &node.children {
            write_unqualified(c, out);
        }
    }
    out.push_str("</");
    out.push_str(&node.name);
    out.push('>');
}
