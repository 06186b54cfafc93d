#!/usr/bin/env python3
"""Generate a realistic MyPay "import dovuti" flow for benchmarks and tests.

Format: adapters/specs/mypay/TRACCIATI.md section 1 (<codIPA>-<IUF>-<versione>, `;`-separated
UTF-8 CSV with a header line, `\\n` line ends, 20/20/21/22/35 columns for 1_0/1_1/1_2/1_3/1_4,
`azione` always last).

    gen_flow.py --entity c_g224 --iuf BENCH001 --rows N [--version 1_4] [--bad-ratio 0.02]
                [--seed 1] [--seed-flow] [--zip] --out DIR
    gen_flow.py --self-check [--entity ... --out DIR ...]

Rows are valid for the demo entities of config/demo.toml (fiscal codes with correct check
characters, P.IVA with correct check digit, debt types and taxonomy codes configured for the
entity, TARI due dates in 2027, ...), except about --bad-ratio of them, each broken in one way
that the import must reject. With --seed-flow a companion flow <entity>-<IUF>SEED-<version> of
ceil(N*0.05) inserts is written too; the main flow then modifies (M, ~3% of N) and annuls
(A, ~2% of N) exactly those positions. Import the seed flow first.

Stdout: one JSON line {"file", "seed_file", "rows", "bad_rows", "expected_rejected_at_least"}.
Stdlib only; the output depends only on the arguments (seeded random.Random).
"""

import argparse
import json
import math
import os
import random
import sys
import unicodedata
import zipfile
import zlib

# --------------------------------------------------------------------------------------------
# Flow layout

HEADER_1_4 = (
    "IUD;codIuv;tipoIdentificativoUnivoco;codiceIdentificativoUnivoco;anagraficaPagatore;"
    "indirizzoPagatore;civicoPagatore;capPagatore;localitaPagatore;provinciaPagatore;"
    "nazionePagatore;mailPagatore;dataEsecuzionePagamento;importoDovuto;commissioneCaricoPa;"
    "tipoDovuto;tipoVersamento;causaleVersamento;datiSpecificiRiscossione;bilancio;flgGeneraIuv;"
    "flagMultiBeneficiario;codiceFiscaleEnteSecondario;denominazioneEnteSecondario;"
    "ibanAccreditoEnteSecondario;indirizzoEnteSecondario;civicoEnteSecondario;capEnteSecondario;"
    "localitaEnteSecondario;provinciaEnteSecondario;nazioneEnteSecondario;"
    "datiSpecificiRiscossioneEnteSecondario;causaleVersamentoEnteSecondario;"
    "importoVersamentoEnteSecondario;azione"
).split(";")
assert len(HEADER_1_4) == 35

# Number of columns per version; the first (count - 1) columns of the 1_4 layout, then azione.
COLUMNS = {"1_0": 20, "1_1": 20, "1_2": 21, "1_3": 22, "1_4": 35}

(C_IUD, C_IUV, C_TIPO_ID, C_COD_ID, C_ANAG, C_IND, C_CIV, C_CAP, C_LOC, C_PROV, C_NAZ, C_MAIL,
 C_DATA, C_IMPORTO, C_COMM, C_TIPO_DOV, C_TIPO_VERS, C_CAUSALE, C_DSR, C_BILANCIO, C_FLG_IUV,
 C_MULTI, C_CF_SEC, C_DEN_SEC, C_IBAN_SEC, C_IND_SEC, C_CIV_SEC, C_CAP_SEC, C_LOC_SEC,
 C_PROV_SEC, C_NAZ_SEC, C_DSR_SEC, C_CAUS_SEC, C_IMP_SEC, C_AZIONE) = range(35)


def header_for(version):
    n = COLUMNS[version]
    return HEADER_1_4[: n - 1] + [HEADER_1_4[C_AZIONE]]


# --------------------------------------------------------------------------------------------
# Identifiers: Italian personal fiscal code, P.IVA, IBAN, IUV

CF_ODD = {}
for _ch, _v in zip("0123456789", (1, 0, 5, 7, 9, 13, 15, 17, 19, 21)):
    CF_ODD[_ch] = _v
for _ch, _v in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                   (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16,
                    10, 22, 25, 24, 23)):
    CF_ODD[_ch] = _v
CF_EVEN = {}
for _i, _ch in enumerate("0123456789"):
    CF_EVEN[_ch] = _i
for _i, _ch in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
    CF_EVEN[_ch] = _i

MONTH_LETTERS = "ABCDEHLMPRST"
OMOCODIA = "LMNPQRSTUV"  # replaces digits 0-9 in omocodic codes
CF_DIGIT_POSITIONS = (6, 7, 9, 10, 12, 13, 14)


def cf_check_char(first15):
    """Official algorithm: odd positions (1-based) through the odd table, even ones as is."""
    s = 0
    for i, ch in enumerate(first15):
        s += CF_ODD[ch] if i % 2 == 0 else CF_EVEN[ch]
    return chr(65 + s % 26)


def _letters(s):
    """Uppercase A-Z only: accents stripped, apostrophes and spaces dropped."""
    s = unicodedata.normalize("NFD", s)
    return "".join(c for c in s.upper() if "A" <= c <= "Z")


def _vowels_consonants(s):
    v = [c for c in s if c in "AEIOU"]
    k = [c for c in s if c not in "AEIOU"]
    return v, k


def cf_surname_code(surname):
    v, k = _vowels_consonants(_letters(surname))
    return ("".join(k + v) + "XXX")[:3]


def cf_name_code(name):
    v, k = _vowels_consonants(_letters(name))
    if len(k) >= 4:
        return k[0] + k[2] + k[3]
    return ("".join(k + v) + "XXX")[:3]


def make_cf(surname, name, year, month, day, female, belfiore, omocodia_level=0):
    day_n = day + 40 if female else day
    body = list("%s%s%02d%s%02d%s" % (cf_surname_code(surname), cf_name_code(name), year % 100,
                                      MONTH_LETTERS[month - 1], day_n, belfiore))
    # Omocodia: digits are replaced by letters starting from the rightmost digit position.
    for pos in CF_DIGIT_POSITIONS[::-1][:omocodia_level]:
        body[pos] = OMOCODIA[int(body[pos])]
    body = "".join(body)
    return body + cf_check_char(body)


def piva_check_digit(first10):
    s = 0
    for i, ch in enumerate(first10):
        d = ord(ch) - 48
        if i % 2 == 1:  # even positions (1-based): doubled, minus 9 if > 9
            d *= 2
            if d > 9:
                d -= 9
        s += d
    return (10 - s % 10) % 10


def make_piva(rng, office):
    body = "%07d%03d" % (rng.randrange(1, 10_000_000), office)
    return body + str(piva_check_digit(body))


def iban_mod97_ok(iban):
    r = iban[4:] + iban[:4]
    digits = "".join(str(int(c, 36)) for c in r)
    return int(digits) % 97 == 1


def iban_it_cin_ok(iban):
    """The Italian CIN (5th character): the fiscal-code tables over ABI+CAB+conto."""
    bban = iban[5:]
    s = 0
    for i, ch in enumerate(bban):
        s += CF_ODD[ch] if i % 2 == 0 else CF_EVEN[ch]
    return chr(65 + s % 26) == iban[4]


IUV_BASE = 10 ** 13


def make_iuv17(segregation, counter):
    """Aux digit 3 IUV: segregation code + 13-digit base + ("3"+code+base) mod 93."""
    head = 3 * 100 * IUV_BASE + int(segregation) * IUV_BASE + counter
    return "%s%013d%02d" % (segregation, counter, head % 93)


# --------------------------------------------------------------------------------------------
# Demo entities (config/demo.toml)

MALE_NAMES = [
    "Marco", "Luca", "Giovanni", "Francesco", "Alessandro", "Andrea", "Matteo", "Lorenzo",
    "Davide", "Stefano", "Paolo", "Giuseppe", "Roberto", "Antonio", "Federico", "Riccardo",
    "Simone", "Nicola", "Filippo", "Gabriele", "Tommaso", "Niccolò", "Mattia", "Alberto",
    "Enrico", "Massimo", "Fabio", "Carlo", "Pietro", "Giacomo", "Michele", "Emanuele",
    "Daniele", "Leonardo", "Edoardo", "Samuele", "Diego", "Elia", "Ivo", "Ugo", "Bruno",
    "Sergio", "Giorgio", "Franco", "Luigi", "Mario", "Angelo", "Renato", "Gianluca", "Jacopo",
]
FEMALE_NAMES = [
    "Giulia", "Francesca", "Chiara", "Sara", "Martina", "Valentina", "Alessia", "Elena",
    "Anna", "Laura", "Silvia", "Federica", "Elisa", "Paola", "Maria", "Giorgia", "Sofia",
    "Aurora", "Alice", "Beatrice", "Emma", "Ginevra", "Greta", "Noemi", "Ilaria", "Marta",
    "Roberta", "Cristina", "Monica", "Barbara", "Daniela", "Lucia", "Rita", "Teresa", "Irene",
    "Caterina", "Benedetta", "Camilla", "Arianna", "Ida", "Eva", "Zoe", "Bianca", "Rosa",
    "Nicoletta", "Lucrezia", "Agnese", "Antonella", "Gloria", "Margherita",
]
SURNAMES = [
    "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino",
    "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa", "Giordano", "Rizzo",
    "Lombardi", "Moretti", "Barbieri", "Fontana", "Santoro", "Mariani", "Rinaldi", "Caruso",
    "Ferrara", "Galli", "Martini", "Leone", "Longo", "Gentile", "Martinelli", "Vitale",
    "Lombardo", "Serra", "Coppola", "De Santis", "D'Angelo", "Marchetti", "Parisi", "Villa",
    "Conte", "Ferraro", "Ferri", "Fabbri", "Bianco", "Marini", "Grasso", "Valentini",
    "Zanetti", "Zanon", "Zorzi", "Pavan", "Scarpa", "Bortolami", "Schiavon", "Carraro",
    "Zambon", "Benetton", "Toffanin", "Boscolo", "Nalesso", "Tonello", "Cecchinato", "Sartori",
    "Basso", "Favaro", "Dalla Costa", "Dal Zotto", "Zanella", "Furlan", "Fabris", "Piovan",
    "Barison", "Ruzza", "Callegaro", "Menegazzo", "Canton", "Varotto", "Boldrin", "Bettio",
    "Niccolò", "Forlì", "Dell'Orto", "Lo", "Xu", "Hu", "Giò", "Ré",
]
BUSINESS_FORMS = ["S.r.l.", "S.p.A.", "s.n.c.", "s.a.s.", "S.r.l.s.", "Soc. Coop."]
BUSINESS_WORDS = [
    "Costruzioni", "Impianti", "Servizi", "Trasporti", "Alimentari", "Ristorazione",
    "Informatica", "Edilizia", "Commercio", "Logistica", "Immobiliare", "Consulenze",
    "Pasticceria", "Ferramenta", "Autofficina", "Farmacia", "Tipografia", "Elettronica",
]
EMAIL_DOMAINS = ["gmail.com", "libero.it", "alice.it", "outlook.it", "virgilio.it", "tiscali.it",
                 "yahoo.it", "hotmail.it", "fastwebnet.it", "tim.it"]
BELFIORE = ["G224"] * 14 + ["A562", "L736", "F205", "H501", "L781", "L840", "L407", "A001",
                            "D325", "C964", "F839", "A944", "L219", "D969", "Z112", "Z129",
                            "Z600"]

PADOVA_STREETS = [
    "Via Roma", "Corso del Popolo", "Via Altinate", "Piazza dei Signori", "Via San Francesco",
    "Riviera dei Ponti Romani", "Via Giovanni Battista Belzoni", "Via Jacopo Facciolati",
    "Via Tiziano Aspetti", "Via Chiesanuova", "Via Bezzecca", "Via Sorio", "Prato della Valle",
    "Via Guizza", "Via dell'Armistizio", "Via Vittorio Veneto", "Via Umberto I",
    "Corso Milano", "Via Cavallotti", "Via Savonarola", "Via Beato Pellegrino", "Via Dante",
    "Via del Santo", "Via Manin", "Corso Garibaldi", "Via Euganea", "Via Piovese",
    "Via Vigonovese", "Via Goito", "Via Nazareth", "Via Forcellini", "Via Tommaseo",
    "Piazza Garibaldi", "Via Marzolo", "Via Gradenigo", "Riviera Tito Livio",
    "Via Niccolò Tommaseo", "Via San Massimo", "Via Pontevigodarzere", "Via Montà",
]
PADOVA_CAPS = ["351%02d" % n for n in range(21, 44)]  # 35121-35143
FELTRE_STREETS = ["Via Campo Giorgio", "Via Mezzaterra", "Via Garibaldi", "Borgo Ruga",
                  "Via Monte Grappa", "Via Belluno", "Viale del Piave", "Via Tezze", "Via Anzù"]
VENEZIA_STREETS = ["Cannaregio", "Castello", "San Marco", "Dorsoduro", "Santa Croce",
                   "Via Piave", "Corso del Popolo", "Via Miranese", "Via Torino", "Viale San Marco"]
VENEZIA_CAPS = ["301%02d" % n for n in range(21, 76)]

MONTHS_IT = ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
             "settembre", "ottobre", "novembre", "dicembre"]
TARI_RATES = [("2027-03-16", 1), ("2027-06-16", 2), ("2027-09-16", 3), ("2027-12-16", 4)]
TARI_RATE_OF = dict(TARI_RATES)
DAYS_2027 = ["2027-%02d-%02d" % (m, d) for m in range(1, 13)
             for d in range(1, (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[m - 1] + 1)]


def _debt(code, taxonomy, due_required, weight, lo, hi, causale):
    return {"code": code, "taxonomy": taxonomy, "due_required": due_required,
            "weight": weight, "lo": lo, "hi": hi, "causale": causale}


ENTITIES = {
    "c_g224": {
        "name": "Comune di Padova", "fiscal_code": "00644060287", "segregation": "01",
        "city": "Padova", "prov": "PD", "caps": PADOVA_CAPS, "streets": PADOVA_STREETS,
        "debt_types": [
            _debt("TARI", "9/0101100IM/", True, 0.7, 1000, 200000, "tari"),
            _debt("MENSA", "9/0107101TS/", False, 0.3, 1000, 40000, "mensa"),
        ],
        "secondary": {
            "fiscal_code": "00133880252", "name": "Comune di Feltre",
            "iban": "IT95O0306911884000100012345", "address": "Piazzetta delle Biade",
            "civic": "1", "cap": "32032", "city": "Feltre", "prov": "BL",
            "taxonomy": "9/0101100IM/", "causale": "Quota TARI Comune di Feltre",
        },
    },
    "c_d530": {
        "name": "Comune di Feltre", "fiscal_code": "00133880252", "segregation": "02",
        "city": "Feltre", "prov": "BL", "caps": ["32032"], "streets": FELTRE_STREETS,
        "debt_types": [
            _debt("TARI", "9/0101100IM/", True, 0.8, 1000, 200000, "tari"),
            _debt("COSAP", "9/0101107TS/", False, 0.2, 1000, 150000, "cosap"),
        ],
        "secondary": {
            "fiscal_code": "00644060287", "name": "Comune di Padova",
            "iban": "IT60X0542811101000000123456", "address": "Via del Municipio",
            "civic": "1", "cap": "35122", "city": "Padova", "prov": "PD",
            "taxonomy": "9/0101100IM/", "causale": "Quota TARI Comune di Padova",
        },
    },
    "r_veneto": {
        "name": "Regione del Veneto", "fiscal_code": "80007580279", "segregation": "03",
        "city": "Venezia", "prov": "VE", "caps": VENEZIA_CAPS, "streets": VENEZIA_STREETS,
        "debt_types": [
            _debt("DIRITTI_APE", "9/0301104TS/", True, 0.6, 1000, 10000, "ape"),
            _debt("SANZIONI", "9/0301114SA/", False, 0.4, 2500, 200000, "sanzioni"),
        ],
        "secondary": None,
    },
}


# --------------------------------------------------------------------------------------------
# Payers


def _ascii_local(s):
    return _letters(s).lower()


def build_payers(rng, profile, count):
    """A pool of payers: (fields 2..11 as a list, display name, F/G, code)."""
    payers = []
    seen_cf = set()
    city, prov = profile["city"], profile["prov"]
    caps, streets = profile["caps"], profile["streets"]
    for i in range(count):
        street = rng.choice(streets)
        r = rng.random()
        civic = str(rng.randint(1, 220))
        if r < 0.08:
            civic += "/" + "ABCD"[rng.randrange(4)]
        elif r < 0.10:
            civic += " int. %d" % rng.randint(1, 12)
        cap = rng.choice(caps)
        if rng.random() < 0.10:
            # Type G: a company with a P.IVA (office code 028 = Padova, or another province).
            surname = rng.choice(SURNAMES)
            name = "%s %s %s" % (surname, rng.choice(BUSINESS_WORDS), rng.choice(BUSINESS_FORMS))
            office = 28 if rng.random() < 0.7 else rng.choice((1, 15, 27, 29, 58, 63, 96, 120))
            code = make_piva(rng, office)
            kind = "G"
            mail = "info@%s%s.it" % (_ascii_local(surname), _ascii_local(name.split()[1]))
            if rng.random() < 0.3:
                mail = "%s@pec.it" % _ascii_local(surname + name.split()[1] + code[-3:])
        else:
            female = rng.random() < 0.5
            first = rng.choice(FEMALE_NAMES if female else MALE_NAMES)
            if rng.random() < 0.06:  # a second given name
                first += " " + rng.choice(FEMALE_NAMES if female else MALE_NAMES)
            surname = rng.choice(SURNAMES)
            year = rng.randint(1935, 2006)
            month = rng.randint(1, 12)
            day = rng.randint(1, (31, 29 if year % 4 == 0 else 28, 31, 30, 31, 30, 31, 31, 30,
                                  31, 30, 31)[month - 1])
            belfiore = rng.choice(BELFIORE)
            # A few omocodic codes, as in the real population.
            level = 1 if rng.random() < 0.003 else 0
            code = make_cf(surname, first, year, month, day, female, belfiore, level)
            while code in seen_cf and level < 7:  # omocodia, as the Agenzia would do
                level += 1
                code = make_cf(surname, first, year, month, day, female, belfiore, level)
            seen_cf.add(code)
            name = "%s %s" % (first, surname)
            kind = "F"
            sep = rng.choice((".", "_", ""))
            mail = "%s%s%s%s@%s" % (_ascii_local(first.split()[0]), sep, _ascii_local(surname),
                                    rng.choice(("", "", str(year % 100), str(rng.randint(1, 99)))),
                                    rng.choice(EMAIL_DOMAINS))
        if rng.random() < 0.12:
            mail = ""
        fields = [kind, code, name, street, civic, cap, city, prov, "IT", mail]
        payers.append((fields, name, kind, code))
    return payers


# --------------------------------------------------------------------------------------------
# Rows

def fmt_amount(cents):
    return "%d.%02d" % divmod(cents, 100)


BAD_KINDS = ["cf_check", "amount", "tipo_dovuto", "past_due", "dup_iud", "azione", "few_cols"]


class Generator:
    def __init__(self, rng, profile, version, iuf):
        self.rng = rng
        self.rnd = rng.random
        self.p = profile
        self.version = version
        self.ncols = COLUMNS[version]
        self.v12 = version in ("1_2", "1_3", "1_4")
        self.v13 = version in ("1_3", "1_4")
        self.v14 = version == "1_4"
        self.debt_types = profile["debt_types"]
        self.cum_weights = []
        acc = 0.0
        for d in self.debt_types:
            acc += d["weight"]
            self.cum_weights.append(acc)
        self.due_debt = next(d["code"] for d in self.debt_types if d["due_required"])
        self.payers = []
        self.f_payers = []
        # Entity-supplied IUVs: counters far above the ones the hub generates, keyed by the IUF
        # so different flows do not collide.
        self.iuv_prefix = (zlib.crc32(iuf.encode()) % 9000 + 1000) * 10 ** 8
        self.iuv_counter = 0
        self.empty = [""] * 35
        if self.v14:
            self.empty[C_MULTI] = "false"

    def set_payers(self, payers):
        self.payers = payers
        self.f_payers = [p for p in payers if p[2] == "F"] or payers

    def pick_debt(self, force=None):
        if force is not None:
            for d in self.debt_types:
                if d["code"] == force:
                    return d
        r = self.rnd() * self.cum_weights[-1]
        for d, w in zip(self.debt_types, self.cum_weights):
            if r < w:
                return d
        return self.debt_types[-1]

    def causale(self, debt, name, date):
        kind = debt["causale"]
        if kind == "tari":
            rata = TARI_RATE_OF.get(date, 1)
            return "TARI 2027 rata %d - %s" % (rata, name)
        if kind == "mensa":
            m = int(date[5:7]) if date else 1 + int(self.rnd() * 12)
            return "MENSA %s 2027 refezione scolastica - %s" % (MONTHS_IT[(m - 2) % 12], name)
        if kind == "cosap":
            return "COSAP 2027 occupazione suolo pubblico - %s" % name
        if kind == "ape":
            return "Diritti APE 2027 pratica %d - %s" % (100000 + int(self.rnd() * 900000), name)
        return "Sanzione amministrativa verbale %d/2027 - %s" % (1 + int(self.rnd() * 99999), name)

    def set_amount(self, f, cents):
        """Sets importoDovuto and keeps the amounts that depend on it consistent."""
        f[C_IMPORTO] = fmt_amount(cents)
        if f[C_MULTI] == "true":
            sec = max(100, int(cents * (0.05 + self.rnd() * 0.25)))
            if sec >= cents:
                sec = cents - 1
            f[C_IMP_SEC] = fmt_amount(sec)
        if f[C_BILANCIO]:
            a = max(1, int(cents * (0.3 + self.rnd() * 0.4)))
            if a >= cents:
                a = cents // 2 or 1
            if cents - a > 0:
                f[C_BILANCIO] = (
                    "<bilancio><capitolo><codCapitolo>1010</codCapitolo><codUfficio>TRIB</codUfficio>"
                    "<accertamento><codAccertamento>2027/%d</codAccertamento><importo>%s</importo>"
                    "</accertamento><accertamento><codAccertamento>2027/%d</codAccertamento>"
                    "<importo>%s</importo></accertamento></capitolo></bilancio>"
                    % (100 + cents % 900, fmt_amount(a), 1000 + cents % 9000, fmt_amount(cents - a)))
            else:
                f[C_BILANCIO] = (
                    "<bilancio><capitolo><codCapitolo>1010</codCapitolo><codUfficio>TRIB</codUfficio>"
                    "<accertamento><codAccertamento>2027/1</codAccertamento><importo>%s</importo>"
                    "</accertamento></capitolo></bilancio>" % fmt_amount(cents))

    def good(self, iud, azione="I", force_debt=None, force_f=False, allow_multi=True):
        """A valid row in the 1_4 layout (35 fields); cut to the version when written."""
        rnd = self.rnd
        f = self.empty[:]
        f[C_IUD] = iud
        pool = self.f_payers if force_f else self.payers
        payer = pool[int(rnd() * len(pool))]
        f[C_TIPO_ID:C_MAIL + 1] = payer[0]
        multi = allow_multi and self.v14 and self.p["secondary"] is not None and rnd() < 0.05
        if force_debt is None and (multi or payer[2] == "G"):
            force_debt = "TARI"  # companies pay waste tax, not school meals
        debt = self.pick_debt(force_debt)
        if debt["causale"] == "tari":
            date, _ = TARI_RATES[int(rnd() * 4)]
        elif debt["due_required"] or not self.v12 or rnd() < 0.85:
            date = DAYS_2027[int(rnd() * 365)]
        else:
            date = ""
        f[C_DATA] = date
        f[C_TIPO_DOV] = debt["code"]
        f[C_TIPO_VERS] = "ALL" if rnd() < 0.3 else ""
        f[C_CAUSALE] = self.causale(debt, payer[1], date)
        f[C_DSR] = debt["taxonomy"]
        r = rnd()
        if r < 0.04:
            # An IUV chosen by the entity (aux digit 3, the entity's segregation code).
            self.iuv_counter += 1
            f[C_IUV] = make_iuv17(self.p["segregation"], self.iuv_prefix + self.iuv_counter)
            if self.v13:
                f[C_FLG_IUV] = "false"
        elif self.v13:
            f[C_FLG_IUV] = "true" if r < 0.94 else ("false" if r < 0.97 else "")
        if multi:
            s = self.p["secondary"]
            f[C_MULTI] = "true"
            f[C_CF_SEC] = s["fiscal_code"]
            f[C_DEN_SEC] = s["name"]
            f[C_IBAN_SEC] = s["iban"]
            f[C_IND_SEC] = s["address"]
            f[C_CIV_SEC] = s["civic"]
            f[C_CAP_SEC] = s["cap"]
            f[C_LOC_SEC] = s["city"]
            f[C_PROV_SEC] = s["prov"]
            f[C_NAZ_SEC] = "IT"
            f[C_DSR_SEC] = s["taxonomy"]
            f[C_CAUS_SEC] = s["causale"]
        elif self.v14 and rnd() < 0.2:
            f[C_MULTI] = ""
        if self.v12 and not multi and rnd() < 0.02:
            f[C_BILANCIO] = "x"  # filled by set_amount
        self.set_amount(f, debt["lo"] + int(rnd() * (debt["hi"] - debt["lo"] + 1)))
        f[C_AZIONE] = azione
        return f

    def modified(self, seed_row):
        f = list(seed_row)
        old = int(f[C_IMPORTO].replace(".", ""))
        debt = self.pick_debt(f[C_TIPO_DOV])
        new = old
        while new == old:
            new = debt["lo"] + int(self.rnd() * (debt["hi"] - debt["lo"] + 1))
        self.set_amount(f, new)
        f[C_AZIONE] = "M"
        return f

    def annulled(self, seed_row):
        f = list(seed_row)
        f[C_AZIONE] = "A"
        return f

    def bad(self, kind, iud, earlier_iud):
        """A row the import must reject, broken in one way (`kind`)."""
        rng = self.rng
        if kind == "dup_iud" and earlier_iud is None:
            kind = "azione"
        if kind == "cf_check":
            f = self.good(iud, force_f=True)
            cf = f[C_COD_ID]
            wrong = chr(65 + (ord(cf[15]) - 65 + rng.randint(1, 25)) % 26)
            f[C_COD_ID] = cf[:15] + wrong
        elif kind == "amount":
            f = self.good(iud, allow_multi=False)
            f[C_IMPORTO] = rng.choice(("0", "12,50", "abc"))
            f[C_BILANCIO] = ""
        elif kind == "tipo_dovuto":
            f = self.good(iud)
            f[C_TIPO_DOV] = "NOPE"
        elif kind == "past_due":
            # A debt type whose due date is mandatory and must not be in the past (TARI).
            f = self.good(iud, force_debt=self.due_debt, allow_multi=False)
            f[C_DATA] = "2020-01-01"
        elif kind == "dup_iud":
            f = self.good(earlier_iud)
        elif kind == "azione":
            f = self.good(iud, azione="X")
        elif kind == "few_cols":
            f = self.good(iud)
        else:
            raise ValueError(kind)
        line = self.line(f)
        if kind == "few_cols":
            parts = line.split(";")
            line = ";".join(parts[: len(parts) - rng.randint(1, min(5, len(parts) - 1))])
        return line

    def line(self, f):
        if self.ncols == 35:
            return ";".join(f)
        return ";".join(f[: self.ncols - 1]) + ";" + f[C_AZIONE]


# --------------------------------------------------------------------------------------------
# Output


class FlowWriter:
    """Writes `<stem>.csv`, or `<stem>.zip` holding `<stem>.csv`, via a temporary name so a
    watched inbox never sees a half-written flow."""

    def __init__(self, out_dir, stem, zipped, level):
        self.stem = stem
        self.path = os.path.join(out_dir, stem + (".zip" if zipped else ".csv"))
        self.tmp = os.path.join(out_dir, "." + stem + ".part")
        self.zf = None
        if zipped:
            self.zf = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=level)
            self.fh = self.zf.open(stem + ".csv", "w", force_zip64=True)
        else:
            self.fh = open(self.tmp, "wb")

    def write_lines(self, lines):
        if lines:
            self.fh.write(("\n".join(lines) + "\n").encode("utf-8"))

    def close(self):
        self.fh.close()
        if self.zf is not None:
            self.zf.close()
        os.replace(self.tmp, self.path)
        return os.path.abspath(self.path)


CHUNK = 20000


def generate(args):
    profile = ENTITIES[args.entity]
    rng = random.Random(args.seed)
    n = args.rows
    gen = Generator(rng, profile, args.version, args.iuf)
    gen.set_payers(build_payers(rng, profile, max(1, min(n, 50000))))
    header = ";".join(header_for(args.version))

    seed_rows = []
    seed_path = None
    if args.seed_flow:
        seed_n = math.ceil(n * 0.05)
        seed_iuf = args.iuf + "SEED"
        w = FlowWriter(args.out, "%s-%s-%s" % (args.entity, seed_iuf, args.version), args.zip,
                       args.zip_level)
        w.write_lines([header])
        chunk = []
        for k in range(1, seed_n + 1):
            f = gen.good("%s-%d" % (seed_iuf, k))
            seed_rows.append(f)
            chunk.append(gen.line(f))
            if len(chunk) >= CHUNK:
                w.write_lines(chunk)
                chunk = []
        w.write_lines(chunk)
        seed_path = w.close()
        rng.shuffle(seed_rows)

    n_bad = min(n, int(round(n * args.bad_ratio)))
    n_good = n - n_bad
    n_mod = n_ann = 0
    if seed_rows:
        n_mod = min(n_good, int(round(len(seed_rows) * 0.6)))
        n_ann = min(n_good - n_mod, len(seed_rows) - n_mod)
    n_ins = n_good - n_mod - n_ann
    kinds = bytearray(b"I" * n_ins + b"M" * n_mod + b"A" * n_ann + b"B" * n_bad)
    rng.shuffle(kinds)
    bad_order = []

    I, M, A = ord("I"), ord("M"), ord("A")
    iuf = args.iuf
    w = FlowWriter(args.out, "%s-%s-%s" % (args.entity, iuf, args.version), args.zip,
                   args.zip_level)
    w.write_lines([header])
    chunk = []
    seed_next = 0
    good, line = gen.good, gen.line
    stats = {"I": 0, "M": 0, "A": 0}
    bad_stats = {}
    for i in range(n):
        k = kinds[i]
        iud = "%s-%d" % (iuf, i + 1)
        if k == I:
            chunk.append(line(good(iud)))
            stats["I"] += 1
        elif k == M:
            chunk.append(line(gen.modified(seed_rows[seed_next])))
            seed_next += 1
            stats["M"] += 1
        elif k == A:
            chunk.append(line(gen.annulled(seed_rows[seed_next])))
            seed_next += 1
            stats["A"] += 1
        else:
            if not bad_order:
                bad_order = BAD_KINDS[:]
                rng.shuffle(bad_order)
            kind = bad_order.pop()
            earlier = None
            if kind == "dup_iud" and i > 0:
                for _ in range(30):
                    j = int(rng.random() * i)
                    if kinds[j] == I:
                        earlier = "%s-%d" % (iuf, j + 1)
                        break
            if kind == "dup_iud" and earlier is None:
                kind = "azione"
            bad_stats[kind] = bad_stats.get(kind, 0) + 1
            chunk.append(gen.bad(kind, iud, earlier))
        if len(chunk) >= CHUNK:
            w.write_lines(chunk)
            chunk = []
    w.write_lines(chunk)
    path = w.close()
    if args.verbose:
        print("actions %s, bad rows by kind %s, seed rows %d" % (stats, bad_stats, len(seed_rows)),
              file=sys.stderr)
    return {"file": path, "seed_file": seed_path, "rows": n, "bad_rows": n_bad,
            "expected_rejected_at_least": n_bad}


# --------------------------------------------------------------------------------------------
# Self-check: an independent re-implementation of the checks, run over generated data.

# The odd-position table written out the way the Agenzia delle Entrate publishes it.
_ODD_PUBLISHED = {
    "0": 1, "1": 0, "2": 5, "3": 7, "4": 9, "5": 13, "6": 15, "7": 17, "8": 19, "9": 21,
    "A": 1, "B": 0, "C": 5, "D": 7, "E": 9, "F": 13, "G": 15, "H": 17, "I": 19, "J": 21,
    "K": 2, "L": 4, "M": 18, "N": 20, "O": 11, "P": 3, "Q": 6, "R": 8, "S": 12, "T": 14,
    "U": 16, "V": 10, "W": 22, "X": 25, "Y": 24, "Z": 23,
}


def _cf_ok(cf):
    import re
    if not re.fullmatch(r"[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}"
                        r"[A-Z][0-9LMNPQRSTUV]{3}[A-Z]", cf):
        return False
    total = 0
    for pos, ch in enumerate(cf[:15], start=1):
        if pos % 2 == 1:
            total += _ODD_PUBLISHED[ch]
        else:
            total += int(ch) if ch.isdigit() else ord(ch) - ord("A")
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[total % 26] == cf[15]


def _piva_ok(p):
    if len(p) != 11 or not p.isdigit():
        return False
    x = sum(int(p[i]) for i in range(0, 10, 2))
    y = 0
    for i in range(1, 10, 2):
        d = int(p[i]) * 2
        y += d - 9 if d > 9 else d
    return (10 - (x + y) % 10) % 10 == int(p[10])


def _row_problems(cols, version, profile, today="2026-11-26"):
    """The rules of TRACCIATI.md section 1 that the generator relies on; [] when valid."""
    import re
    errs = []
    if len(cols) != COLUMNS[version]:
        return ["columns %d" % len(cols)]
    az = cols[-1]
    f = cols[:-1] + [""] * (34 - (len(cols) - 1)) + [az]
    debts = {d["code"]: d for d in profile["debt_types"]}
    if az not in ("I", "M", "A"):
        errs.append("azione")
    if not f[C_IUD] or len(f[C_IUD]) > 35 or f[C_IUD].startswith("000"):
        errs.append("iud")
    if f[C_IUV]:
        v = f[C_IUV]
        head = int("3" + v[:15])
        if len(v) != 17 or not v.startswith(profile["segregation"]) or head % 93 != int(v[15:]):
            errs.append("iuv")
    if f[C_TIPO_ID] == "F":
        if not _cf_ok(f[C_COD_ID]):
            errs.append("cf")
    elif f[C_TIPO_ID] == "G":
        if not (_piva_ok(f[C_COD_ID]) or (len(f[C_COD_ID]) == 16 and _cf_ok(f[C_COD_ID]))):
            errs.append("piva")
    else:
        errs.append("tipo_id")
    if not f[C_ANAG] or len(f[C_ANAG]) > 70:
        errs.append("anagrafica")
    if f[C_CAP] and not re.fullmatch(r"\d{5}", f[C_CAP]):
        errs.append("cap")
    if f[C_MAIL] and not re.fullmatch(r"[^@\s]+@[^@\s.][^@\s]*\.[^@\s]*[^@\s.]", f[C_MAIL]):
        errs.append("mail")
    debt = debts.get(f[C_TIPO_DOV])
    if debt is None:
        errs.append("tipo_dovuto")
    date = f[C_DATA]
    if date:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
            errs.append("date")
        elif debt and debt["due_required"] and date < today and az != "A":
            errs.append("past_due")
    elif version in ("1_0", "1_1") or (debt and debt["due_required"]):
        errs.append("date_missing")
    m = re.fullmatch(r"(\d{1,12})\.(\d{2})", f[C_IMPORTO])
    cents = int(m.group(1)) * 100 + int(m.group(2)) if m else 0
    if cents <= 0:
        errs.append("importo")
    if f[C_TIPO_VERS] not in ("", "ALL"):
        errs.append("tipo_vers")
    if not f[C_CAUSALE]:
        errs.append("causale")
    if not re.fullmatch(r"[0129]/\S{3,138}", f[C_DSR]) or (debt and f[C_DSR] != debt["taxonomy"]):
        errs.append("dsr")
    if f[C_BILANCIO]:
        s = sum(int(a.replace(".", "")) for a in re.findall(r"<importo>([^<]*)</importo>",
                                                             f[C_BILANCIO]))
        if s != cents:
            errs.append("bilancio")
    if f[C_FLG_IUV] not in ("", "true", "false"):
        errs.append("flg_iuv")
    if f[C_FLG_IUV] == "true" and f[C_IUV] and az == "I":
        errs.append("flg_iuv_with_iuv")
    if f[C_MULTI] not in ("", "true", "false"):
        errs.append("multi")
    if f[C_MULTI] == "true":
        iban = f[C_IBAN_SEC]
        if not (_piva_ok(f[C_CF_SEC]) and f[C_DEN_SEC] and iban_mod97_ok(iban)
                and iban_it_cin_ok(iban) and f[C_DSR_SEC].startswith("9/")):
            errs.append("secondary")
        m2 = re.fullmatch(r"(\d{1,12})\.(\d{2})", f[C_IMP_SEC])
        sec = int(m2.group(1)) * 100 + int(m2.group(2)) if m2 else 0
        if not 0 < sec < cents:
            errs.append("secondary_amount")
    return errs


def _read_flow(path):
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            stem = os.path.basename(path)[:-4]
            assert names == [stem + ".csv"], names
            data = z.read(names[0])
    else:
        with open(path, "rb") as fh:
            data = fh.read()
    text = data.decode("utf-8")
    assert "\r" not in text, "CR in flow"
    assert text.endswith("\n")
    return text[:-1].split("\n")


def verify_flow(result, args):
    """Re-reads the written flow(s) and checks every row with the independent rules."""
    profile = ENTITIES[args.entity]
    seed_iuds = {}
    if result["seed_file"]:
        lines = _read_flow(result["seed_file"])
        assert lines[0] == ";".join(header_for(args.version))
        for ln in lines[1:]:
            cols = ln.split(";")
            p = _row_problems(cols, args.version, profile)
            assert not p and cols[-1] == "I", ("seed row invalid", p, ln)
            assert cols[0] not in seed_iuds, "duplicate seed IUD"
            seed_iuds[cols[0]] = cols
        assert len(seed_iuds) == math.ceil(args.rows * 0.05)
    lines = _read_flow(result["file"])
    assert lines[0] == ";".join(header_for(args.version)), "header"
    assert len(lines) - 1 == args.rows, "row count"
    seen = set()
    bad = 0
    used_seed = set()
    kinds = {}
    for ln in lines[1:]:
        cols = ln.split(";")
        p = _row_problems(cols, args.version, profile)
        iud = cols[0]
        if not p and cols[-1] == "I" and (iud in seen or iud in seed_iuds):
            p = ["dup_iud"]
        if not p and cols[-1] in ("M", "A"):
            ref = seed_iuds.get(iud)
            if ref is None or iud in used_seed:
                p = ["no_seed"]
            else:
                used_seed.add(iud)
                same = [i for i in range(len(cols) - 1) if cols[i] != ref[i]]
                if cols[-1] == "A":
                    assert not same, ("A row differs from its seed row", ln)
                else:
                    allowed = {C_IMPORTO, C_IMP_SEC, C_BILANCIO}
                    assert C_IMPORTO in same and set(same) <= allowed, ("M row", same, ln)
        seen.add(iud)
        if p:
            bad += 1
            kinds[p[0]] = kinds.get(p[0], 0) + 1
        else:
            kinds[cols[-1]] = kinds.get(cols[-1], 0) + 1
    assert bad == result["bad_rows"], ("bad rows", bad, result["bad_rows"], kinds)
    if result["seed_file"]:
        assert used_seed == set(seed_iuds), "not every seed IUD is modified or annulled"
    print("self-check: flow verified (%s)" % ", ".join("%s=%d" % kv for kv in sorted(kinds.items())),
          file=sys.stderr)


def self_check():
    """Fiscal codes, P.IVA, IBANs and IUVs against an independent implementation."""
    assert cf_check_char("RSSMRA85T10A562") == "S"
    assert make_cf("Rossi", "Mario", 1985, 12, 10, False, "A562") == "RSSMRA85T10A562S"
    assert _cf_ok("RSSMRA85T10A562S")
    assert not _cf_ok("RSSMRA85T10A562T")
    # Name rules: 4+ consonants take the 1st, 3rd and 4th; short names pad with vowels and X.
    assert cf_name_code("Gianfranco") == "GFR" and cf_name_code("Ugo") == "GUO"
    assert cf_surname_code("Fo") == "FOX" and cf_surname_code("D'Angelo") == "DNG"
    assert cf_name_code("Niccolò") == "NCL"
    # An omocodic code: the last digit replaced by its letter, check recomputed.
    omo = make_cf("Rossi", "Mario", 1985, 12, 10, False, "A562", 1)
    assert omo[:14] == "RSSMRA85T10A56" and omo[14] == "N" and _cf_ok(omo), omo
    assert _piva_ok("00644060287") and _piva_ok("00133880252") and _piva_ok("80007580279")
    assert piva_check_digit("0064406028") == 7
    for e in ENTITIES.values():
        assert _piva_ok(e["fiscal_code"]), e["fiscal_code"]
        s = e["secondary"]
        if s:
            assert _piva_ok(s["fiscal_code"]), s
            assert iban_mod97_ok(s["iban"]) and iban_it_cin_ok(s["iban"]), s["iban"]
    # Same formula as the hub's Iuv::generate.
    for seg, counter in (("01", 1), ("02", 123456789), ("03", 9999999999999)):
        v = make_iuv17(seg, counter)
        assert len(v) == 17 and v.startswith(seg) and int("3" + v[:15]) % 93 == int(v[15:]), v
    rng = random.Random(12345)
    n = 0
    for name, profile in ENTITIES.items():
        for payer in build_payers(rng, profile, 20000):
            fields, _, kind, code = payer
            if kind == "F":
                assert _cf_ok(code), code
                assert cf_check_char(code[:15]) == code[15]
            else:
                assert _piva_ok(code), code
            n += 1
    print("self-check: RSSMRA85T10A562S ok; %d generated fiscal codes / P.IVA verified" % n,
          file=sys.stderr)


# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entity", choices=sorted(ENTITIES), help="IPA code of a demo entity")
    ap.add_argument("--iuf", help="flow identifier (no '-'); IUDs are <IUF>-<row>")
    ap.add_argument("--rows", type=int, help="data rows in the main flow")
    ap.add_argument("--version", default="1_4", choices=sorted(COLUMNS))
    ap.add_argument("--bad-ratio", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seed-flow", action="store_true",
                    help="also write <entity>-<IUF>SEED-<version> with the positions M/A rows use")
    ap.add_argument("--zip", action="store_true", help="write a .zip holding the .csv")
    ap.add_argument("--zip-level", type=int, default=6, choices=range(0, 10), metavar="0-9",
                    help="deflate level (default 6)")
    ap.add_argument("--out", help="output directory (created if missing)")
    ap.add_argument("--self-check", action="store_true",
                    help="verify the identifier algorithms; with --out etc. also re-read and "
                         "verify the generated flow(s)")
    ap.add_argument("--verbose", action="store_true", help="row statistics on stderr")
    args = ap.parse_args(argv)

    generating = any(x is not None for x in (args.entity, args.iuf, args.rows, args.out))
    if args.self_check:
        self_check()
        if not generating:
            return 0
    missing = [o for o, v in (("--entity", args.entity), ("--iuf", args.iuf),
                              ("--rows", args.rows), ("--out", args.out)) if v is None]
    if missing:
        ap.error("missing " + ", ".join(missing))
    if args.rows < 0:
        ap.error("--rows must be >= 0")
    if not 0 <= args.bad_ratio <= 1:
        ap.error("--bad-ratio must be between 0 and 1")
    if not args.iuf or "-" in args.iuf or not all(c.isalnum() or c == "_" for c in args.iuf):
        ap.error("--iuf must be letters, digits or _ (MyPay splits the file name on '-')")
    longest = len(args.iuf) + len("SEED-") + len(str(max(args.rows, 1)))
    if longest > 35:
        ap.error("--iuf too long: IUDs <IUF>[SEED]-<row> must fit in 35 characters")
    if args.iuf.startswith("000"):
        ap.error("--iuf must not start with 000 (IUDs must not)")
    os.makedirs(args.out, exist_ok=True)
    result = generate(args)
    if args.self_check:
        verify_flow(result, args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
