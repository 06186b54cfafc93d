//! The settlement flows pull over REST: finished flows in order, behind the entity's key, a flow
//! still loading holding back the later ones until it finishes.

mod common;

use common::*;
use snodo_store::prelude::*;
use snodo_store::{NewReport, ReportTotals, SqliteStore};

fn key<'a>(iuf: &'a str, revision: i64) -> NewReport<'a> {
    NewReport {
        entity: "c_g224",
        psp_id: "BCITITMM",
        iuf,
        revision,
        source: "rest",
        flow_time: Some("2026-12-01T08:00:00Z"),
        flow_date: Some("2026-12-01"),
        regulation_id: Some("SCT-1"),
        regulation_date: Some("2026-12-02"),
        header: None,
        declared_count: Some(2),
        declared_cents: Some(3000),
        published: None,
    }
}

fn totals(cents: i64) -> ReportTotals {
    ReportTotals {
        computed_count: 2,
        computed_cents: cents,
        linked: 1,
    }
}

fn pull(port: u16, since: &str, limit: u32) -> serde_json::Value {
    let r = get(
        port,
        &format!("/api/v1/entities/c_g224/reports?since={since}&limit={limit}"),
        KEY_PADOVA,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn iufs(page: &serde_json::Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}#{}", i["iuf"].as_str().unwrap(), i["revision"]))
        .collect()
}

#[test]
fn reports_pull_pages_in_finish_order_and_waits_for_a_loading_flow() {
    let home = Home::new();
    let store = SqliteStore::open(&home.path().join("var/snodo.db")).unwrap();
    let a = store.begin_report(&key("FDR-A", 1)).unwrap();
    assert!(store.finish_report(a.id, &totals(3000), &[], &[]).unwrap());
    let loading = store.begin_report(&key("FDR-B", 1)).unwrap();
    let c = store.begin_report(&key("FDR-C", 1)).unwrap();
    assert!(store.finish_report(c.id, &totals(2900), &[], &[]).unwrap());
    // A failed flow is no settlement: never listed, and it holds nothing back.
    store.fail_report(&key("FDR-X", 1), "not ours").unwrap();

    let _hub = Hub::start_serving(&home);
    let p = home.port;

    // Feltre's key may not pull Padova's flows; no key at all is refused.
    let other = get(p, "/api/v1/entities/c_g224/reports", KEY_FELTRE);
    assert_eq!(other.status, 403, "{}", other.body);
    let none = http(p, "GET", "/api/v1/entities/c_g224/reports", None, &[], None);
    assert_eq!(none.status, 401);
    let bad = get(p, "/api/v1/entities/c_g224/reports?since=x", KEY_PADOVA);
    assert_eq!(bad.status, 400, "{}", bad.body);

    let first = pull(p, "", 100);
    assert_eq!(iufs(&first), ["FDR-A#1"], "C waits behind the loading B");
    let item = &first["items"][0];
    assert_eq!(item["pspId"], "BCITITMM");
    assert_eq!(item["computedCents"], 3000);
    assert_eq!(item["declaredCount"], 2);
    assert_eq!(item["superseded"], false);
    let cursor = first["nextCursor"].as_str().unwrap().to_string();
    let idle = pull(p, &cursor, 100);
    assert_eq!(iufs(&idle), Vec::<String>::new());
    assert_eq!(
        idle["nextCursor"],
        cursor.as_str(),
        "nothing new keeps the cursor"
    );

    // B finishes (after C did): now both come, in store order, one page at a time.
    assert!(store
        .finish_report(loading.id, &totals(3000), &[], &[])
        .unwrap());
    let b = pull(p, &cursor, 1);
    assert_eq!(iufs(&b), ["FDR-B#1"]);
    let c_page = pull(p, b["nextCursor"].as_str().unwrap(), 1);
    assert_eq!(iufs(&c_page), ["FDR-C#1"]);
    assert_eq!(c_page["items"][0]["computedCents"], 2900);

    // A revision supersedes A: listed after, and A shows superseded from the start again.
    let a2 = store.begin_report(&key("FDR-A", 2)).unwrap();
    assert!(store.finish_report(a2.id, &totals(3000), &[], &[]).unwrap());
    let next = pull(p, c_page["nextCursor"].as_str().unwrap(), 100);
    assert_eq!(iufs(&next), ["FDR-A#2"]);
    let all = pull(p, "0", 100);
    assert_eq!(iufs(&all), ["FDR-A#1", "FDR-B#1", "FDR-C#1", "FDR-A#2"]);
    assert_eq!(all["items"][0]["superseded"], true);
}
