#!/usr/bin/env python3
"""Settlement flows and treasury movements for the reconciliation benchmark, written straight
into a hub's SQLite store (already migrated by the hub, receipts already there).

    gen_recon.py seed     --db var/snodo.db --entity c_g224 --flows F --movements M --date D
    gen_recon.py flow     --db var/snodo.db --entity c_g224 --date D
    gen_recon.py movement --db var/snodo.db --entity c_g224 --date D

`seed`: F flows `ok` (current, revision 1) of 100 rows each over the entity's oldest F * 100
receipts, as a pull leaves them (schema: store/src/migrations/sqlite_0011_reports.sql): one row
per receipt, linked to it (iur = its receipt id, transfer and link index 1, esito 0), the
receipt's amount except 1 row in 1000 (one cent more, so that payment is "not correctly
reported"); declared and computed totals the sum of the rows. IUFs `<date><psp>-<n>`. Then M
movements of year 2026, bills 1..M (sqlite_0014_treasury.sql): movement i credits flow i with its
total, 1 in 100 with one euro more; past F they name IUFs no flow has. Finally every mark
(`recon_dirty`) and label of the entity is removed, so a rebuild labels from scratch.

`flow`: one more flow of 100 rows over the next 100 receipts no row links yet, and the mark the
hub leaves when it finishes a flow (store/src/reports.rs: entity, iuf).
`movement`: one more movement crediting the newest flow no movement names, with its total, and
the mark the hub leaves for a new movement (store/src/treasury.rs `touched`: entity, iuf,
movement `<year>-<bill>`).

Prints one JSON line with what was written. Stdlib only; deterministic but for timestamps.
"""

import argparse
import json
import sqlite3
import sys
from datetime import datetime, timezone

PER_FLOW = 100
YEAR = 2026
ODD_ROW = 1000  # 1 row in ODD_ROW reports another amount
ODD_MOVEMENT = 100  # 1 movement in ODD_MOVEMENT credits another amount


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def die(msg):
    sys.exit("gen_recon: " + msg)


def iuf_of(date, psp, n):
    return "%s%s-%05d" % (date, psp, n)


def causale(iuf):
    return "/PUR/LGPE-RIVERSAMENTO/URI/%s" % iuf


def insert_flow(con, entity, date, psp, n, receipts, ts, first_row=0):
    """One flow over `receipts` (id, iuv, receipt_id, amount); returns (flow id, iuf, cents)."""
    rows = []
    for k, (rid, iuv, receipt_id, cents) in enumerate(receipts):
        if (first_row + k) % ODD_ROW == ODD_ROW - 1:
            cents += 1
        rows.append([None, k + 1, entity, iuv, receipt_id, 1, 1, cents, 0, date, rid, 1])
    total = sum(r[7] for r in rows)
    iuf = iuf_of(date, psp, n)
    cur = con.execute(
        "INSERT INTO report_flows (entity, psp_id, iuf, revision, source, status, flow_time,"
        " flow_date, regulation_id, regulation_date, header, declared_count, declared_cents,"
        " computed_count, computed_cents, linked, anomalies, rows_done, published, superseded_by,"
        " received_at, updated_at)"
        " VALUES (?, ?, ?, 1, 'rest', 'ok', ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, 0, ?, ?, NULL, ?, ?)",
        (entity, psp, iuf, date + "T12:00:00", date, "SCT%08d" % n, date, len(rows), total,
         len(rows), total, len(rows), len(rows), ts, ts, ts))
    flow = cur.lastrowid
    for r in rows:
        r[0] = flow
    con.executemany(
        "INSERT INTO report_payments (flow, row_no, entity, iuv, iur, transfer_index, link_index,"
        " amount_cents, esito, pay_date, receipt, receipt_transfer)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return flow, iuf, total


def insert_movement(con, entity, bill, iuf, cents, date, payer, ts):
    con.execute(
        "INSERT INTO treasury_movements (entity, year, bill, amount_cents, accounting_date,"
        " value_date, causale, payer, end_to_end_id, iuf, iuv, source, received_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, 'bench', ?, ?)",
        (entity, YEAR, str(bill), cents, date, date, causale(iuf), payer, iuf, ts, ts))
    return "%d-%d" % (YEAR, bill)


def next_receipts(con, entity, after_id, n):
    return con.execute(
        "SELECT id, iuv, receipt_id, amount_cents FROM receipts WHERE entity = ? AND id > ?"
        " AND conflict_of IS NULL ORDER BY id LIMIT ?", (entity, after_id, n)).fetchall()


def psp_of(con, entity):
    row = con.execute("SELECT psp_id, psp_name FROM receipts WHERE entity = ? ORDER BY id LIMIT 1",
                      (entity,)).fetchone()
    if row is None:
        die("the store has no receipt of %s" % entity)
    return row


def seed(con, a):
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for t in ("report_flows", "report_payments", "treasury_movements", "recon_dirty",
              "recon_items"):
        if t not in tables:
            die("the store has no %s table: run the hub once first (it migrates)" % t)
    if con.execute("SELECT 1 FROM report_flows WHERE entity = ? LIMIT 1", (a.entity,)).fetchone():
        die("the store already holds flows of %s" % a.entity)
    psp, psp_name = psp_of(con, a.entity)
    ts = now_iso()
    after, payments, odd_rows, totals = 0, 0, 0, []
    with con:
        for n in range(1, a.flows + 1):
            rec = next_receipts(con, a.entity, after, PER_FLOW)
            if len(rec) != PER_FLOW:
                die("%d receipts of %s, %d flows of %d need %d" % (
                    payments + len(rec), a.entity, a.flows, PER_FLOW, a.flows * PER_FLOW))
            after = rec[-1][0]
            _, iuf, total = insert_flow(con, a.entity, a.date, psp, n, rec, ts, payments)
            odd_rows += sum(1 for k in range(PER_FLOW)
                            if (payments + k) % ODD_ROW == ODD_ROW - 1)
            payments += PER_FLOW
            totals.append((iuf, total))
        odd_movements = 0
        for i in range(1, a.movements + 1):
            if i <= len(totals):
                iuf, cents = totals[i - 1]
            else:  # a flow the entity never received
                iuf, cents = iuf_of(a.date, "UNKNOWNPSP", i), 10000
            if i % ODD_MOVEMENT == ODD_MOVEMENT // 2:
                cents += 100
                odd_movements += 1
            insert_movement(con, a.entity, i, iuf, cents, a.date, psp_name, ts)
        # From scratch: what the hub's receipt path and the migration left is not labelled.
        con.execute("DELETE FROM recon_dirty")
        for t in ("recon_items", "recon_labels", "recon_seqs"):
            con.execute("DELETE FROM %s WHERE entity = ?" % t, (a.entity,))
        con.execute("DELETE FROM metric_counts WHERE kind LIKE 'recon:%' AND label = ?",
                    (a.entity,))
    unreported = con.execute(
        "SELECT count(*) FROM receipts WHERE entity = ? AND id > ? AND conflict_of IS NULL",
        (a.entity, after)).fetchone()[0]
    print(json.dumps({"flows": a.flows, "payments": payments, "odd_rows": odd_rows,
                      "movements": a.movements, "odd_movements": odd_movements,
                      "unreported_receipts": unreported, "psp": psp}))


def new_flow(con, a):
    psp, _ = psp_of(con, a.entity)
    last = con.execute("SELECT COALESCE(MAX(receipt), 0) FROM report_payments WHERE entity = ?",
                       (a.entity,)).fetchone()[0]
    n = con.execute("SELECT COUNT(*) FROM report_flows WHERE entity = ?",
                    (a.entity,)).fetchone()[0] + 1
    rec = next_receipts(con, a.entity, last, PER_FLOW)
    if len(rec) != PER_FLOW:
        die("%d receipts of %s without a settlement row, %d needed" % (len(rec), a.entity,
                                                                        PER_FLOW))
    with con:
        flow, iuf, total = insert_flow(con, a.entity, a.date, psp, n, rec, now_iso(), 0)
        con.execute("INSERT INTO recon_dirty (entity, iuf) VALUES (?, ?)", (a.entity, iuf))
    print(json.dumps({"flow": flow, "iuf": iuf, "rows": len(rec), "cents": total}))


def new_movement(con, a):
    _, psp_name = psp_of(con, a.entity)
    got = con.execute(
        "SELECT f.iuf, COALESCE(f.declared_cents, f.computed_cents) FROM report_flows f"
        " WHERE f.entity = ? AND f.status = 'ok' AND f.superseded_by IS NULL AND NOT EXISTS"
        " (SELECT 1 FROM treasury_movements m WHERE m.entity = f.entity AND m.iuf = f.iuf)"
        " ORDER BY f.id DESC LIMIT 1", (a.entity,)).fetchone()
    if got is None:
        die("every flow of %s has its movement" % a.entity)
    iuf, cents = got
    bill = con.execute("SELECT COALESCE(MAX(CAST(bill AS INTEGER)), 0) + 1 FROM"
                       " treasury_movements WHERE entity = ? AND year = ?",
                       (a.entity, YEAR)).fetchone()[0]
    with con:
        key = insert_movement(con, a.entity, bill, iuf, cents, a.date, psp_name, now_iso())
        con.execute("INSERT INTO recon_dirty (entity, iuv, iuf, movement) VALUES (?, NULL, ?, ?)",
                    (a.entity, iuf, key))
    print(json.dumps({"movement": key, "iuf": iuf, "cents": cents}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["seed", "flow", "movement"])
    ap.add_argument("--db", required=True)
    ap.add_argument("--entity", default="c_g224")
    ap.add_argument("--date", required=True, help="flow and value date, YYYY-MM-DD")
    ap.add_argument("--flows", type=int, default=0)
    ap.add_argument("--movements", type=int, default=0)
    a = ap.parse_args()
    try:
        datetime.strptime(a.date, "%Y-%m-%d")
    except ValueError:
        die("--date must be YYYY-MM-DD, got %r" % a.date)
    if a.action == "seed" and (a.flows < 1 or a.movements < 0):
        die("seed needs --flows >= 1 and --movements >= 0")
    con = sqlite3.connect(a.db, isolation_level="DEFERRED")
    con.execute("PRAGMA busy_timeout=10000")
    {"seed": seed, "flow": new_flow, "movement": new_movement}[a.action](con, a)
    con.close()


if __name__ == "__main__":
    main()
