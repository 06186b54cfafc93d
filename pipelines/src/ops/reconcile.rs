//! `snodo reconcile --entity X`: the entity's labels (`crate::reconciler`) as the store keeps
//! them, after bringing them up to date (the marks no hub has relabelled yet, the grace periods
//! ended since); `snodo reconcile rebuild --entity X` relabels the whole entity.

use super::{entity_store, OpsError, Result};
use crate::plan::Plan;
pub use crate::reconciler::Grace;
use crate::reconciler::{item_of, rebuild, EntitySource, Labelling, Reconciler};
use chrono::{DateTime, Utc};
use serde::Serialize;
use snodo_core::reconcile::Class;
use snodo_store::{LabelCounts, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub entity: String,
    pub payments: u64,
    pub movements: u64,
    /// Items per class (a payment counts once in each of its classes).
    pub classes: BTreeMap<String, u64>,
}

/// The class named `code`, or why not (naming the known ones).
pub fn class(code: &str) -> std::result::Result<Class, String> {
    Class::from_code(code).ok_or_else(|| {
        let known: Vec<&str> = Class::ALL.iter().map(|c| c.code()).collect();
        format!("{code:?} is not a class (known: {})", known.join(", "))
    })
}

/// The instant `at` (RFC 3339) names, or now.
pub fn instant(at: Option<&str>) -> Result<DateTime<Utc>> {
    match at {
        None => Ok(Utc::now()),
        Some(t) => Ok(DateTime::parse_from_rfc3339(t)
            .map_err(|e| OpsError::Pipeline {
                pipeline: "reconcile".into(),
                message: format!("--at {t:?} is not an RFC 3339 instant: {e}"),
            })?
            .with_timezone(&Utc)),
    }
}

/// Relabels what is pending (every entity's marks, the items due by `now`) until nothing is.
pub fn catch_up(
    store: Arc<dyn Store>,
    plan: Arc<dyn EntitySource>,
    now: DateTime<Utc>,
) -> Result<()> {
    let r = Reconciler::new(store, plan);
    while r.tick(now)? > 0 {}
    Ok(())
}

/// The plan's entities with other grace periods (the CLI's flags).
struct WithGrace {
    plan: Arc<Plan>,
    grace: Grace,
}

impl EntitySource for WithGrace {
    fn fiscal_code(&self, entity: &str) -> Option<String> {
        self.plan.fiscal_code(entity)
    }
    fn grace(&self) -> Grace {
        self.grace
    }
}

/// The entity's counts per class, as stored.
pub fn summary(store: &dyn Store, entity: &str) -> Result<Summary> {
    let s = store.recon_summary(entity)?;
    Ok(Summary {
        entity: entity.to_string(),
        payments: s.payments,
        movements: s.movements,
        classes: s.classes,
    })
}

/// The entity's items of `class` (all when `None`), in key order.
pub fn items(
    store: &dyn Store,
    entity: &str,
    class: Option<&str>,
) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.recon_items(entity, class, &after, 1_000)?;
        let Some(last) = page.last() else { break };
        after = last.key.clone();
        out.extend(page.iter().map(item_of));
    }
    Ok(out)
}

/// `snodo reconcile --entity X`: catches up as of `now` (with `grace`), then reads.
pub fn reconcile(
    plan: Arc<Plan>,
    entity: &str,
    grace: Grace,
    now: DateTime<Utc>,
) -> Result<(Summary, Arc<dyn Store>)> {
    let store = entity_store(&plan, entity)?;
    catch_up(store.clone(), Arc::new(WithGrace { plan, grace }), now)?;
    Ok((summary(&*store, entity)?, store))
}

/// `snodo reconcile rebuild --entity X`: every payment and movement relabelled as of `now`.
pub fn rebuild_entity(
    plan: &Plan,
    entity: &str,
    grace: Grace,
    now: DateTime<Utc>,
) -> Result<LabelCounts> {
    let store = entity_store(plan, entity)?;
    let fiscal = plan
        .entities
        .get(entity)
        .map(|e| e.fiscal_code.as_str().to_string())
        .ok_or_else(|| OpsError::NoEntity(entity.to_string()))?;
    let who = Labelling {
        entity,
        fiscal: &fiscal,
        grace,
        now,
    };
    Ok(rebuild(&*store, &who)?)
}

/// [`summary`] on the console's store.
pub fn summary_of(admin: &super::Admin, entity: &str) -> Result<Summary> {
    summary(admin.store(), entity)
}

/// One page of the entity's items of `class` (all when `None`), after the key `after`.
pub fn items_page(
    admin: &super::Admin,
    entity: &str,
    class: Option<&str>,
    after: &str,
    limit: u32,
) -> Result<Vec<serde_json::Value>> {
    Ok(admin
        .store()
        .recon_items(entity, class, after, limit)?
        .iter()
        .map(item_of)
        .collect())
}
