//! Runs the plan: one task per pipeline, polling its source on its cron schedule and handing each
//! claimed message to the pipeline's work on a blocking thread, so a slow entity never holds up
//! another. Stream intakes, which block on their source for good, run on threads of their own.

use crate::import::{ImportLimits, ImportOutcome, Importer};
use crate::metrics::DeliveryStats;
use crate::plan::{
    EntityRuntime, LivePlan, PipelineKind, PipelinePlan, Plan, PlanDiff, ReceiptRoute,
};
use crate::reload::{ReloadOutcome, ReloadRequest};
use snodo_adapters::flow_format::FlowFormat;
use snodo_adapters::text_encoding::Encoding;
use snodo_connectors::{Body, Message, Sink, Supervised};
use snodo_store::Store;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::{error, info, warn};

pub struct Hub {
    plan: Arc<Plan>,
    store: Arc<dyn Store>,
    stats: Arc<DeliveryStats>,
    /// This hub among several sharing the store: the holder of its leases.
    instance: String,
    /// Where a reload reads the configuration again (`None`: the embedded demo).
    config_path: Option<PathBuf>,
}

impl Hub {
    pub fn new(plan: Plan, store: Arc<dyn Store>, config_path: Option<PathBuf>) -> Self {
        let instance = instance_name(&plan.config.hub);
        Self {
            plan: Arc::new(plan),
            store,
            stats: Default::default(),
            instance,
            config_path,
        }
    }

    /// Runs every pipeline until `shutdown` flips to true, then lets work in progress stop at
    /// its next safe point (a committed chunk) and returns. Meanwhile a reload (SIGHUP,
    /// `POST /admin/reload`) applies a new configuration without stopping the node's calls.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), EngineError> {
        let started = Arc::new(AtomicBool::new(false));
        let live = LivePlan::new(self.plan.clone());
        let (reload_tx, mut reloads) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
        let mut tasks = Vec::new();
        tasks.push(
            self.serve_http(
                live.clone(),
                shutdown.clone(),
                started.clone(),
                reload_tx.clone(),
            )
            .await?,
        );
        crate::reload::on_sighup(reload_tx);
        let mut running = Pipelines::default();
        for (index, p) in self.plan.pipelines.iter().enumerate() {
            if self.plan.pipeline_runs(p) {
                let r = self.start_pipeline(&self.plan, index).await?;
                running.0.insert(p.name.clone(), r);
            } else {
                info!(pipeline = %p.name, entity = %p.entity, "paused: the entity is suspended");
            }
        }
        let mut puller = self.start_puller(&self.plan)?;
        let (plan, store, instance) =
            (self.plan.clone(), self.store.clone(), self.instance.clone());
        let keeper = tokio::task::spawn_blocking(move || {
            crate::events::EventKeeper::new(&plan, store, instance)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|message| EngineError::Start {
            pipeline: "event stream".into(),
            message,
        })?;
        tasks.push(tokio::spawn(keeper.run(shutdown.clone())));
        tasks.push(tokio::spawn(crate::expiry::run(
            live.clone(),
            self.store.clone(),
            shutdown.clone(),
        )));
        let reconciler = crate::reconciler::Reconciler::new(self.store.clone(), live.clone());
        tasks.push(tokio::spawn(
            reconciler.run(std::time::Duration::from_secs(1), shutdown.clone()),
        ));
        started.store(true, Ordering::SeqCst);
        info!(pipelines = self.plan.pipelines.len(), instance = %self.instance, "hub running");
        let mut draining = Vec::new();
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                Some(request) = reloads.recv() => {
                    let outcome = self
                        .reload(&live, &mut running, &mut puller, &mut draining)
                        .await;
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                }
            }
        }
        info!("stopping: waiting for work in progress to reach a safe point");
        for r in running.0.into_values().chain(puller) {
            r.stop();
            draining.push(r.task);
        }
        for t in draining.into_iter().chain(tasks) {
            let _ = t.await;
        }
        info!("stopped");
        Ok(())
    }

    /// Starts pipeline `index` of `plan`, with its own stop signal.
    async fn start_pipeline(&self, plan: &Arc<Plan>, index: usize) -> Result<Running, EngineError> {
        let p = &plan.pipelines[index];
        let start_err = |message: String| EngineError::Start {
            pipeline: p.name.clone(),
            message,
        };
        let (stop_tx, rx) = watch::channel(false);
        let flag = Arc::new(AtomicBool::new(false));
        let task = match &p.kind {
            PipelineKind::ImportFlows { .. } | PipelineKind::TreasuryFiles { .. } => {
                let runner =
                    PipelineRunner::new(plan.clone(), index, self.store.clone(), flag.clone())?;
                tokio::spawn(runner.run(rx))
            }
            PipelineKind::StreamPositions { .. } => {
                let (plan, store) = (plan.clone(), self.store.clone());
                let intake = tokio::task::spawn_blocking(move || {
                    crate::stream::StreamIntake::new(&plan, index, store)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(start_err)?;
                // A thread of its own for good: an intake blocks on its source the whole
                // time, and must not take a thread of the pool the answers need.
                let (done, finished) = tokio::sync::oneshot::channel::<()>();
                let stop = flag.clone();
                std::thread::Builder::new()
                    .name(format!("stream {}", p.name))
                    .spawn(move || {
                        intake.run(stop);
                        let _ = done.send(());
                    })
                    .map_err(|e| start_err(format!("cannot start its thread: {e}")))?;
                tokio::spawn(async move {
                    let _ = finished.await;
                })
            }
            PipelineKind::Receipts {
                route: ReceiptRoute::Push(_),
                ..
            }
            | PipelineKind::Reports { .. } => {
                let deliverer = crate::deliver::Deliverer::new(
                    plan.clone(),
                    index,
                    self.store.clone(),
                    self.stats.clone(),
                )
                .map_err(start_err)?;
                tokio::spawn(deliverer.run(rx))
            }
            PipelineKind::Receipts {
                route: ReceiptRoute::Batch { .. },
                ..
            } => {
                let exporter = crate::export::Exporter::new(
                    plan.clone(),
                    index,
                    self.store.clone(),
                    self.instance.clone(),
                )
                .map_err(start_err)?;
                tokio::spawn(exporter.run(rx))
            }
            PipelineKind::Expired { .. } => {
                let exporter = crate::expiry::ExpiredExporter::new(
                    plan.clone(),
                    index,
                    self.store.clone(),
                    self.instance.clone(),
                )
                .map_err(start_err)?;
                tokio::spawn(exporter.run(rx))
            }
            PipelineKind::Reconciliation { .. } => {
                let exporter = crate::reconcile_export::ReconExporter::new(
                    plan.clone(),
                    index,
                    self.store.clone(),
                    self.instance.clone(),
                )
                .map_err(start_err)?;
                tokio::spawn(exporter.run(rx))
            }
        };
        Ok(Running {
            stop_tx,
            flag,
            task,
        })
    }

    /// The settlement flows pull, when `[pagopa.fdr]` is configured.
    fn start_puller(&self, plan: &Arc<Plan>) -> Result<Option<Running>, EngineError> {
        if plan.fdr.is_none() {
            return Ok(None);
        }
        let puller = crate::reports::Puller::new(
            plan.clone(),
            self.store.clone(),
            self.instance.clone(),
            tokio::runtime::Handle::current(),
        )
        .map_err(|e| EngineError::Start {
            pipeline: "settlement flows pull".into(),
            message: e.to_string(),
        })?;
        let (stop_tx, rx) = watch::channel(false);
        Ok(Some(Running {
            stop_tx,
            flag: Arc::new(AtomicBool::new(false)),
            task: tokio::spawn(puller.run(rx)),
        }))
    }

    /// Loads the configuration again and applies it, or refuses it and keeps the one running.
    async fn reload(
        &self,
        live: &LivePlan,
        running: &mut Pipelines,
        puller: &mut Option<Running>,
        draining: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> ReloadOutcome {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::plan::load(path.as_deref())).await;
        let new = match loaded {
            Ok(Ok(p)) => Arc::new(p),
            Ok(Err(problems)) => {
                return self.refused(problems.iter().map(|p| p.to_string()).collect())
            }
            Err(e) => return self.refused(vec![format!("loading the configuration failed: {e}")]),
        };
        let old = live.get();
        let restart = old.restart_needed(&new);
        if !restart.is_empty() {
            return self.refused(vec![format!(
                "[{}] changed: only a restart applies it (the running configuration stays)",
                restart.join("], [")
            )]);
        }
        let diff = PlanDiff::between(&old, &new);
        live.set(new.clone());
        // Stop what is gone, changed or paused; what stays keeps running untouched.
        let names: Vec<String> = running.0.keys().cloned().collect();
        for name in names {
            let keep = old.pipeline_unchanged(&name, &new)
                && new
                    .pipelines
                    .iter()
                    .any(|p| p.name == name && new.pipeline_runs(p));
            if !keep {
                if let Some(r) = running.0.remove(&name) {
                    info!(pipeline = %name, "reload: stopping at its next safe point");
                    r.stop();
                    draining.push(r.task);
                }
            }
        }
        let mut not_started = Vec::new();
        for (index, p) in new.pipelines.iter().enumerate() {
            if running.0.contains_key(&p.name) || !new.pipeline_runs(p) {
                continue;
            }
            match self.start_pipeline(&new, index).await {
                Ok(r) => {
                    info!(pipeline = %p.name, "reload: started");
                    running.0.insert(p.name.clone(), r);
                }
                Err(e) => {
                    warn!(pipeline = %p.name, "reload: cannot start: {e}");
                    not_started.push(e.to_string());
                }
            }
        }
        if diff.pagopa_changed || !diff.entities.is_empty() || puller.is_some() != new.fdr.is_some()
        {
            if let Some(r) = puller.take() {
                r.stop();
                draining.push(r.task);
            }
            match self.start_puller(&new) {
                Ok(p) => *puller = p,
                Err(e) => not_started.push(e.to_string()),
            }
        }
        draining.retain(|t| !t.is_finished());
        let outcome = ReloadOutcome::Applied {
            diff: Box::new(diff),
            not_started,
        };
        crate::reload::record(self.store.clone(), &outcome).await;
        outcome
    }

    fn refused(&self, problems: Vec<String>) -> ReloadOutcome {
        for p in &problems {
            warn!("reload refused: {p}");
        }
        ReloadOutcome::Refused { problems }
    }
}

/// A pipeline (or the pull) running under the plan it started with (which its task holds).
struct Running {
    /// Deliverers, exporters, import runners and the pull watch this.
    stop_tx: watch::Sender<bool>,
    /// Imports and stream intakes check this at their safe points.
    flag: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.stop_tx.send(true);
    }
}

/// The running pipelines by name.
#[derive(Default)]
struct Pipelines(std::collections::BTreeMap<String, Running>);

/// What stops the hub from starting.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("pipeline {pipeline}: {message}")]
    Start { pipeline: String, message: String },
    #[error("http.listen {listen}: {source}")]
    Listen {
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

impl Hub {
    /// Binds `http.listen` now (a taken port stops the start) and serves until shutdown.
    async fn serve_http(
        &self,
        live: Arc<LivePlan>,
        shutdown: watch::Receiver<bool>,
        started: Arc<AtomicBool>,
        reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    ) -> Result<tokio::task::JoinHandle<()>, EngineError> {
        let http = &self.plan.config.http;
        let listener = tokio::net::TcpListener::bind(&http.listen)
            .await
            .map_err(|source| EngineError::Listen {
                listen: http.listen.clone(),
                source,
            })?;
        let public_url = http.public_url.clone().unwrap_or_else(|| {
            let scheme = if http.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", http.listen)
        });
        let flows = Arc::new(crate::intake::StandingFlows::new(self.store.clone()));
        let api_stats = Arc::new(crate::metrics::ApiStats::default());
        let node = Arc::new(crate::node::NodeService::new(
            live.clone(),
            self.store.clone(),
            flows.clone(),
            api_stats.clone(),
        ));
        let admin_token = http
            .admin_token
            .as_ref()
            .map(|t| t.0.clone())
            .filter(|t| !t.is_empty());
        let start_err = |message: String| EngineError::Start {
            pipeline: "http".into(),
            message,
        };
        let guard = Arc::new(
            crate::listen::Guard::new(&self.plan.config, self.store.clone()).map_err(start_err)?,
        );
        let keys = crate::api::Keys::new(live.clone(), admin_token.as_deref());
        let api = crate::api::router(
            live,
            self.store.clone(),
            flows,
            api_stats,
            keys.clone(),
            guard.failures.clone(),
            &public_url,
        )
        .map_err(|message| EngineError::Start {
            pipeline: "api".into(),
            message,
        })?;
        let (app, metrics_app) = crate::http::router(crate::http::AppParts {
            node,
            store: self.store.clone(),
            stats: self.stats.clone(),
            admin_token,
            public_url: &public_url,
            started,
            guard: guard.clone(),
            reload: Some(reload),
            keys,
            shutdown: Some(shutdown.clone()),
        });
        let app = app.merge(api);
        crate::api::spawn_pruner(
            self.store.clone(),
            self.plan.idempotency_ttl,
            shutdown.clone(),
        );
        if let (Some(addr), Some(metrics_app)) = (guard.metrics_listen.clone(), metrics_app) {
            let l = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| EngineError::Listen {
                    listen: addr.clone(),
                    source,
                })?;
            info!(listen = %addr, "serving /metrics");
            tokio::spawn(crate::listen::serve(
                l,
                metrics_app,
                guard.limits.clone(),
                None,
                shutdown.clone(),
            ));
        }
        info!(listen = %http.listen, tls = guard.tls.is_some(), "serving the node's calls at {public_url}{}", crate::http::PA_FOR_NODE_PATH);
        Ok(tokio::spawn(crate::listen::serve(
            listener,
            app,
            guard.limits.clone(),
            guard.tls.clone(),
            shutdown,
        )))
    }
}

struct PipelineRunner {
    plan: Arc<Plan>,
    index: usize,
    store: Arc<dyn Store>,
    stop: Arc<AtomicBool>,
    work: FileWork,
    source: Arc<Mutex<Supervised>>,
    schedule: cron::Schedule,
    entity: Arc<EntityRuntime>,
    /// Messages whose processing hit a passing failure; tried again at the next tick.
    retry: Arc<Mutex<Vec<Message>>>,
}

impl PipelineRunner {
    fn new(
        plan: Arc<Plan>,
        index: usize,
        store: Arc<dyn Store>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, EngineError> {
        let p = &plan.pipelines[index];
        let start_err = |message: String| EngineError::Start {
            pipeline: p.name.clone(),
            message,
        };
        let (work, source, schedule) = match &p.kind {
            PipelineKind::ImportFlows {
                format,
                encoding,
                source,
                schedule,
                outcomes,
                notices,
            } => {
                let outcomes = match outcomes {
                    Some(s) => Some(Arc::from(s.build().map_err(|e| start_err(e.to_string()))?)),
                    None => None,
                };
                let work = FileWork::Flows {
                    format: *format,
                    encoding: *encoding,
                    outcomes,
                    notice_threads: if *notices {
                        notice_threads(&plan.config.hub)
                    } else {
                        0
                    },
                };
                (work, source, schedule)
            }
            PipelineKind::TreasuryFiles {
                decode,
                encoding,
                source,
                schedule,
            } => {
                let work = FileWork::Treasury {
                    decode: *decode,
                    encoding: *encoding,
                };
                (work, source, schedule)
            }
            _ => return Err(start_err("not a pipeline of files".into())),
        };
        let mut source = source.build().map_err(|e| start_err(e.to_string()))?;
        // A file larger than a flow may be is not worth taking in.
        source.limit_file_size(plan.config.hub.max_flow_bytes);
        let source = Supervised::wrap(p.name.clone(), source);
        let schedule = (**schedule).clone();
        let entity = plan.entity_of(p).map_err(start_err)?;
        Ok(Self {
            plan: plan.clone(),
            index,
            store,
            stop,
            work,
            source: Arc::new(Mutex::new(source)),
            schedule,
            entity,
            retry: Arc::new(Mutex::new(Vec::new())),
        })
    }

    fn pipeline(&self) -> &PipelinePlan {
        &self.plan.pipelines[self.index]
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let name = self.pipeline().name.clone();
        info!(pipeline = %name, entity = %self.pipeline().entity, "pipeline started");
        let this = Arc::new(self);
        while crate::ticks::next_tick(&this.schedule, &mut shutdown)
            .await
            .is_some()
        {
            let work = this.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || work.tick()).await {
                error!(pipeline = %name, "pipeline work panicked: {e}");
            }
        }
        let work = this.clone();
        let _ = tokio::task::spawn_blocking(move || lock(&work.source).close()).await;
        info!(pipeline = %name, "pipeline stopped");
    }

    /// One poll: retry what failed before, then claim and process what is new. While the
    /// source is unreachable, it is polled again only once its backoff has passed.
    fn tick(&self) {
        let name = &self.pipeline().name;
        let mut todo: Vec<Message> = std::mem::take(&mut *lock(&self.retry));
        let mut source = lock(&self.source);
        if source.due_in().is_zero() {
            match source.poll() {
                Ok(msgs) => todo.extend(msgs),
                // A connection problem is the supervisor's to log, once.
                Err(e) if source.is_connected() => {
                    warn!(pipeline = %name, "poll failed, will retry at the next tick: {e}")
                }
                Err(_) => {}
            }
        }
        drop(source);
        for msg in todo {
            if self.stop.load(Ordering::SeqCst) {
                // Left claimed: the next start hands it over again.
                continue;
            }
            let file = msg.name.clone();
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(msg)));
            if let Err(panic) = run {
                // The claim stays with the source: the next start hands it over again, and the
                // attempt counted for it sets it aside once it has failed too often.
                let what = panic_text(&panic);
                error!(pipeline = %name, file = %file, "the import panicked: {what}");
                let _ = self.store.fail_file_attempt(
                    name,
                    &file,
                    &format!("the import panicked: {what}"),
                );
            }
        }
    }

    /// Counts an attempt at the claimed file and returns its number; `None` when the file was
    /// set aside (the attempts before this one all failed or stopped the hub) or the count could
    /// not be kept (the file waits for the next tick).
    fn begin_attempt(&self, msg: &mut Option<Message>) -> Option<u32> {
        let name = &self.pipeline().name;
        let m = msg.as_ref()?;
        let (before, last_error) = match self.store.begin_file_attempt(name, &m.name) {
            Ok(v) => v,
            Err(e) => {
                warn!(pipeline = %name, file = %m.name, "cannot count the attempt, retrying at the next tick: {e}");
                if let Some(mut m) = msg.take() {
                    m.redelivered = true;
                    lock(&self.retry).push(m);
                }
                return None;
            }
        };
        if before < MAX_FILE_ATTEMPTS {
            return Some(before + 1);
        }
        let last = last_error.unwrap_or_else(|| {
            "none recorded: the hub stopped during each attempt (a crash or a kill)".to_string()
        });
        if let Some(m) = msg.take() {
            self.set_aside(m, before, &last);
        }
        None
    }

    /// Moves a file that failed `attempts` times to the source's failed place, with why.
    fn set_aside(&self, msg: Message, attempts: u32, last_error: &str) {
        let name = &self.pipeline().name;
        let file = msg.name.clone();
        error!(pipeline = %name, file = %file, attempts, "flow set aside after repeated failures; last error: {last_error}");
        let reason = format!(
            "set aside after {attempts} attempts that failed or stopped the hub; last error: {last_error}\n"
        );
        match msg.ack.failed(&reason) {
            Ok(()) => {
                if let Err(e) = self.store.forget_file_attempts(name, &file) {
                    warn!(pipeline = %name, file = %file, "cannot forget the attempts: {e}");
                }
            }
            Err(e) => {
                error!(pipeline = %name, file = %file, "cannot move the flow to failed/: {e}")
            }
        }
    }

    fn process(&self, msg: Message) {
        let name = &self.pipeline().name;
        let mut slot = Some(msg);
        let Some(attempt) = self.begin_attempt(&mut slot) else {
            return;
        };
        let Some(mut msg) = slot else { return };
        let forget = |file: &str| {
            if let Err(e) = self.store.forget_file_attempts(name, file) {
                warn!(pipeline = %name, file = %file, "cannot forget the attempts: {e}");
            }
        };
        let path = match &msg.body {
            Body::File(p) => p.clone(),
            Body::Bytes(_) => {
                error!(pipeline = %name, file = %msg.name, "in-memory messages are not import flows");
                let _ = msg.ack.failed("an import flow must arrive as a file");
                forget(&msg.name);
                return;
            }
        };
        info!(pipeline = %name, file = %msg.name, redelivered = msg.redelivered, attempt, "flow claimed");
        crate::failpoint("import-claimed");
        let (format, encoding, outcomes, notice_threads) = match &self.work {
            FileWork::Flows {
                format,
                encoding,
                outcomes,
                notice_threads,
            } => (*format, *encoding, outcomes, *notice_threads),
            FileWork::Treasury { decode, encoding } => {
                let applied = crate::treasury::apply_file(
                    self.store.as_ref(),
                    &self.entity,
                    *decode,
                    *encoding,
                    &msg.name,
                    &path,
                );
                return self.treasury_done(msg, attempt, applied);
            }
        };
        let importer = Importer {
            store: self.store.as_ref(),
            format,
            encoding,
            entity: &self.entity,
            staging: staging_dir(&self.plan),
            limits: ImportLimits::from_hub(&self.plan.config.hub),
            stop: &self.stop,
            progress: &|_| {},
            notice_threads,
        };
        let outcome = importer.import(&msg.name, &path, msg.redelivered);
        if matches!(
            outcome,
            Ok(ImportOutcome::Done { .. } | ImportOutcome::Aborted { .. })
        ) {
            // Imported or refused for good: publishing is retried on its own, without counting.
            forget(&msg.name);
        }
        match outcome {
            Ok(ImportOutcome::Done { flow, files, .. }) => {
                if let Some(sink) = outcomes {
                    for f in &files {
                        if let Err(e) = sink.put_file(&f.name, &f.path) {
                            warn!(pipeline = %name, file = %msg.name, "cannot publish {}: {e}; retrying at the next tick", f.name);
                            msg.redelivered = true;
                            lock(&self.retry).push(msg);
                            return;
                        }
                    }
                }
                match msg.ack.done() {
                    Ok(()) => {
                        info!(pipeline = %name, file = %msg.name, flow = flow.id, rows = flow.progress.rows_done, accepted = flow.progress.accepted, rejected = flow.progress.rejected, status = flow.status.as_str(), "flow imported")
                    }
                    Err(e) => {
                        error!(pipeline = %name, file = %msg.name, "flow imported but the source could not archive it: {e}")
                    }
                }
            }
            Ok(ImportOutcome::Aborted { code, message, .. }) => {
                warn!(pipeline = %name, file = %msg.name, code = %code, "flow aborted: {message}");
                if let Err(e) = msg.ack.failed(&format!("{code}: {message}\n")) {
                    error!(pipeline = %name, file = %msg.name, "cannot move the flow to failed/: {e}");
                }
            }
            Ok(ImportOutcome::Interrupted) => {
                info!(pipeline = %name, file = %msg.name, "stopping mid-flow; it resumes at the next start");
                if let Err(e) = self.store.spare_file_attempt(name, &msg.name) {
                    warn!(pipeline = %name, file = %msg.name, "cannot uncount the attempt: {e}");
                }
            }
            Err(e) => {
                let error = e.to_string();
                if let Err(e) = self.store.fail_file_attempt(name, &msg.name, &error) {
                    warn!(pipeline = %name, file = %msg.name, "cannot record the failure: {e}");
                }
                if attempt >= MAX_FILE_ATTEMPTS {
                    self.set_aside(msg, attempt, &error);
                    return;
                }
                warn!(pipeline = %name, file = %msg.name, attempt, "import failed, retrying at the next tick: {error}");
                msg.redelivered = true;
                lock(&self.retry).push(msg);
            }
        }
    }
}

impl PipelineRunner {
    /// What applying a treasury file came to: archived, set aside with why (nothing applied),
    /// or tried again at the next tick (the store failed).
    fn treasury_done(
        &self,
        msg: Message,
        attempt: u32,
        applied: Result<Result<crate::treasury::Applied, String>, snodo_store::StoreError>,
    ) {
        let name = &self.pipeline().name;
        let forget = |file: &str| {
            if let Err(e) = self.store.forget_file_attempts(name, file) {
                warn!(pipeline = %name, file = %file, "cannot forget the attempts: {e}");
            }
        };
        match applied {
            Ok(Ok(a)) => {
                forget(&msg.name);
                let file = msg.name.clone();
                match msg.ack.done() {
                    Ok(()) => info!(pipeline = %name, file = %file, movements = a.movements,
                        inserted = a.counts.inserted, updated = a.counts.updated,
                        unchanged = a.counts.unchanged, removed = a.counts.removed,
                        skipped = a.skipped, "treasury file applied"),
                    Err(e) => {
                        error!(pipeline = %name, file = %file, "treasury file applied but the source could not archive it: {e}")
                    }
                }
            }
            Ok(Err(why)) => {
                forget(&msg.name);
                warn!(pipeline = %name, file = %msg.name, "treasury file refused: {why}");
                let file = msg.name.clone();
                if let Err(e) = msg.ack.failed(&format!("{why}\n")) {
                    error!(pipeline = %name, file = %file, "cannot move the file to failed/: {e}");
                }
            }
            Err(e) => {
                let error = e.to_string();
                if let Err(e) = self.store.fail_file_attempt(name, &msg.name, &error) {
                    warn!(pipeline = %name, file = %msg.name, "cannot record the failure: {e}");
                }
                if attempt >= MAX_FILE_ATTEMPTS {
                    self.set_aside(msg, attempt, &error);
                    return;
                }
                warn!(pipeline = %name, file = %msg.name, attempt, "treasury file failed, retrying at the next tick: {error}");
                let mut msg = msg;
                msg.redelivered = true;
                lock(&self.retry).push(msg);
            }
        }
    }
}

/// What a pipeline of files does with each file.
enum FileWork {
    /// MyPay import flows into the registry, outcome files to a sink.
    Flows {
        format: &'static dyn FlowFormat,
        encoding: Encoding,
        outcomes: Option<Arc<dyn Sink>>,
        /// Threads printing each flow's notices (0: none).
        notice_threads: usize,
    },
    /// Treasury files into the entity's movements.
    Treasury {
        decode: crate::codecs::DecodeTreasury,
        encoding: Option<Encoding>,
    },
}

/// `hub.instance`, else the host name and a hash of the data directory: unique among hubs
/// sharing a store (each has its own data directory), and the same after a restart, so a hub
/// that crashed takes its own leases back at once instead of waiting for them to expire.
pub fn instance_name(hub: &crate::config::HubConfig) -> String {
    use sha2::{Digest, Sha256};
    if let Some(i) = hub.instance.as_ref().filter(|i| !i.is_empty()) {
        return i.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "hub".into());
    let dir = std::fs::canonicalize(&hub.data_dir).unwrap_or_else(|_| hub.data_dir.clone());
    let hash = Sha256::digest(dir.to_string_lossy().as_bytes());
    format!("{host}-{}", hex::encode(&hash[..4]))
}

/// Attempts at a claimed file, failed or ended by the hub stopping, before it is set aside.
pub const MAX_FILE_ATTEMPTS: u32 = 3;

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Threads printing a flow's notices: `hub.notice_threads`, else one per core.
pub fn notice_threads(hub: &crate::config::HubConfig) -> usize {
    hub.notice_threads
        .unwrap_or_else(crate::notices::default_threads)
        .max(1)
}

/// Where flows are unpacked and their outcome files built, per flow id.
pub fn staging_dir(plan: &Plan) -> PathBuf {
    plan.config.hub.data_dir.join("flows")
}
