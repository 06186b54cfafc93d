#!/usr/bin/env python3
"""Pay N positions of a hub's SQLite store the cheap way, for benchmarks: clones of one real
receipt, and the simulator's ledger lines for them.

    gen_receipts.py --db var/snodo.db --ledger DIR --entity c_g224 --count N

The store must hold exactly one receipt of the entity, stored by the hub itself (paid by
`snodo sim`, which also wrote its line in DIR/payments.jsonl): it is the template. For N - 1
more active positions of the entity with an IUV (aux digit 3, so the notice number is "3" + IUV),
oldest first, this writes in one transaction what the hub's receipt path leaves behind for the
settlement flows: a `receipts` row (receipt id, notice, IUV, amount, PSP, the XML and the parsed
request of the template with those fields replaced, so each receipt reads back as its own) and
the position `paid`. Events, history and deliveries are not written: a pull of settlement flows
reads none of them. Each receipt gets its ledger lines (payment and OK answer) in the template's
PSP and day, so `snodo sim --publish-flows` settles all N in one flow.

Receipt ids are 32 hex digits, as the simulator's, from a counter no simulator run uses. Prints
one JSON line: {"receipts", "psp", "date"}. Stdlib only.
"""

import argparse
import copy
import json
import os
import re
import sqlite3
import sys
from datetime import datetime, timezone


def cents_text(c):
    return "%d.%02d" % (c // 100, c % 100)


def tag_sub(xml, tag, value):
    """Replaces the text of every <tag> (any namespace prefix); fails if there is none."""
    pattern = re.compile(r"(<(?:[\w-]+:)?%s>)[^<]*(</(?:[\w-]+:)?%s>)" % (tag, tag))
    out, n = pattern.subn(lambda m: m.group(1) + value + m.group(2), xml)
    if n == 0:
        sys.exit("gen_receipts: the template XML has no <%s>" % tag)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--ledger", required=True)
    ap.add_argument("--entity", default="c_g224")
    ap.add_argument("--count", type=int, required=True)
    a = ap.parse_args()
    if a.count < 1:
        sys.exit("gen_receipts: --count must be at least 1")

    con = sqlite3.connect(a.db)
    con.execute("PRAGMA busy_timeout=10000")
    cols = ("entity, receipt_id, notice_number, iuv, position_id, amount_cents, psp_id, psp_name, "
            "payment_date, operation, xml, received_at, parsed")
    tmpl = con.execute("SELECT %s FROM receipts WHERE entity = ?" % cols, (a.entity,)).fetchall()
    if len(tmpl) != 1:
        sys.exit("gen_receipts: the store must hold exactly one receipt of %s (it has %d)"
                 % (a.entity, len(tmpl)))
    t = dict(zip([c.strip() for c in cols.split(",")], tmpl[0]))
    if t["parsed"] is None:
        sys.exit("gen_receipts: the template receipt has no parsed request")
    parsed = json.loads(t["parsed"])
    (version, request), = parsed.items()
    receipt = request["receipt"]
    if len(receipt["transfer_list"]) != 1:
        sys.exit("gen_receipts: the template receipt must have one transfer")

    ledger_path = os.path.join(a.ledger, "payments.jsonl")
    with open(ledger_path) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    pay = [l for l in lines if l.get("kind") == "payment" and l["receiptId"] == t["receipt_id"]]
    if len(pay) != 1:
        sys.exit("gen_receipts: the ledger has no payment line for receipt %s" % t["receipt_id"])
    pay = pay[0]

    positions = con.execute(
        "SELECT id, iuv, amount_cents FROM positions WHERE entity = ? AND status = 'active' "
        "AND iuv IS NOT NULL AND length(iuv) = 17 AND id <> ? ORDER BY id LIMIT ?",
        (a.entity, t["position_id"] or -1, a.count - 1)).fetchall()
    if len(positions) != a.count - 1:
        sys.exit("gen_receipts: %d active positions with an IUV, %d needed"
                 % (len(positions), a.count - 1))

    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    base = 0xBE0C << 112  # a counter the simulator's random receipt ids never start with
    rows, paid, ledger = [], [], []
    for i, (pid, iuv, cents) in enumerate(positions):
        rid = "%032x" % (base + i)
        notice = "3" + iuv
        amount = cents_text(cents)
        r = copy.deepcopy(receipt)
        r["receipt_id"] = rid
        r["notice_number"] = notice
        r["creditor_reference_id"] = iuv
        r["payment_amount"] = amount
        r["transfer_list"][0]["transfer_amount"] = amount
        xml = t["xml"]
        for tag, value in (("receiptId", rid), ("noticeNumber", notice),
                           ("creditorReferenceId", iuv), ("paymentAmount", amount),
                           ("transferAmount", amount)):
            xml = tag_sub(xml, tag, value)
        rows.append((t["entity"], rid, notice, iuv, pid, cents, t["psp_id"], t["psp_name"],
                     t["payment_date"], t["operation"], xml, now,
                     json.dumps({version: dict(request, receipt=r)}, separators=(",", ":"))))
        paid.append((now, pid))
        p = dict(pay, receiptId=rid, noticeNumber=notice, iuv=iuv, amountCents=cents,
                 transfers=[dict(pay["transfers"][0], amountCents=cents)])
        ledger.append(json.dumps(p, separators=(",", ":")))
        ledger.append(json.dumps({"kind": "answer", "receiptId": rid, "outcome": "OK"},
                                 separators=(",", ":")))

    with con:
        con.executemany(
            "INSERT INTO receipts (%s) VALUES (%s)" % (cols, ",".join("?" * 13)), rows)
        con.executemany(
            "UPDATE positions SET status = 'paid', version = version + 1, updated_at = ? "
            "WHERE id = ?", paid)
    con.close()
    with open(ledger_path, "a") as f:
        f.write("\n".join(ledger) + "\n")
    print(json.dumps({"receipts": a.count, "psp": pay["pspId"], "date": pay["date"]}))


if __name__ == "__main__":
    main()
