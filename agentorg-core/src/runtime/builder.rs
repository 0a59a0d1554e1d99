//! Building and starting an org: chart, backends, patterns, hosted roles.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{AgentOptions, OrgError, RuntimeConfig};
use super::consumers::principal_consumer;
use super::extensions::Extensions;
use super::health::RoleStats;
use super::host::HostedRole;
use super::kernel::Kernel;
use super::org::{maintenance, Org};
use super::records::{role_namespace, Layout};
use super::seam::{Lifecycle, Pattern, Registry};
use super::timers::{self, Timers};
use super::{outbox, registry};
use crate::chart::OrgChart;
use crate::clock::{Clock, MonotonicClock};
use crate::codec::Codec;
use crate::name::Name;
use crate::store::{MemoryStore, ScopedStore, StateStore};
use crate::subject::Subjects;
use crate::tools::{ScopedToolHost, ToolHost, ToolRouter};
use crate::transport::{MemoryTransport, Transport};

/// Builds an [`Org`]: chart, backends, patterns, hosted roles,
/// configuration.
///
/// `Org::builder` (from the agent layer, above the patterns) starts one with
/// the default patterns — hierarchy and peer channels — and hosts agents
/// with `.agent(role, agent)`; [`OrgBuilder::new`] starts a bare kernel, for
/// patterns of your own.
pub struct OrgBuilder {
    chart: OrgChart,
    transport: Option<Arc<dyn Transport>>,
    store: Option<Arc<dyn StateStore>>,
    tools: Option<Arc<dyn ToolHost>>,
    clock: Option<Arc<dyn Clock>>,
    config: RuntimeConfig,
    registry: Registry,
    hosted: Vec<(String, AgentOptions, Extensions)>,
}

impl fmt::Debug for OrgBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgBuilder")
            .field("org", self.chart.org())
            .field("patterns", &self.registry.patterns)
            .field(
                "hosted",
                &self.hosted.iter().map(|a| &a.0).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OrgBuilder {
    /// A builder of an org of `chart` with no pattern registered yet.
    pub fn new(chart: OrgChart) -> Self {
        Self {
            chart,
            transport: None,
            store: None,
            tools: None,
            clock: None,
            config: RuntimeConfig::default(),
            registry: Registry::new(),
            hosted: Vec::new(),
        }
    }

    /// Sets the transport (default: a new [`MemoryTransport`]).
    pub fn transport(mut self, t: Arc<dyn Transport>) -> Self {
        self.transport = Some(t);
        self
    }

    /// Sets the state store (default: a new [`MemoryStore`]).
    pub fn store(mut self, s: Arc<dyn StateStore>) -> Self {
        self.store = Some(s);
        self
    }

    /// Sets the org's tools; each role sees only its grants (default:
    /// none).
    pub fn tools(mut self, t: Arc<dyn ToolHost>) -> Self {
        self.tools = Some(t);
        self
    }

    /// Sets the clock (default: a [`MonotonicClock`] anchored at start).
    pub fn clock(mut self, c: Arc<dyn Clock>) -> Self {
        self.clock = Some(c);
        self
    }

    /// Sets the runtime configuration.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers a pattern: its handlers, timers and services join the
    /// kernel's table.
    pub fn pattern(mut self, pattern: impl Pattern) -> Self {
        self.registry.add(&pattern);
        self
    }

    /// The patterns registered so far, by name.
    pub fn patterns(&self) -> &[&'static str] {
        &self.registry.patterns
    }

    /// The registry the patterns registered into, e.g. to list the
    /// consumers they need ([`OrgConsumers::with_handlers`](super::OrgConsumers::with_handlers)).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Hosts `role` in this process, with the application's objects the
    /// patterns call into (`app`: one per pattern, by type; see
    /// [`HostedRole::app`]).
    pub fn host(mut self, role: impl Into<String>, options: AgentOptions, app: Extensions) -> Self {
        self.hosted.push((role.into(), options, app));
        self
    }

    /// Validates, provisions the consumers (unless configured not to),
    /// republishes what a previous run left in the outboxes, and starts the
    /// hosted roles, the timers and the maintenance sweeps.
    pub async fn start(self) -> Result<Org, OrgError> {
        self.config.validate()?;
        let invalid = |message: String| OrgError::InvalidConfig { message };
        let mut names = HashSet::new();
        if let Some(dup) = self.registry.patterns.iter().find(|p| !names.insert(**p)) {
            return Err(invalid(format!("pattern `{dup}` is registered twice")));
        }
        let mut timer_handlers = BTreeMap::new();
        for (kind, handler) in self.registry.timers {
            let kind =
                Name::new(&kind).map_err(|e| invalid(format!("timer kind `{kind}`: {e}")))?;
            timer_handlers.insert(kind, handler);
        }
        let mut hosted: BTreeMap<Name, (AgentOptions, Extensions)> = BTreeMap::new();
        for (role, options, app) in self.hosted {
            if self.chart.is_principal(&role) {
                return Err(OrgError::PrincipalHosted { role });
            }
            let Some(r) = self.chart.role(&role) else {
                return Err(OrgError::UnknownRole { role });
            };
            if hosted.insert(r.name().clone(), (options, app)).is_some() {
                return Err(OrgError::DuplicateAgent { role });
            }
        }
        let org = self.chart.org().clone();
        // This process republishes the outbox entries of its roles and fires
        // their timers; the principal's too when it is the admin
        // (provisioning) process: under per-role broker permissions only the
        // admin may send as the principal.
        let mut senders: Vec<Name> = hosted.keys().cloned().collect();
        if self.config.provision {
            senders.push(self.chart.principal().clone());
        }
        let kernel = Arc::new(Kernel {
            timers: Timers::new(&org, senders.clone())?,
            subjects: Subjects::new(org.clone()),
            layout: Layout::new(&org)?,
            transport: self
                .transport
                .unwrap_or_else(|| Arc::new(MemoryTransport::new())),
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            tools: self.tools.unwrap_or_else(|| Arc::new(ToolRouter::new())),
            clock: self
                .clock
                .unwrap_or_else(|| Arc::new(MonotonicClock::new())),
            config: self.config,
            codec: Codec::default(),
            instance: format!("p{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
            handlers: self.registry.handlers,
            timer_handlers,
            cache: std::sync::Mutex::default(),
            cleanup: outbox::Cleanup::default(),
            conflicts: std::sync::atomic::AtomicU64::new(0),
            chart: self.chart,
        });
        if kernel.config.provision {
            provision(&kernel, hosted.keys()).await?;
        }
        let lifecycle = Lifecycle {
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let senders: HashSet<Name> = senders.into_iter().collect();
        outbox::sweep(&kernel, &senders, None, &lifecycle.shutdown).await;
        let mut roles = Vec::with_capacity(hosted.len());
        for (role, (options, app)) in hosted {
            let stats = Arc::new(RoleStats::default());
            roles.push((role.clone(), Arc::clone(&stats)));
            let tools: Arc<dyn ToolHost> = Arc::new(ScopedToolHost::new(
                Arc::clone(&kernel.tools),
                role.clone(),
                kernel.chart.tool_grants(&role).to_vec(),
            ));
            let store: Arc<dyn StateStore> = Arc::new(ScopedStore::new(
                Arc::clone(&kernel.store),
                role_namespace(&org, &role),
            ));
            let host = Arc::new(HostedRole::new(
                Arc::clone(&kernel),
                role,
                options,
                app,
                tools,
                store,
                stats,
            ));
            for service in &self.registry.services {
                if service.serves(&host) {
                    let service = Arc::clone(service);
                    let (host, lc) = (Arc::clone(&host), lifecycle.clone());
                    lifecycle
                        .tracker
                        .spawn(async move { service.run(host, lc).await });
                }
            }
            lifecycle.tracker.spawn(host.run(lifecycle.clone()));
        }
        let started_at = kernel.now();
        let hosted_roles: Vec<Name> = roles.iter().map(|(r, _)| r.clone()).collect();
        if let Err(e) = registry::heartbeat(&kernel, &hosted_roles, started_at).await {
            tracing::warn!(error = %e, "writing this process's heartbeat failed; retried on the next sweep");
        }
        lifecycle
            .tracker
            .spawn(timers::run(Arc::clone(&kernel), lifecycle.shutdown.clone()));
        lifecycle.tracker.spawn(outbox::clean(
            Arc::clone(&kernel),
            lifecycle.shutdown.clone(),
        ));
        lifecycle.tracker.spawn(maintenance(
            Arc::clone(&kernel),
            senders,
            roles.clone(),
            started_at,
            lifecycle.shutdown.clone(),
        ));
        Ok(Org::new(kernel, roles, lifecycle))
    }
}

/// Creates the consumers of the hosted roles and the principal's (its
/// inbox, alerts and dead letters).
async fn provision<'a>(
    kernel: &'a Kernel,
    hosted: impl Iterator<Item = &'a Name>,
) -> Result<(), OrgError> {
    let k = kernel;
    for role in hosted.chain(std::iter::once(k.chart.principal())) {
        for c in k.role_consumers(role) {
            k.transport.ensure_consumer(&c).await?;
        }
    }
    for (key, subject) in [
        ("alerts", k.subjects.alerts()),
        ("dead", k.subjects.deadletter()),
    ] {
        let c = principal_consumer(&k.chart, &k.config, key, subject.into());
        k.transport.ensure_consumer(&c).await?;
    }
    Ok(())
}
