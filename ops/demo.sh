#!/usr/bin/env bash
# The demo: runs the hub on its embedded demo configuration, drops MyPay import flows in two
# entities' folders, and shows what came back. Everything happens under target/demo/.
# `--keep` leaves the hub running at the end, for a look at the web console (/console).
set -euo pipefail
KEEP=0
for a in "$@"; do
  case "$a" in
    --keep) KEEP=1 ;;
    *) echo "usage: ops/demo.sh [--keep]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
REPO=$(pwd)
ops/setup.sh
cargo build --release --quiet
BIN="$REPO/target/release/snodo"

DEMO="$REPO/target/demo"
rm -rf "$DEMO" && mkdir -p "$DEMO"
cd "$DEMO"
export SNODO_TAXONOMY_FILE="$REPO/adapters/specs/mypay/tassonomia.csv"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# The admin token of this run (the console's operator sign-in and /admin), unless one is given.
export SNODO_ADMIN_TOKEN="${SNODO_ADMIN_TOKEN:-demo-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
console() {
  echo "  the web console: http://127.0.0.1:8080/console"
  echo "    sign in with the admin token (every entity): $SNODO_ADMIN_TOKEN"
  echo "    or with Padova's API key (Padova only):      ${SNODO_DEMO_KEY_C_G224:-demo-key-c_g224-padova}"
}

step "snodo validate  (the embedded demo: 3 entities, 3 intake pipelines, Padova's nightly MyPay export)"
"$BIN" validate

step "Padova's ERP, played by snodo receiver on 127.0.0.1:9100; the demo config plus a push pipeline to it"
"$BIN" receiver --listen 127.0.0.1:9100 --log receiver.log >receiver.out 2>&1 &
RECEIVER=$!
cp "$REPO/config/demo.toml" demo-push.toml
cat >>demo-push.toml <<'TOML'

[[pipelines]]
name = "padova-erp-push"
entity = "c_g224"
from = "receipts"
encode = "json"
to = { connector = "http", url = "http://127.0.0.1:9100/receipts", timeout = "2s", retry = { max_attempts = 4, initial = "250ms", max = "1s" } }

# The ops event stream on the local broker (ops/kafka.sh), for `snodo tail`.
[kafka]
brokers = "127.0.0.1:9092"
TOML
sed -i 's/^store = "sqlite"$/store = "sqlite"\nevents_topic = "snodo.demo.events"/' demo-push.toml
sed -n '/padova-erp-push/,$p' demo-push.toml | sed 's/^/  /'
"$BIN" validate -c demo-push.toml

step "snodo run -c demo-push.toml  (in the background; logs in target/demo/hub.log; SOAP for the node on 127.0.0.1:8080)"
"$BIN" run -c demo-push.toml >hub.log 2>&1 &
HUB=$!
trap 'kill $HUB $RECEIVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -d var/c_g224/in ] && break; sleep 0.2; done
console

step "Comune di Padova (c_g224) and Comune di Feltre (c_d530) drop their flows"
python3 "$REPO/ops/bench/gen_flow.py" --entity c_g224 --iuf DEMO001 --rows 1200 --bad-ratio 0.02 --zip --out drop >/dev/null
python3 "$REPO/ops/bench/gen_flow.py" --entity c_d530 --iuf DEMO002 --rows 15 --bad-ratio 0.1 --zip --out drop >/dev/null
mv drop/c_g224-DEMO001-1_4.zip var/c_g224/in/
mv drop/c_d530-DEMO002-1_4.zip var/c_d530/in/
ls -l var/c_g224/in var/c_d530/in | grep zip

step "waiting for the outcome files (the pipelines poll every 5 s)"
for _ in $(seq 100); do
  [ -f var/c_g224/out/c_g224-DEMO001-1_4_IUV.zip ] && [ -f var/c_d530/out/c_d530-DEMO002-1_4_IUV.zip ] && break
  sleep 0.2
done
ls -l var/c_g224/out var/c_d530/out

step "c_g224: rejected rows (SCARTI), last two columns (first 6)"
unzip -p var/c_g224/out/c_g224-DEMO001-1_4_SCARTI.zip | awk -F';' 'NR>1 && NR<=7 {print "  " $1 ": " $(NF-1) " - " $NF}'

step "c_g224: accepted rows with their generated IUVs (IUV file, first 5)"
unzip -p var/c_g224/out/c_g224-DEMO001-1_4_IUV.zip | awk -F';' 'NR>1 && NR<=6 {print "  IUD " $1 "  IUV " $2 "  " $5 "  EUR " $14}'

step "snodo flows --entity c_g224"
"$BIN" flows --entity c_g224

step "snodo positions --entity c_g224 --limit 2"
"$BIN" positions --entity c_g224 --limit 2

step "the national node asks about a notice (paVerifyPaymentNotice, SOAP, as the node sends it)"
NOTICE=$("$BIN" positions --entity c_g224 --limit 100000 | python3 -c 'import json,sys; print(next(p["notice_number"] for p in map(json.loads, sys.stdin) if p["notice_number"]))')
echo "  POST http://127.0.0.1:8080/pagopa/paForNode  noticeNumber=$NOTICE"
curl -s -H 'Content-Type: text/xml' -H 'SOAPAction: paVerifyPaymentNotice' --data-binary @- \
  http://127.0.0.1:8080/pagopa/paForNode <<XML | sed -e 's/></>\n</g' | grep -E '<(outcome|amount|dueDate|paymentDescription|companyName)>' | sed 's/^/    /'
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:paf="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd">
 <soapenv:Body><paf:paVerifyPaymentNoticeReq>
  <idPA>00644060287</idPA><idBrokerPA>80007580279</idBrokerPA><idStation>80007580279_01</idStation>
  <qrCode><fiscalCode>00644060287</fiscalCode><noticeNumber>$NOTICE</noticeNumber></qrCode>
 </paf:paVerifyPaymentNoticeReq></soapenv:Body>
</soapenv:Envelope>
XML

step "the REST API (docs/API.md): Padova's citizen portal creates a position with its key"
"$BIN" sim -c demo-push.toml --serve 127.0.0.1:8090 >standins.out 2>&1 &
STANDINS=$!
trap 'kill $HUB $RECEIVER $STANDINS 2>/dev/null || true' EXIT
KEY_PADOVA="${SNODO_DEMO_KEY_C_G224:-demo-key-c_g224-padova}"
KEY_FELTRE="${SNODO_DEMO_KEY_C_D530:-demo-key-c_d530-feltre}"
API=http://127.0.0.1:8080/api/v1
show() { python3 -c 'import json,sys; d=json.load(sys.stdin); keys=sys.argv[1].split(","); print("   ", "  ".join("%s=%s" % (k, d.get(k)) for k in keys))' "$1"; }
echo "  curl -X POST $API/entities/c_g224/positions -H 'Authorization: Bearer \$KEY_PADOVA' -d '{\"IUD\": \"PORTAL-1\", ...}'"
curl -sf -X POST "$API/entities/c_g224/positions" -H "Authorization: Bearer $KEY_PADOVA" -H 'Content-Type: application/json' -d '{
  "IUD": "PORTAL-1", "tipoIdentificativoUnivoco": "F", "codiceIdentificativoUnivoco": "RSSMRA85T10A562S",
  "anagraficaPagatore": "Mario Rossi", "importoDovuto": "84.00", "tipoDovuto": "TARI",
  "dataEsecuzionePagamento": "2099-01-31", "causaleVersamento": "TARI 2026 acconto",
  "datiSpecificiRiscossione": "9/0101100IM/", "flgGeneraIuv": true}' | show iud,status,amountCents,noticeNumber,qrCode
echo "  read back: GET $API/entities/c_g224/positions/PORTAL-1"
curl -sf "$API/entities/c_g224/positions/PORTAL-1" -H "Authorization: Bearer $KEY_PADOVA" | show iud,status,version,causale
echo "  the same with Feltre's key:"
curl -s "$API/entities/c_g224/positions/PORTAL-1" -H "Authorization: Bearer $KEY_FELTRE" -w '    HTTP %{http_code}\n' | sed 's/^{/    {/'
echo "  a wrong amount is refused with the MyPay code and the field:"
curl -s -X POST "$API/entities/c_g224/positions" -H "Authorization: Bearer $KEY_PADOVA" -H 'Content-Type: application/json' \
  -d '{"IUD": "PORTAL-2", "tipoIdentificativoUnivoco": "F", "codiceIdentificativoUnivoco": "RSSMRA85T10A562S", "anagraficaPagatore": "Mario Rossi", "importoDovuto": "0", "tipoDovuto": "TARI", "dataEsecuzionePagamento": "2099-01-31", "causaleVersamento": "x", "datiSpecificiRiscossione": "9/0101100IM/"}' | show status,code,field,detail
echo "  its payment notice (avviso pagoPA): GET $API/entities/c_g224/positions/PORTAL-1/notice.pdf"
curl -sf "$API/entities/c_g224/positions/PORTAL-1/notice.pdf" -H "Authorization: Bearer $KEY_PADOVA" -o avviso-PORTAL-1.pdf
echo "    wrote $PWD/avviso-PORTAL-1.pdf ($(wc -c <avviso-PORTAL-1.pdf) bytes)"
if command -v pdftoppm >/dev/null && command -v zbarimg >/dev/null; then
  pdftoppm -png -singlefile -r 150 avviso-PORTAL-1.pdf avviso-PORTAL-1 2>/dev/null
  echo "    its QR code, read back with zbarimg: $(zbarimg --raw -q avviso-PORTAL-1.png 2>/dev/null)"
fi

step "a spontaneous payment (Base mode): what the portal may offer, then a parent tops up the canteen"
curl -sf "$API/entities/c_g224/spontaneous" -H "Authorization: Bearer $KEY_PADOVA" | python3 -c 'import json,sys
for o in json.load(sys.stdin)["items"]:
    print("    %s: %s, amount %s, fields %s" % (o["debtType"], o["causale"], o["amount"], [f["name"] for f in o["fields"]]))'
SPONT=$(curl -sf -X POST "$API/entities/c_g224/spontaneous/MENSA" -H "Authorization: Bearer $KEY_PADOVA" -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-mensa-1' \
  -d '{"payer": {"type": "F", "id": "RSSMRA85T10A562S", "name": "Mario Rossi"}, "amountCents": 4500, "fields": {"anno_scolastico": "2026/27", "alunno": "Luca Rossi"}}')
echo "$SPONT" | show causale,amountCents,noticeNumber,qrCode

step "a cart (Gateway mode): both notices sent to pagoPA Checkout (the sim's stand-in on 127.0.0.1:8090)"
N1=$(curl -sf "$API/entities/c_g224/positions/PORTAL-1" -H "Authorization: Bearer $KEY_PADOVA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["noticeNumber"])')
N2=$(echo "$SPONT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["noticeNumber"])')
CART=$(curl -sf -X POST "$API/entities/c_g224/carts" -H "Authorization: Bearer $KEY_PADOVA" -H 'Content-Type: application/json' \
  -d "{\"noticeNumbers\": [\"$N1\", \"$N2\"], \"returnUrls\": {\"returnOkUrl\": \"https://www.comune.padova.it/pagato\", \"returnCancelUrl\": \"https://www.comune.padova.it/annullato\", \"returnErrorUrl\": \"https://www.comune.padova.it/errore\"}}")
echo "$CART" | show id,state,redirectUrl
REDIRECT=$(echo "$CART" | python3 -c 'import json,sys; print(json.load(sys.stdin)["redirectUrl"])')
CART_ID=$(echo "$CART" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "  the citizen pays on the Checkout page (POST $REDIRECT/pay: verify, activation, receipt against the hub):"
curl -s -X POST "$REDIRECT/pay" -D - -o pay.out | grep -i '^location' | sed 's/^/    /'
sed 's/^/    /' pay.out
curl -sf "$API/entities/c_g224/carts/$CART_ID" -H "Authorization: Bearer $KEY_PADOVA" | python3 -c 'import json,sys
c=json.load(sys.stdin); print("    cart %s: %s" % (c["id"], c["state"]))
for n in c["notices"]: print("      %s %s receipt %s" % (n["noticeNumber"], n["status"], n["receiptId"]))'
echo "  Padova's system pulls its receipts: GET $API/entities/c_g224/receipts?since="
curl -sf "$API/entities/c_g224/receipts" -H "Authorization: Bearer $KEY_PADOVA" | python3 -c 'import json,sys
p=json.load(sys.stdin)
for r in p["items"]: print("    receipt_id=%s notice_number=%s iud=%s debt_type=%s amount=%s psp=%s" % (r["receipt_id"], r["notice_number"], r["iud"], r["debt_type"], r["amount"]["decimal"], r["psp"]["name"]))
print("    nextCursor=%s (ask again with ?since=%s)" % (p["nextCursor"], p["nextCursor"]))'

step "an ERP written for MyPay asks for the receipt through MyPay's own SOAP service (paaSILChiediPagatiConRicevuta, docs/MYPAY.md)"
echo "  WSDL: http://127.0.0.1:8080/ws/pa/PagamentiTelematiciDovutiPagati?wsdl"
curl -s -H 'Content-Type: text/xml' -H 'SOAPAction: paaSILChiediPagatiConRicevuta' --data-binary @- \
  http://127.0.0.1:8080/ws/pa/PagamentiTelematiciDovutiPagati > pagati.xml <<'XML'
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ppt="http://www.regione.veneto.it/pagamenti/ente/"><soapenv:Body>
<ppt:paaSILChiediPagatiConRicevuta><codIpaEnte>c_g224</codIpaEnte><password>padova-ws-24</password>
<identificativoUnivocoDovuto>PORTAL-1</identificativoUnivocoDovuto></ppt:paaSILChiediPagatiConRicevuta></soapenv:Body></soapenv:Envelope>
XML
python3 - pagati.xml <<'PY'
import base64, re, sys
answer = open(sys.argv[1]).read()
fault = re.search(r"<faultCode>(.*?)</faultCode>", answer)
if fault:
    sys.exit("    fault: " + fault.group(1))
pagati = base64.b64decode(base64.b64decode(re.search(r"<pagati>(.*?)</pagati>", answer, re.S).group(1))).decode()
rt = base64.b64decode(re.search(r"<rt>(.*?)</rt>", answer, re.S).group(1)).decode()
pick = lambda tag: re.search(r"<%s>(.*?)</%s>" % (tag, tag), pagati).group(1)
print("    PagatiConRicevuta: IUV %s, IUD %s, importo %s, esito %s, PSP %s" % (
    pick("identificativoUnivocoVersamento"), pick("identificativoUnivocoDovuto"),
    pick("importoTotalePagato"), pick("codiceEsitoPagamento"), pick("denominazioneAttestante")))
print("    rt: the receipt as the node sent it (%d bytes, %s)" % (len(rt), "paSendRTV2" if "paSendRTV2" in rt else "paSendRT"))
PY

step "real-time verification at the entity: a ZTL notice of the Region lives in its own system (the sim's stand-in)"
# Segregation code 03, base 0000000002024 (even: the stand-in knows it), check digits mod 93.
ZTL=$(python3 -c 'h="3"+"03"+"0000000002024"; print(h+"%02d" % (int(h) % 93))')
echo "  paVerifyPaymentNotice for $ZTL: the hub asks GET http://127.0.0.1:8090/external/r_veneto/$ZTL, then answers the node"
curl -s -H 'Content-Type: text/xml' -H 'SOAPAction: paVerifyPaymentNotice' --data-binary @- \
  http://127.0.0.1:8080/pagopa/paForNode <<XML | sed -e 's/></>\n</g' | grep -E '<(outcome|amount|paymentDescription|companyName)>' | sed 's/^/    /'
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:paf="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd">
 <soapenv:Body><paf:paVerifyPaymentNoticeReq>
  <idPA>80007580279</idPA><idBrokerPA>80007580279</idBrokerPA><idStation>80007580279_01</idStation>
  <qrCode><fiscalCode>80007580279</fiscalCode><noticeNumber>$ZTL</noticeNumber></qrCode>
 </paf:paVerifyPaymentNoticeReq></soapenv:Body>
</soapenv:Envelope>
XML
"$BIN" positions -c demo-push.toml --entity r_veneto --notice "$ZTL" | python3 -c 'import json,sys; p=json.loads(sys.stdin.readline()); print("  stored for the receipt: iud=%s debt_type=%s amount_cents=%s" % (p["iud"], p["dovuto"]["debt_type"], p["amount_cents"]))'

step "snodo sim: the node and PSPs pay 1000 of the notices (verify, paGetPaymentV2, paSendRTV2), while snodo tail follows the event topic"
"$BIN" tail -c demo-push.toml --count 200 >tail.out 2>tail.err &
TAIL=$!
sleep 2
"$BIN" sim --from-config --count 1000 --concurrency 8 | sed 's/^/  /'
wait $TAIL || { cat tail.err; exit 1; }
echo "  snodo tail -c demo-push.toml (live from the topic snodo.demo.events; the first two of each kind):"
for kind in payment.activated receipt.stored position.paid; do
  awk -v k=" $kind " 'index($0, k) && n < 2 { print "    " substr($0, 1, 190); n++ }' tail.out
done
PAID=$("$BIN" positions --entity c_g224 --limit 100000 | grep -c '"status":"paid"' || true)
echo "  c_g224 positions now paid: $PAID"
echo "  one of them:"
"$BIN" positions --entity c_g224 --limit 100000 | grep -m1 '"status":"paid"' | python3 -c 'import json,sys; p=json.loads(sys.stdin.readline()); print("    iud=%s notice=%s status=%s amount_cents=%s history=%s" % (p["iud"], p["notice_number"], p["status"], p["amount_cents"], p["history_count"]))'

step "every receipt went back to Padova's ERP (JSON push, Idempotency-Key = receiptId)"
for _ in $(seq 100); do [ "$(wc -l <receiver.log)" -ge "$PAID" ] && break; sleep 0.2; done
echo "  the receiver got $(wc -l <receiver.log) pushes ($(cut -d';' -f2 receiver.log | sort -u | wc -l) distinct receipts) for $PAID paid positions"
curl -s http://127.0.0.1:8080/metrics | grep -E '^snodo_(deliveries|delivery_latency_seconds_(count|bucket\{pipeline="padova-erp-push",le="1"))' | sed 's/^/  /'

step "one more payment: its receipt reaches the ERP within a second"
BEFORE=$(wc -l <receiver.log)
"$BIN" sim -c demo-push.toml --from-config --count 1 >/dev/null
for _ in $(seq 50); do [ "$(wc -l <receiver.log)" -gt "$BEFORE" ] && break; sleep 0.02; done
"$BIN" receipts --entity c_g224 --limit 1 | python3 -c '
import json, sys, datetime
r = json.loads(sys.stdin.readline())
last = open("receiver.log").read().splitlines()[-1].split(";")
stored = datetime.datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")).timestamp() * 1000
print("  receipt %s stored by the hub, received by the ERP %d ms later" % (r["receipt_id"], int(last[0]) - stored))
assert last[1] == r["receipt_id"], "the ERP got another receipt"'

step "the ERP goes down: the next receipt is retried, then becomes a dead letter"
kill -TERM $RECEIVER; wait $RECEIVER 2>/dev/null || true
"$BIN" sim -c demo-push.toml --from-config --count 1 >/dev/null
for _ in $(seq 100); do [ -n "$("$BIN" dlq list --entity c_g224)" ] && break; sleep 0.1; done
"$BIN" dlq list --entity c_g224 | python3 -c 'import json,sys
for l in sys.stdin:
    d=json.loads(l); print("  dead letter %s: receipt %s, %s attempts, last error: %s" % (d["id"], d["idempotency_key"], d["attempts"], d["last_error"]))'

step "the ERP is back: snodo dlq replay --all delivers it"
"$BIN" receiver --listen 127.0.0.1:9100 --log receiver.log >>receiver.out 2>&1 &
RECEIVER=$!
sleep 0.5
BEFORE=$(wc -l <receiver.log)
"$BIN" dlq replay --all | sed 's/^/  /'
for _ in $(seq 50); do [ "$(wc -l <receiver.log)" -gt "$BEFORE" ] && break; sleep 0.1; done
echo "  received: $(tail -n1 receiver.log | cut -d';' -f2); dead letters left: $("$BIN" dlq list --entity c_g224 | wc -l)"

step "the PSPs settle what they paid: snodo sim publishes today's settlement flows (FdR) from its ledger, with --anomalies"
"$BIN" sim --publish-flows --anomalies | sed 's/^/  /' | cut -c1-170
echo "  the stand-in on 127.0.0.1:8090 serves them (FdR 3 REST under /fdr-org/service/v1, the key 'demo')"
cp demo-push.toml demo-fdr.toml
cat >>demo-fdr.toml <<'TOML'

[pagopa.fdr]
mode = "rest"
url = "http://127.0.0.1:8090/fdr-org/service/v1"
subscription_key = "demo"
TOML
sed -n '/^\[pagopa.fdr\]/,$p' demo-fdr.toml | sed 's/^/  /'

step "snodo reports pull: the hub pulls every entity's flows, stores and links each payment to its receipt"
SNODO_LOG=warn "$BIN" reports -c demo-fdr.toml pull | sed 's/^/  /'
"$BIN" reports -c demo-fdr.toml --entity c_g224 | python3 -c 'import json,sys
for f in map(json.loads, sys.stdin):
    if f.get("superseded_by"): continue
    print("  %s r%s psp=%s payments=%s linked=%s anomalies=%s declared=%s computed=%s regulation=%s" % (f["iuf"], f["revision"], f["psp"], f["payments"], f["linked"], f["anomalies"], f["declared"]["amount_cents"], f["computed"]["amount_cents"], f["regulation"]))'
IUF=$("$BIN" reports -c demo-fdr.toml --entity c_g224 | python3 -c 'import json,sys
fs=[f for f in map(json.loads, sys.stdin) if not f.get("superseded_by")]; print(max(fs, key=lambda f: f["linked"])["iuf"])')
echo "  snodo reports show --entity c_g224 $IUF (first 3 rows, linked to their receipts, and one anomaly):"
"$BIN" reports -c demo-fdr.toml show --entity c_g224 "$IUF" | python3 -c 'import json,sys
d=json.loads(sys.stdin.readline())
for r in d["rows"][:3]: print("    row %s IUV %s IUR %s transfer %s %s cents esito %s -> receipt %s" % (r["row_no"], r["iuv"], r["iur"], r["transfer_index"], r["amount_cents"], r["esito"], r["receipt"]))
print("    %s of %s rows linked" % (sum(1 for r in d["rows"] if r["receipt"] is not None), len(d["rows"])))'
"$BIN" reports -c demo-fdr.toml --entity c_g224 --anomalies | python3 -c 'import json,sys
print("  flows with anomalies: %s" % ", ".join("%s r%s (%s)" % (f["iuf"], f["revision"], f["anomalies"]) for f in map(json.loads, sys.stdin)))'
ANOMALOUS=$("$BIN" reports -c demo-fdr.toml --entity c_g224 --anomalies | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["iuf"])')
"$BIN" reports -c demo-fdr.toml show --entity c_g224 "$ANOMALOUS" | python3 -c 'import json,sys
d=json.loads(sys.stdin.readline()); a=d["anomaly_list"][0]
print("  one anomaly of %s r%s: %s (%s) %s" % (d["iuf"], d["revision"], a["code"], a["severity"], a["message"]))'
echo "  the entity's system reads it over the API (GET /api/v1/entities/c_g224/reports/$IUF), as fdr-json:"
curl -sS "http://127.0.0.1:8080/api/v1/entities/c_g224/reports/$IUF" -H "Authorization: Bearer demo-key-c_g224-padova" | python3 -c 'import json,sys
d=json.load(sys.stdin); p=d["payments"][0]
print("    format=%s iuf=%s revision=%s payments=%s linked=%s anomalies=%s" % (d["format"], d["iuf"], d["revision"], len(d["payments"]), d["linked"], len(d["anomalies"])))
print("    payments[0]: iuv=%s amount=%s status=%s receipt=%s" % (p["iuv"], p["amount"], p["status"], json.dumps(p["receipt"])))'
curl -sS "http://127.0.0.1:8080/api/v1/entities/c_g224/reports/$IUF" -H "Authorization: Bearer demo-key-c_g224-padova" \
  -H "Accept: application/xml" >report.xml
echo "  or with Accept: application/xml as FlussoRiversamento ($(wc -c <report.xml) bytes): $(xmllint --noout --nonet --schema "$REPO/adapters/specs/fdr/pagopa-fdr-nodo-dei-pagamenti/FlussoRiversamento_1_0_4.xsd" report.xml 2>&1)"
echo "  and a paid position knows its settlement flow:"
"$BIN" positions --entity c_g224 --limit 100000 | grep -m1 '"settlement"' | python3 -c 'import json,sys; p=json.loads(sys.stdin.readline()); print("    notice=%s status=%s settlement=%s" % (p["notice_number"], p["status"], json.dumps(p["settlement"])))'

step "the treasurer credits the flows: snodo sim writes Padova's OPI giornale di cassa (--anomalies: an amount wrong, a causale mangled, a flow never credited, an unknown transfer)"
"$BIN" sim --publish-treasury --anomalies | sed 's/^/  /' | cut -c1-170
cat >>demo-push.toml <<'TOML'

[[pipelines]]
name = "padova-tesoreria"
entity = "c_g224"
from = { connector = "dir", path = "var/c_g224/tesoreria", schedule = "*/2 * * * * *" }
decode = "opi"
to = "treasury"
TOML
echo "  a treasury intake added to demo-push.toml, and the running hub told with SIGHUP (no restart):"
kill -HUP $HUB
for _ in $(seq 50); do grep -q '"configuration reloaded"\|configuration reloaded' hub.log && break; sleep 0.1; done
grep -m1 'configuration reloaded' hub.log | sed 's/^/    /' | cut -c1-200
mkdir -p var/c_g224/tesoreria
cp sim-ledger/treasury/00644060287/*.xml var/c_g224/tesoreria/
for _ in $(seq 100); do [ "$("$BIN" treasury -c demo-push.toml --entity c_g224 | wc -l)" -ge 3 ] && break; sleep 0.1; done
"$BIN" treasury -c demo-push.toml --entity c_g224 | python3 -c 'import json,sys
for m in map(json.loads, sys.stdin): print("    movement %s-%s %s cents iuf=%s" % (m["year"], m["bill"], m["amount_cents"], m["iuf"]))'
AT=$(date -u -d '+10 days' +%Y-%m-%dT12:00:00Z)
echo "  snodo reconcile --entity c_g224 --at $AT (ten days on, past the grace periods):"
"$BIN" reconcile -c demo-push.toml --entity c_g224 --at "$AT" | sed 's/^/    /'

step "the nightly MyPay export (ESTRAZIONE_DOVUTI 1.3), written now instead of at 02:00"
"$BIN" export --pipeline padova-receipts-export | sed 's/^/  /'
ZIP=$(ls var/c_g224/export/*.zip | head -n1)
unzip -l "$ZIP" | sed -n '4p' | sed 's/^/  /'
rm -rf export-csv && unzip -q "$ZIP" -d export-csv
CSV=$(ls export-csv/*.csv)
echo "  $(($(wc -l <"$CSV") - 1)) receipts, $(head -n1 "$CSV" | tr ';' '\n' | wc -l) columns; the first row:"
python3 - "$CSV" <<'PY'
import csv, sys
with open(sys.argv[1], newline="") as f:
    r = csv.reader(f, delimiter=";")
    h = next(r)
    row = next(r)
for k in ("codIud", "codIuv", "identificativoMessaggioRicevuta", "dataOraMessaggioRicevuta", "singoloImportoPagato", "tipoDovuto"):
    print("    %s = %s" % (k, row[h.index(k)]))
PY

step "the same flow again is refused whole"
cp "$REPO/target/demo/var/c_g224/in/archive/"*/c_g224-DEMO001-1_4.zip var/c_g224/in/
for _ in $(seq 100); do [ -f var/c_g224/in/failed/c_g224-DEMO001-1_4.zip.error.txt ] && break; sleep 0.2; done
echo "  var/c_g224/in/failed/c_g224-DEMO001-1_4.zip.error.txt:"
sed 's/^/    /' var/c_g224/in/failed/c_g224-DEMO001-1_4.zip.error.txt

if [ "$KEEP" = 1 ]; then
  step "the hub keeps running (--keep); Ctrl-C stops it"
  console
  trap 'kill -TERM $HUB $RECEIVER $STANDINS 2>/dev/null || true' EXIT INT TERM
  wait $HUB || true
  exit 0
fi

step "stopping the hub (SIGTERM)"
kill -TERM $HUB $RECEIVER $STANDINS
wait $HUB || true
wait $RECEIVER 2>/dev/null || true
trap - EXIT
tail -n 3 hub.log
echo
echo "Demo done: the hub's files are in target/demo/var/."
