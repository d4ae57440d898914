//! The priority book: every service's policy and adjustment, and the guardrails that decide what
//! becomes of an engine's change. Pure state, no I/O: the task around it stores what changed and
//! answers; time is passed in, so the rules are tested without waiting.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orch_protocol::events::EventKind;
use orch_protocol::priority::{
    Action, Adjustment, BaselineSource, Change, DEFAULT_PRIORITY, GuardView, Guardrail, HoldData, Outcome, Policy,
    PolicyRequest, PriorityView,
};
use orch_protocol::{ErrorCode, ProtocolError, principal};
use uuid::Uuid;

use crate::storage::priorities::{StoredHold, StoredPriority};

/// The guardrails against a runaway engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most engine changes of one service within `rate_window`.
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// Share of the known services the engine may change within `mass_window` before its changes
    /// are held; never fewer than `mass_min` services.
    pub mass_share: f64,
    pub mass_min: usize,
    pub mass_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate_limit: 10,
            rate_window: Duration::from_secs(60),
            mass_share: 0.5,
            mass_min: 5,
            mass_window: Duration::from_secs(60),
        }
    }
}

/// What an engine asks for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum EngineOp {
    Set { value: u8, ttl: Option<Duration> },
    Clear,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineRequest {
    pub service: String,
    pub op: EngineOp,
    /// Who sent it, as authenticated (orch-protocol `principal`).
    pub principal: String,
    pub source: String,
    pub reason: String,
}

/// Who asked for a change: the authenticated principal (orch-protocol `principal`) and what the
/// caller said of itself and why.
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub principal: &'a str,
    pub source: &'a str,
    pub reason: &'a str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    policy: Policy,
    adjustment: Option<Adjustment>,
    updated_at: Option<DateTime<Utc>>,
}

struct Hold {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    deadline: Instant,
    /// The latest held request per service, with the id of its `held` change.
    held: BTreeMap<String, (EngineRequest, Uuid)>,
}

/// What happened beyond the answers: to be stored and announced by the caller.
#[derive(Default)]
pub struct Effects {
    pub changes: Vec<Change>,
    pub system: Vec<(EventKind, HoldData)>,
    /// Services whose policy or adjustment changed.
    pub dirty: BTreeSet<String>,
    /// The hold began, changed what it holds, or ended: to be stored ([`Book::stored_hold`]).
    pub hold_changed: bool,
    /// Tallies recorded in `changes`, kept to be counted again if the batch cannot be stored.
    flushed: Vec<(TallyKey, Tally)>,
}

/// Firsts of a window (refusals, held changes) recorded at once per second; beyond it they are
/// counted with the rest of their window. A flood across many services (1,000 services tripping
/// the rate limit in the same second) then costs at most this many records a second, then one
/// count per service when its window ends, instead of a burst of a record per service.
const FIRSTS_PER_SECOND: u32 = 100;

/// How many firsts were recorded at once in the current second.
#[derive(Debug, Default)]
struct FirstsBudget {
    second: Option<Instant>,
    used: u32,
}

impl FirstsBudget {
    /// Whether one more first may be recorded at once at `now` (and takes it).
    fn take(&mut self, now: Instant) -> bool {
        if self.second.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1)) {
            *self = FirstsBudget { second: Some(now), used: 0 };
        }
        let allowed = self.used < FIRSTS_PER_SECOND;
        self.used += u32::from(allowed);
        allowed
    }
}

/// A service and the guardrail that refused it.
type TallyKey = (String, Guardrail);

/// The refusals of one service by one guardrail within a window (or its held changes during a
/// hold): a flood of them costs one audit record per window, not one each. The first of a window
/// is recorded at once, like any change, while [`FIRSTS_PER_SECOND`] allows; the others are
/// counted, and recorded as one change with their `count` when the window ends (or the hold
/// ends, or the task stops).
#[derive(Debug, Clone)]
struct Tally {
    /// Requests counted, besides the first if that was recorded at once.
    count: u64,
    /// Whether the window's first was recorded at once (else `count` includes it).
    first_recorded: bool,
    /// When the window began: the first refusal.
    since: DateTime<Utc>,
    /// When the window ends.
    until: Instant,
    /// The newest refused change, which the record of the count repeats.
    last: Change,
}

pub struct Book {
    limits: Limits,
    entries: BTreeMap<String, Entry>,
    /// The priority of each managed service in the applied manifest: its baseline unless an
    /// operator set one.
    defaults: BTreeMap<String, u8>,
    /// Services in the registry.
    registered: BTreeSet<String>,
    known_count: usize,
    /// Times of the recent accepted engine changes per service, for the rate limit.
    rate: HashMap<String, VecDeque<Instant>>,
    /// Engine changes that moved a service's priority, for the mass-change guard.
    window: VecDeque<(Instant, String)>,
    hold: Option<Hold>,
    /// Refusals being counted, by service and guardrail.
    tallies: HashMap<TallyKey, Tally>,
    /// When the windows of tallies that counted something end, soonest first. A pair whose tally
    /// is gone or has a new window is stale and skipped: deadlines are found without a scan of
    /// every tally, which a flood's batches would otherwise pay for each time.
    tally_ends: BinaryHeap<Reverse<(Instant, TallyKey)>>,
    /// When adjustments expire, soonest first; stale pairs are skipped likewise.
    expiries: BinaryHeap<Reverse<(DateTime<Utc>, String)>>,
    firsts: FirstsBudget,
    effects: Effects,
    /// Entries as they were before the current batch, to undo it if it cannot be stored.
    undo: BTreeMap<String, Option<Entry>>,
}

impl Book {
    /// The book of the stored priorities, and the stored hold (it goes on, until the same time,
    /// holding the same requests, if that time is still ahead of `at`). `recent`: the engine's
    /// changes still within the guardrails' windows (service, when, and whether it counts for the
    /// mass-change window), so the rate and mass-change windows go on where they were.
    pub fn new(
        limits: Limits,
        stored: Vec<StoredPriority>,
        hold: Option<StoredHold>,
        recent: Vec<(String, DateTime<Utc>, bool)>,
        now: Instant,
        at: DateTime<Utc>,
    ) -> Book {
        let entries = stored
            .into_iter()
            .map(|s| {
                let policy = Policy { baseline: s.baseline, min: s.min, max: s.max, pinned: s.pinned };
                (s.service, Entry { policy, adjustment: s.adjustment, updated_at: Some(s.updated_at) })
            })
            .collect();
        let mut book = Book {
            limits,
            entries,
            defaults: BTreeMap::new(),
            registered: BTreeSet::new(),
            known_count: 0,
            rate: HashMap::new(),
            window: VecDeque::new(),
            hold: None,
            tallies: HashMap::new(),
            tally_ends: BinaryHeap::new(),
            expiries: BinaryHeap::new(),
            firsts: FirstsBudget::default(),
            effects: Effects::default(),
            undo: BTreeMap::new(),
        };
        let services: Vec<String> = book.entries.keys().cloned().collect();
        for service in services {
            book.watch_expiry(&service);
        }
        for (service, when, mass) in recent {
            let ago = (at - when).to_std().unwrap_or_default();
            let Some(then) = now.checked_sub(ago) else { continue };
            book.rate.entry(service.clone()).or_default().push_back(then);
            if mass {
                book.window.push_back((then, service));
            }
        }
        if let Some(stored) = hold {
            let held: Vec<(String, EngineRequest, Uuid)> = serde_json::from_value(stored.held).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the stored priority hold's requests cannot be read; the hold goes on empty");
                Vec::new()
            });
            let left = (stored.until - at).to_std().unwrap_or_default();
            tracing::info!(since = %stored.since, until = %stored.until, held = held.len(), "the priority hold goes on");
            book.hold = Some(Hold {
                since: stored.since,
                until: stored.until,
                deadline: now + left,
                held: held.into_iter().map(|(service, request, id)| (service, (request, id))).collect(),
            });
        }
        book.count_known();
        book
    }

    fn count_known(&mut self) {
        let mut names: BTreeSet<&str> = self.registered.iter().map(String::as_str).collect();
        names.extend(self.defaults.keys().map(String::as_str));
        names.extend(self.entries.keys().map(String::as_str));
        self.known_count = names.len();
    }

    /// Sets the manifest's priorities (replacing the previous manifest's).
    pub fn set_defaults(&mut self, defaults: BTreeMap<String, u8>) {
        self.defaults = defaults;
        self.count_known();
    }

    pub fn set_registered(&mut self, names: impl IntoIterator<Item = String>) {
        self.registered = names.into_iter().collect();
        self.count_known();
    }

    fn baseline(&self, service: &str, entry: Option<&Entry>) -> (u8, BaselineSource) {
        match (entry.and_then(|e| e.policy.baseline), self.defaults.get(service)) {
            (Some(b), _) => (b, BaselineSource::Operator),
            (None, Some(&d)) => (d, BaselineSource::Manifest),
            (None, None) => (DEFAULT_PRIORITY, BaselineSource::Default),
        }
    }

    /// The priority in force for `service`.
    pub fn effective(&self, service: &str) -> u8 {
        let entry = self.entries.get(service);
        let policy = entry.map(|e| e.policy).unwrap_or_default();
        let (baseline, _) = self.baseline(service, entry);
        match entry.and_then(|e| e.adjustment.as_ref()) {
            Some(a) if !policy.pinned => a.requested.clamp(policy.min, policy.max),
            _ => baseline.clamp(policy.min, policy.max),
        }
    }

    pub fn view(&self, service: &str) -> PriorityView {
        let entry = self.entries.get(service);
        let policy = entry.map(|e| e.policy).unwrap_or_default();
        let (baseline, baseline_source) = self.baseline(service, entry);
        PriorityView {
            service: service.to_string(),
            effective: self.effective(service),
            baseline,
            baseline_source,
            min: policy.min,
            max: policy.max,
            pinned: policy.pinned,
            adjustment: entry.and_then(|e| e.adjustment.clone()),
            updated_at: entry.and_then(|e| e.updated_at),
        }
    }

    /// Every service the book knows: with a policy or adjustment, in the manifest, or registered.
    pub fn views(&self) -> Vec<PriorityView> {
        let mut names: BTreeSet<&str> = self.entries.keys().map(String::as_str).collect();
        names.extend(self.defaults.keys().map(String::as_str));
        names.extend(self.registered.iter().map(String::as_str));
        names.into_iter().map(|n| self.view(n)).collect()
    }

    /// The priority in force of every service with a policy, an adjustment or a manifest default.
    pub fn effective_map(&self) -> BTreeMap<String, u8> {
        self.entries.keys().chain(self.defaults.keys()).map(|n| (n.clone(), self.effective(n))).collect()
    }

    fn mass_limit(&self) -> usize {
        ((self.limits.mass_share * self.known_count as f64).floor() as usize).max(self.limits.mass_min)
    }

    fn prune(&mut self, now: Instant) {
        let mass = self.limits.mass_window;
        while self.window.front().is_some_and(|(t, _)| now.duration_since(*t) >= mass) {
            self.window.pop_front();
        }
    }

    fn changed_in_window(&self, extra: Option<&str>) -> usize {
        let mut names: BTreeSet<&str> = self.window.iter().map(|(_, s)| s.as_str()).collect();
        names.extend(extra);
        names.len()
    }

    pub fn guard(&mut self, now: Instant) -> GuardView {
        self.prune(now);
        GuardView {
            holding: self.hold.is_some(),
            since: self.hold.as_ref().map(|h| h.since),
            until: self.hold.as_ref().map(|h| h.until),
            held: self.hold.as_ref().map(|h| h.held.keys().cloned().collect()).unwrap_or_default(),
            changed_in_window: self.changed_in_window(None),
            limit: self.mass_limit(),
        }
    }

    fn entry_mut(&mut self, service: &str) -> &mut Entry {
        if !self.undo.contains_key(service) {
            self.undo.insert(service.to_string(), self.entries.get(service).cloned());
        }
        if !self.entries.contains_key(service) {
            self.entries.insert(service.to_string(), Entry::default());
            self.count_known();
        }
        self.effects.dirty.insert(service.to_string());
        self.entries.get_mut(service).expect("inserted above")
    }

    fn change(&self, service: &str, action: Action, outcome: Outcome, by: By<'_>, at: DateTime<Utc>) -> Change {
        let effective = self.effective(service);
        Change {
            id: Uuid::now_v7(),
            service: service.to_string(),
            action,
            outcome,
            requested: None,
            previous: effective,
            effective,
            principal: by.principal.to_string(),
            source: by.source.to_string(),
            reason: by.reason.to_string(),
            guardrail: None,
            detail: None,
            expires_at: None,
            count: None,
            at,
        }
    }

    fn record(&mut self, change: Change) -> Change {
        self.effects.changes.push(change.clone());
        change
    }

    /// Decides an engine's change. `Ok` for applied, clamped and held changes; `Err` for refused
    /// ones (which are recorded all the same).
    pub fn engine(&mut self, request: EngineRequest, now: Instant, at: DateTime<Utc>) -> Result<Change, ProtocolError> {
        let service = request.service.clone();
        let action = match request.op {
            EngineOp::Set { .. } => Action::Set,
            EngineOp::Clear => Action::Clear,
        };
        let by = By {
            principal: request.principal.as_str(),
            source: request.source.as_str(),
            reason: request.reason.as_str(),
        };
        let mut change = self.change(&service, action, Outcome::Refused, by, at);
        let principal = request.principal.clone();
        if let EngineOp::Set { value, .. } = request.op {
            change.requested = Some(value);
        }
        let refuse = |book: &mut Book, mut change: Change, guardrail: Guardrail, code: ErrorCode, message: String| {
            change.guardrail = Some(guardrail);
            change.detail = Some(message.clone());
            book.refused(change, now);
            Err(ProtocolError::field(code, "service", message))
        };
        if self.entries.get(&service).is_some_and(|e| e.policy.pinned) {
            let message = format!("the priority of {service:?} is pinned by an operator; engine changes are refused");
            return refuse(self, change, Guardrail::Pinned, ErrorCode::Refused, message);
        }
        let (limit, window) = (self.limits.rate_limit, self.limits.rate_window);
        let times = self.rate.entry(service.clone()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= window) {
            times.pop_front();
        }
        if times.len() >= limit as usize {
            let message = format!(
                "{service:?} already changed {} times within {}s (the limit); retry later",
                times.len(),
                window.as_secs_f64()
            );
            return refuse(self, change, Guardrail::RateLimited, ErrorCode::RateLimited, message);
        }
        times.push_back(now);
        self.prune(now);
        if let Some(hold) = self.hold.as_mut() {
            change.outcome = Outcome::Held;
            change.guardrail = Some(Guardrail::MassChange);
            change.detail =
                Some(format!("held by the mass-change guard until an operator releases it or {}", hold.until));
            let replaced = hold.held.insert(service.clone(), (request, change.id));
            self.effects.hold_changed = true;
            // A held change replaced within the window is counted, like a refusal (see `Tally`):
            // a flood during a hold costs a record per service and window, not two per request.
            let key = (service.clone(), Guardrail::MassChange);
            if self.tallies.get(&key).is_some_and(|t| t.until > now) {
                self.count(key, change.clone());
                return Ok(change);
            }
            if let Some(ended) = self.tallies.remove(&key) {
                self.flush(key.clone(), ended, at);
            }
            if let Some((old, old_id)) = replaced {
                // Dropped on the word of the later request's sender.
                let by = By { principal: principal.as_str(), source: old.source.as_str(), reason: old.reason.as_str() };
                let mut dropped = self.change(&service, old.op_action(), Outcome::Dropped, by, at);
                dropped.detail = Some(format!("held change {old_id} replaced by the later held change {}", change.id));
                dropped.requested = old.requested();
                self.record(dropped);
            }
            self.count_from(change.clone(), now);
            return Ok(change);
        }
        if self.moves(&request) {
            let (changed, limit) = (self.changed_in_window(Some(&service)), self.mass_limit());
            if changed > limit {
                let mass_window = self.limits.mass_window;
                // In microseconds, as PostgreSQL keeps it: the hold reads the same after a restart.
                use chrono::SubsecRound;
                let until = (at + chrono::Duration::from_std(mass_window).unwrap_or_default()).trunc_subsecs(6);
                let message = format!(
                    "the engine changed the priority of {changed} of {} services within {}s (the limit is {limit}); \
                     its changes are held until an operator releases them or {until}",
                    self.known_count,
                    mass_window.as_secs()
                );
                tracing::warn!(changed, limit, %until, "priority mass-change guard: holding engine changes");
                self.effects.system.push((
                    EventKind::PriorityHoldStarted,
                    HoldData {
                        message,
                        changed_in_window: changed,
                        limit,
                        window_seconds: mass_window.as_secs(),
                        ended_by: None,
                        until: Some(until),
                    },
                ));
                change.outcome = Outcome::Held;
                change.guardrail = Some(Guardrail::MassChange);
                change.detail = Some(format!("held by the mass-change guard until an operator releases it or {until}"));
                let held = BTreeMap::from([(service.clone(), (request, change.id))]);
                self.hold = Some(Hold { since: at.trunc_subsecs(6), until, deadline: now + mass_window, held });
                self.effects.hold_changed = true;
                self.count_from(change.clone(), now);
                return Ok(change);
            }
            self.window.push_back((now, service.clone()));
        }
        Ok(self.apply(request, change, at))
    }

    /// Records a refusal, or counts it when one of its service and guardrail was recorded within
    /// the window (see [`Tally`]).
    fn refused(&mut self, change: Change, now: Instant) {
        let key = (change.service.clone(), change.guardrail.expect("a refusal names its guardrail"));
        if self.tallies.get(&key).is_some_and(|t| t.until > now) {
            self.count(key, change);
            return;
        }
        if let Some(ended) = self.tallies.remove(&key) {
            self.flush(key.clone(), ended, change.at);
        }
        self.count_from(change, now);
    }

    /// Starts the window of `first`'s service and guardrail: `first` is recorded at once if the
    /// budget of firsts allows, else counted with the rest of its window.
    fn count_from(&mut self, first: Change, now: Instant) {
        let key = (first.service.clone(), first.guardrail.expect("a refusal or hold names its guardrail"));
        let until = now + self.limits.rate_window;
        let recorded = self.firsts.take(now);
        let tally = Tally {
            count: u64::from(!recorded),
            first_recorded: recorded,
            since: first.at,
            until,
            last: first.clone(),
        };
        if !recorded {
            self.tally_ends.push(Reverse((until, key.clone())));
        }
        self.tallies.insert(key, tally);
        if recorded {
            self.record(first);
        }
    }

    /// Counts `change` in the running window of `key`.
    fn count(&mut self, key: TallyKey, change: Change) {
        let tally = self.tallies.get_mut(&key).expect("a running window");
        tally.count += 1;
        tally.last = change;
        if tally.count == 1 {
            self.tally_ends.push(Reverse((tally.until, key)));
        }
    }

    /// Records what `tally` counted, if anything, as one change at `at`. The record takes the id
    /// of the last request counted: for held changes, the id its caller was given and the hold
    /// refers to when it ends.
    fn flush(&mut self, key: TallyKey, tally: Tally, at: DateTime<Utc>) {
        if tally.count == 0 {
            return;
        }
        let effective = self.effective(&key.0);
        let last = &tally.last;
        let (count, since, last_said) = (tally.count, tally.since, last.detail.as_deref().unwrap_or_default());
        let more = if tally.first_recorded { " more" } else { "" };
        let detail = match last.outcome {
            Outcome::Held => format!(
                "{count}{more} changes were held from {since} to {at}, each replacing the one before; \
                 this one, the last, is held: {last_said}"
            ),
            _ => format!(
                "{count}{more} requests were refused alike ({}) from {since} to {at}; the last said: {last_said}",
                key.1.as_str()
            ),
        };
        let change =
            Change { count: Some(count), previous: effective, effective, detail: Some(detail), at, ..last.clone() };
        self.effects.flushed.push((key, tally));
        self.record(change);
    }

    /// Records every count whose window ended by `now`, or all of them (`all`: the task stops).
    pub fn flush_tallies(&mut self, now: Instant, at: DateTime<Utc>, all: bool) {
        if all {
            self.tally_ends.clear();
            for (key, tally) in std::mem::take(&mut self.tallies) {
                self.flush(key, tally, at);
            }
            return;
        }
        while let Some(Reverse((until, key))) = self.tally_ends.peek().cloned()
            && until <= now
        {
            self.tally_ends.pop();
            if self.window_runs(&key, until) {
                let tally = self.tallies.remove(&key).expect("checked above");
                self.flush(key, tally, at);
            }
        }
    }

    /// Records the counts of held changes now, as the hold ends: the records that end it refer
    /// to the last held change of each service, which must be in the history before them.
    fn flush_held(&mut self, at: DateTime<Utc>) {
        let held: Vec<TallyKey> = self.tallies.keys().filter(|k| k.1 == Guardrail::MassChange).cloned().collect();
        for key in held {
            let tally = self.tallies.remove(&key).expect("listed above");
            self.flush(key, tally, at);
        }
    }

    /// Whether the request would move the service's effective priority.
    fn moves(&self, request: &EngineRequest) -> bool {
        let policy = self.entries.get(&request.service).map(|e| e.policy).unwrap_or_default();
        let target = match request.op {
            EngineOp::Set { value, .. } => value.clamp(policy.min, policy.max),
            EngineOp::Clear => {
                self.baseline(&request.service, self.entries.get(&request.service)).0.clamp(policy.min, policy.max)
            }
        };
        target != self.effective(&request.service)
    }

    /// Applies an engine request that passed the guardrails (or was released from a hold).
    fn apply(&mut self, request: EngineRequest, mut change: Change, at: DateTime<Utc>) -> Change {
        let service = request.service.clone();
        let entry = self.entry_mut(&service);
        let (min, max) = (entry.policy.min, entry.policy.max);
        change.outcome = Outcome::Applied;
        match request.op {
            EngineOp::Set { value, ttl } => {
                let expires_at = ttl.map(|t| at + chrono::Duration::from_std(t).unwrap_or_default());
                entry.adjustment = Some(Adjustment {
                    requested: value,
                    principal: request.principal,
                    source: request.source,
                    reason: request.reason,
                    at,
                    expires_at,
                });
                change.expires_at = expires_at;
                if !(min..=max).contains(&value) {
                    change.outcome = Outcome::Clamped;
                    change.detail = Some(format!(
                        "{value} is outside the bounds {min}-{max} of {service:?}; {} applies",
                        value.clamp(min, max)
                    ));
                }
            }
            EngineOp::Clear => entry.adjustment = None,
        }
        entry.updated_at = Some(at);
        self.watch_expiry(&service);
        change.effective = self.effective(&service);
        self.record(change)
    }

    /// Remembers when the adjustment of `service` expires, if it does.
    fn watch_expiry(&mut self, service: &str) {
        if let Some(x) = self.expiry_of(service) {
            self.expiries.push(Reverse((x, service.to_string())));
        }
    }

    /// When the adjustment of `service` expires, if it has one that does: what a pair of
    /// `expiries` must still say to be due.
    fn expiry_of(&self, service: &str) -> Option<DateTime<Utc>> {
        self.entries.get(service).and_then(|e| e.adjustment.as_ref()?.expires_at)
    }

    /// Whether the window of `key` that ends at `until` still runs: what a pair of `tally_ends`
    /// must say to be due.
    fn window_runs(&self, key: &TallyKey, until: Instant) -> bool {
        self.tallies.get(key).is_some_and(|t| t.until == until)
    }

    /// An operator's policy, sent by `principal`: baseline, bounds, pin. Pinning drops the
    /// engine's adjustment.
    pub fn policy(
        &mut self,
        request: &PolicyRequest,
        principal: &str,
        at: DateTime<Utc>,
    ) -> Result<Change, ProtocolError> {
        let current = self.entries.get(&request.service).map(|e| e.policy).unwrap_or_default();
        let policy = Policy::merge(current, request)?;
        let by = By { principal, source: request.source.as_str(), reason: request.reason.as_str() };
        let mut change = self.change(&request.service, Action::Policy, Outcome::Applied, by, at);
        change.requested = policy.baseline;
        let entry = self.entry_mut(&request.service);
        entry.policy = policy;
        if policy.pinned && entry.adjustment.take().is_some() {
            change.detail = Some("pinned: the engine's adjustment was removed".into());
        }
        entry.updated_at = Some(at);
        change.effective = self.effective(&request.service);
        Ok(self.record(change))
    }

    /// Ends the hold on the word of `by` (principal, source, reason): applies the held changes
    /// (`apply`) or drops them.
    pub fn release(&mut self, by: By<'_>, apply: bool, now: Instant, at: DateTime<Utc>) -> Vec<Change> {
        let source = by.source;
        let Some(hold) = self.hold.take() else { return Vec::new() };
        self.window.clear();
        self.flush_held(at);
        let ended_by = format!("released by {source}");
        let mut changes = Vec::new();
        for (service, (request, held_id)) in hold.held {
            let pinned = self.entries.get(&service).is_some_and(|e| e.policy.pinned);
            let mut change = self.change(&service, Action::Release, Outcome::Dropped, by, at);
            change.requested = request.requested();
            change.detail = Some(format!("held change {held_id} by {}: {}", request.source, request.reason));
            if apply && !pinned {
                self.rate.entry(service.clone()).or_default().push_back(now);
                changes.push(self.apply(request, change, at));
            } else {
                if apply {
                    change.outcome = Outcome::Refused;
                    change.guardrail = Some(Guardrail::Pinned);
                }
                changes.push(self.record(change));
            }
        }
        self.end_hold(ended_by, hold.since);
        changes
    }

    fn end_hold(&mut self, ended_by: String, since: DateTime<Utc>) {
        tracing::info!(%ended_by, %since, "priority mass-change hold ended");
        self.effects.hold_changed = true;
        self.effects.system.push((
            EventKind::PriorityHoldEnded,
            HoldData {
                message: format!("the priority hold that began at {since} ended: {ended_by}"),
                changed_in_window: 0,
                limit: self.mass_limit(),
                window_seconds: self.limits.mass_window.as_secs(),
                ended_by: Some(ended_by),
                until: None,
            },
        ));
    }

    /// Lapses adjustments whose expiry passed, ends a hold whose window passed and records the
    /// refusals counted in windows that ended.
    pub fn tick(&mut self, now: Instant, at: DateTime<Utc>) {
        self.flush_tallies(now, at, false);
        while let Some(Reverse((expires_at, service))) = self.expiries.peek().cloned()
            && expires_at <= at
        {
            self.expiries.pop();
            if self.expiry_of(&service) != Some(expires_at) {
                continue; // stale: replaced, cleared or expired since
            }
            let entry = self.entry_mut(&service);
            let adjustment = entry.adjustment.take().expect("filtered on an adjustment");
            entry.updated_at = Some(at);
            let by = By { principal: principal::ORCHESTRATOR, source: principal::ORCHESTRATOR, reason: "" };
            let mut change = self.change(&service, Action::Expire, Outcome::Expired, by, at);
            change.previous =
                adjustment.requested.clamp(self.entries[&service].policy.min, self.entries[&service].policy.max);
            change.requested = Some(adjustment.requested);
            change.reason = format!("the adjustment by {} expired ({})", adjustment.source, adjustment.reason);
            self.record(change);
        }
        if self.hold.as_ref().is_some_and(|h| h.deadline <= now) {
            let hold = self.hold.take().expect("checked above");
            self.window.clear();
            self.flush_held(at);
            for (service, (request, held_id)) in hold.held {
                let by = By {
                    principal: principal::ORCHESTRATOR,
                    source: request.source.as_str(),
                    reason: request.reason.as_str(),
                };
                let mut change = self.change(&service, request.op_action(), Outcome::Dropped, by, at);
                change.requested = request.requested();
                change.detail = Some(format!("held change {held_id} dropped: the hold ended without a release"));
                self.record(change);
            }
            self.end_hold("the window passed without a release".into(), hold.since);
        }
    }

    /// When [`Book::tick`] next has work: the earliest expiry, the end of the hold or of a window
    /// with refusals counted. Drops the stale deadlines it passes over.
    pub fn next_deadline(&mut self, now: Instant, at: DateTime<Utc>) -> Option<Instant> {
        while let Some(Reverse((x, service))) = self.expiries.peek()
            && self.expiry_of(service) != Some(*x)
        {
            self.expiries.pop();
        }
        while let Some(Reverse((until, key))) = self.tally_ends.peek()
            && !self.window_runs(key, *until)
        {
            self.tally_ends.pop();
        }
        let expiry = self.expiries.peek().map(|Reverse((x, _))| now + (*x - at).to_std().unwrap_or_default());
        let hold = self.hold.as_ref().map(|h| h.deadline);
        let tally = self.tally_ends.peek().map(|Reverse((until, _))| *until);
        expiry.into_iter().chain(hold).chain(tally).min()
    }

    /// Takes what happened since the last call, to be stored.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// The hold as stored: `None` when none is on.
    pub fn stored_hold(&self) -> Option<StoredHold> {
        let hold = self.hold.as_ref()?;
        let held: Vec<(&String, &EngineRequest, &Uuid)> = hold.held.iter().map(|(s, (r, id))| (s, r, id)).collect();
        Some(StoredHold {
            since: hold.since,
            until: hold.until,
            held: serde_json::to_value(held).expect("held requests serialize"),
        })
    }

    /// The changes since the last call are stored: they can no longer be undone.
    pub fn committed(&mut self) {
        self.undo.clear();
    }

    /// The stored form of a service.
    pub fn stored(&self, service: &str) -> Option<StoredPriority> {
        let e = self.entries.get(service)?;
        Some(StoredPriority {
            service: service.to_string(),
            baseline: e.policy.baseline,
            min: e.policy.min,
            max: e.policy.max,
            pinned: e.policy.pinned,
            adjustment: e.adjustment.clone(),
            updated_at: e.updated_at.unwrap_or_else(Utc::now),
        })
    }

    /// Undoes the entries changed since the last [`Book::committed`]: their batch, `lost`, could
    /// not be stored. The guardrails' counters are not undone: they err on the side of caution.
    pub fn rollback(&mut self, lost: Effects) {
        // The hold as it is now is stored with the next batch.
        self.effects.hold_changed |= lost.hold_changed;
        for (service, entry) in std::mem::take(&mut self.undo) {
            match entry {
                Some(e) => self.entries.insert(service.clone(), e),
                None => self.entries.remove(&service),
            };
            self.watch_expiry(&service);
        }
        // Counts recorded in the lost batch are counted again, into the window that runs now.
        for (key, lost) in lost.flushed {
            match self.tallies.get_mut(&key) {
                Some(tally) => {
                    let first = tally.count == 0;
                    tally.count += lost.count;
                    if first {
                        self.tally_ends.push(Reverse((tally.until, key)));
                    }
                }
                None => {
                    self.tally_ends.push(Reverse((lost.until, key.clone())));
                    self.tallies.insert(key, lost);
                }
            }
        }
        self.count_known();
    }
}

impl EngineRequest {
    fn op_action(&self) -> Action {
        match self.op {
            EngineOp::Set { .. } => Action::Set,
            EngineOp::Clear => Action::Clear,
        }
    }

    fn requested(&self) -> Option<u8> {
        match self.op {
            EngineOp::Set { value, .. } => Some(value),
            EngineOp::Clear => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            rate_limit: 3,
            rate_window: Duration::from_secs(10),
            mass_share: 0.5,
            mass_min: 2,
            mass_window: Duration::from_secs(60),
        }
    }

    fn set(service: &str, value: u8) -> EngineRequest {
        EngineRequest {
            service: service.into(),
            op: EngineOp::Set { value, ttl: None },
            principal: "key:engine".into(),
            source: "engine".into(),
            reason: "test".into(),
        }
    }

    fn policy(service: &str) -> PolicyRequest {
        PolicyRequest { service: service.into(), source: "op".into(), ..Default::default() }
    }

    fn book(services: usize) -> Book {
        let mut b = Book::new(limits(), Vec::new(), None, Vec::new(), Instant::now(), Utc::now());
        b.set_registered((0..services).map(|i| format!("s{i}")));
        b
    }

    #[test]
    fn set_applies_and_clamps_to_bounds() {
        let (mut b, now, at) = (book(10), Instant::now(), Utc::now());
        assert_eq!(b.effective("s0"), 50);
        let c = b.engine(set("s0", 80), now, at).unwrap();
        assert_eq!((c.outcome, c.previous, c.effective), (Outcome::Applied, 50, 80));
        b.policy(&PolicyRequest { max: Some(70), ..policy("s1") }, "key:op", at).unwrap();
        let c = b.engine(set("s1", 90), now, at).unwrap();
        assert_eq!((c.outcome, c.effective, c.requested), (Outcome::Clamped, 70, Some(90)));
        assert!(c.detail.unwrap().contains("outside the bounds 0-70"));
        let effects = b.take_effects();
        assert_eq!(effects.changes.len(), 3);
        assert_eq!(effects.dirty, BTreeSet::from(["s0".to_string(), "s1".to_string()]));
    }

    #[test]
    fn pinned_services_refuse_engine_changes() {
        let (mut b, now, at) = (book(10), Instant::now(), Utc::now());
        b.engine(set("s0", 80), now, at).unwrap();
        let c =
            b.policy(&PolicyRequest { pinned: Some(true), baseline: Some(60), ..policy("s0") }, "key:op", at).unwrap();
        assert_eq!((c.previous, c.effective), (80, 60), "pinning drops the adjustment");
        let e = b.engine(set("s0", 90), now, at).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Refused);
        let refused = b.take_effects().changes.pop().unwrap();
        assert_eq!((refused.outcome, refused.guardrail), (Outcome::Refused, Some(Guardrail::Pinned)));
        assert_eq!(b.effective("s0"), 60);
    }

    #[test]
    fn the_windows_go_on_after_a_restart_from_the_stored_changes() {
        // Three changes of s0 two seconds before a restart (limit 3 per 10 s): the fourth, just
        // after, is refused as it would have been without the restart; it passes once the window
        // of the stored ones has gone by.
        let (now, at) = (Instant::now() + Duration::from_secs(30), Utc::now());
        let two_ago = at - chrono::Duration::seconds(2);
        let recent = vec![("s0".to_string(), two_ago, true); 3];
        let mut b = Book::new(limits(), Vec::new(), None, recent, now, at);
        assert_eq!(b.engine(set("s0", 40), now, at).unwrap_err().code(), ErrorCode::RateLimited);
        assert!(b.engine(set("s0", 40), now + Duration::from_secs(8), at).is_ok(), "the stored ones left the window");
    }

    #[test]
    fn rate_limit_counts_within_the_window() {
        let (mut b, now, at) = (book(10), Instant::now(), Utc::now());
        for v in [10, 20, 30] {
            b.engine(set("s0", v), now, at).unwrap();
        }
        let e = b.engine(set("s0", 40), now, at).unwrap_err();
        assert_eq!(e.code(), ErrorCode::RateLimited);
        assert_eq!(b.effective("s0"), 30);
        assert!(b.engine(set("s1", 40), now, at).is_ok(), "other services are not limited");
        assert!(b.engine(set("s0", 40), now + Duration::from_secs(10), at).is_ok(), "the window passed");
    }

    #[test]
    fn a_flood_of_refusals_is_one_record_per_window_and_none_is_lost() {
        let (mut b, now, at) = (book(10), Instant::now(), Utc::now());
        for v in [10, 20, 30] {
            b.engine(set("s0", v), now, at).unwrap();
        }
        b.take_effects();
        // 1,000 refused requests: each caller is told, the first is recorded at once.
        for v in 0..1000u32 {
            assert_eq!(b.engine(set("s0", (v % 100) as u8), now, at).unwrap_err().code(), ErrorCode::RateLimited);
        }
        let first = b.take_effects().changes;
        assert_eq!(first.len(), 1, "only the first refusal of the window is recorded at once");
        assert_eq!(
            (first[0].outcome, first[0].guardrail, first[0].count),
            (Outcome::Refused, Some(Guardrail::RateLimited), None)
        );
        assert_eq!(
            b.next_deadline(now, at),
            Some(now + Duration::from_secs(10)),
            "the count is due when the window ends"
        );
        // The window ends: the other 999 are one record that says so.
        let later = at + chrono::Duration::seconds(10);
        b.tick(now + Duration::from_secs(10), later);
        let counted = b.take_effects().changes;
        assert_eq!(counted.len(), 1);
        assert_eq!((counted[0].outcome, counted[0].count, counted[0].at), (Outcome::Refused, Some(999), later));
        assert_eq!(counted[0].requested, Some(99), "it repeats the last request");
        assert_eq!(counted[0].principal, "key:engine");
        assert!(
            counted[0].detail.as_deref().unwrap().starts_with("999 more requests were refused alike (rate_limited)")
        );
        assert_ne!(counted[0].id, first[0].id);
        assert_eq!(b.next_deadline(now + Duration::from_secs(10), later), None, "nothing left to count");
    }

    #[test]
    fn a_flood_across_many_services_records_at_most_the_budget_of_firsts_at_once() {
        let (mut b, now, at) = (book(300), Instant::now(), Utc::now());
        for i in 0..150 {
            b.policy(&PolicyRequest { pinned: Some(true), ..policy(&format!("s{i}")) }, "key:op", at).unwrap();
        }
        b.take_effects();
        // 150 services refused in the same second: 100 firsts recorded at once, 50 counted.
        for i in 0..150 {
            b.engine(set(&format!("s{i}"), 70), now, at).unwrap_err();
        }
        assert_eq!(b.take_effects().changes.len(), FIRSTS_PER_SECOND as usize);
        // A second later the budget is there again.
        b.engine(set("s0", 70), now + Duration::from_secs(1), at).unwrap_err();
        assert!(b.take_effects().changes.is_empty(), "s0's window runs: counted");
        // When the windows end, the counted ones are recorded with their count, none lost.
        b.tick(now + Duration::from_secs(10), at);
        let counted = b.take_effects().changes;
        assert_eq!(counted.len(), 51, "50 firsts counted, and s0's second refusal");
        let total: u64 = counted.iter().map(|c| c.count.unwrap()).sum();
        assert_eq!(total, 51);
        let deferred = counted.iter().find(|c| c.service == "s149").unwrap();
        assert!(deferred.detail.as_deref().unwrap().starts_with("1 requests were refused alike (pinned)"));
        let s0 = counted.iter().find(|c| c.service == "s0").unwrap();
        assert!(s0.detail.as_deref().unwrap().starts_with("1 more requests were refused alike (pinned)"));
    }

    #[test]
    fn counted_refusals_lost_with_their_batch_are_counted_again_and_flushed_at_the_end() {
        let (mut b, now, at) = (book(10), Instant::now(), Utc::now());
        b.policy(&PolicyRequest { pinned: Some(true), ..policy("s0") }, "key:op", at).unwrap();
        b.committed();
        b.take_effects();
        for _ in 0..5 {
            b.engine(set("s0", 70), now, at).unwrap_err();
        }
        b.take_effects();
        b.tick(now + Duration::from_secs(10), at);
        let lost = b.take_effects();
        assert_eq!(lost.changes[0].count, Some(4));
        b.rollback(lost);
        // The lost record's four are counted again, and recorded at the next tick.
        let later = now + Duration::from_secs(11);
        assert_eq!(b.next_deadline(later, at), Some(now + Duration::from_secs(10)), "due at once");
        b.tick(later, at);
        assert_eq!(b.take_effects().changes.iter().map(|c| c.count).collect::<Vec<_>>(), [Some(4)]);
        // A new window: its first refusal is recorded at once; what it counted so far is recorded
        // when the task stops.
        for _ in 0..3 {
            b.engine(set("s0", 70), later, at).unwrap_err();
        }
        assert_eq!(b.take_effects().changes.len(), 1);
        b.flush_tallies(later, at, true);
        let changes = b.take_effects().changes;
        assert_eq!(changes.iter().map(|c| c.count).collect::<Vec<_>>(), [Some(2)]);
        assert_eq!(changes[0].guardrail, Some(Guardrail::Pinned));
    }

    #[test]
    fn mass_change_holds_until_release() {
        // 10 known services, share 0.5: changing a 6th service within the window trips the guard.
        let (mut b, now, at) = (book(10), Instant::now(), Utc::now());
        for i in 0..5 {
            assert_eq!(b.engine(set(&format!("s{i}"), 70), now, at).unwrap().outcome, Outcome::Applied);
        }
        let c = b.engine(set("s5", 70), now, at).unwrap();
        assert_eq!((c.outcome, c.guardrail), (Outcome::Held, Some(Guardrail::MassChange)));
        assert_eq!(b.effective("s5"), 50);
        assert_eq!(b.engine(set("s0", 10), now, at).unwrap().outcome, Outcome::Held, "everything is held now");
        let effects = b.take_effects();
        assert_eq!(effects.system.len(), 1);
        assert_eq!(effects.system[0].0, EventKind::PriorityHoldStarted);
        let guard = b.guard(now);
        assert!(guard.holding);
        assert_eq!(guard.held, ["s0", "s5"]);

        let released = b.release(By { principal: "key:op", source: "op", reason: "checked" }, true, now, at);
        assert_eq!(
            released.iter().map(|c| (c.service.as_str(), c.effective)).collect::<Vec<_>>(),
            [("s0", 10), ("s5", 70)]
        );
        assert_eq!(b.take_effects().system[0].0, EventKind::PriorityHoldEnded);
        assert!(!b.guard(now).holding);
    }

    #[test]
    fn a_stored_hold_goes_on_in_a_new_book_and_an_ended_one_is_not_stored() {
        let (mut b, now, at) = (book(4), Instant::now(), Utc::now());
        for s in ["s0", "s1", "s2"] {
            let _ = b.engine(set(s, 80), now, at);
        }
        assert!(b.guard(now).holding);
        assert!(b.take_effects().hold_changed);
        let stored = b.stored_hold().expect("a hold is on");

        // A new book (the orchestrator started again) holds the same requests until the same time.
        let later = now + Duration::from_secs(5);
        let mut again =
            Book::new(limits(), Vec::new(), Some(stored.clone()), Vec::new(), later, at + chrono::Duration::seconds(5));
        again.set_registered((0..4).map(|i| format!("s{i}")));
        let guard = again.guard(later);
        assert_eq!((guard.holding, guard.held.clone(), guard.until), (true, b.guard(now).held, Some(stored.until)));
        let by = By { principal: "api-key:ops", source: "operator:ann", reason: "fine" };
        let released = again.release(by, true, later, at);
        assert!(released.iter().all(|c| c.outcome == Outcome::Applied), "{released:?}");
        assert!(again.take_effects().hold_changed);
        assert_eq!(again.stored_hold(), None, "an ended hold is stored as none");
    }

    #[test]
    fn a_hold_ends_by_itself_and_drops_what_it_held() {
        let (mut b, now, at) = (book(4), Instant::now(), Utc::now());
        // mass_min 2 > 0.5 * 4: the third service trips it.
        b.engine(set("s0", 70), now, at).unwrap();
        b.engine(set("s1", 70), now, at).unwrap();
        assert_eq!(b.engine(set("s2", 70), now, at).unwrap().outcome, Outcome::Held);
        b.take_effects();
        // The rate window (10 s) ends before the hold (60 s): the next held change is recorded at
        // once, with the one it replaces as dropped.
        let later = now + Duration::from_secs(10);
        let last = b.engine(set("s2", 80), later, at).unwrap();
        let effects = b.take_effects();
        assert_eq!(effects.changes.iter().map(|c| c.outcome).collect::<Vec<_>>(), [Outcome::Dropped, Outcome::Held]);
        assert_eq!(b.next_deadline(later, at), Some(now + Duration::from_secs(60)));
        b.tick(now + Duration::from_secs(60), at);
        let effects = b.take_effects();
        assert_eq!(effects.changes.iter().map(|c| c.outcome).collect::<Vec<_>>(), [Outcome::Dropped]);
        assert!(effects.changes[0].detail.as_deref().unwrap().contains(&last.id.to_string()));
        assert_eq!(effects.system[0].0, EventKind::PriorityHoldEnded);
        assert_eq!(b.effective("s2"), 50);
    }

    #[test]
    fn held_changes_replaced_within_a_window_are_counted_and_the_last_is_recorded_before_the_hold_ends() {
        let (mut b, now, at) = (book(4), Instant::now(), Utc::now());
        b.engine(set("s0", 70), now, at).unwrap();
        b.engine(set("s1", 70), now, at).unwrap();
        let first = b.engine(set("s2", 70), now, at).unwrap();
        assert_eq!(first.outcome, Outcome::Held);
        b.take_effects();
        // Within the rate limit (3 per window), two more changes replace the held one: each
        // caller is answered `held` with an id of its own, nothing is recorded yet.
        let second = b.engine(set("s2", 80), now, at).unwrap();
        let third = b.engine(set("s2", 90), now, at).unwrap();
        assert_eq!((second.outcome, third.outcome), (Outcome::Held, Outcome::Held));
        assert_ne!(second.id, third.id);
        assert!(b.take_effects().changes.is_empty(), "replacements within the window are counted");
        assert_eq!(b.guard(now).held, ["s2"]);
        // The release records the count first, under the id of the last held change, then what
        // the release did with it, naming that id.
        let released = b.release(By { principal: "key:op", source: "op", reason: "checked" }, true, now, at);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].effective, 90, "the last held change is the one applied");
        let changes = b.take_effects().changes;
        assert_eq!(changes.len(), 2);
        let counted = &changes[0];
        assert_eq!((counted.outcome, counted.count, counted.id), (Outcome::Held, Some(2), third.id));
        assert_eq!(counted.requested, Some(90));
        assert!(counted.detail.as_deref().unwrap().starts_with("2 more changes were held"));
        assert!(changes[1].detail.as_deref().unwrap().contains(&third.id.to_string()));
        assert_eq!(b.next_deadline(now, at), None, "nothing left to count");
    }

    #[test]
    fn unchanged_values_do_not_count_toward_a_hold() {
        let (mut b, now, at) = (book(4), Instant::now(), Utc::now());
        for i in 0..4 {
            assert_eq!(b.engine(set(&format!("s{i}"), 50), now, at).unwrap().outcome, Outcome::Applied);
        }
    }

    #[test]
    fn adjustments_expire_to_the_baseline() {
        let (mut b, now, at) = (book(2), Instant::now(), Utc::now());
        b.set_defaults(BTreeMap::from([("s0".to_string(), 30)]));
        let request =
            EngineRequest { op: EngineOp::Set { value: 90, ttl: Some(Duration::from_secs(5)) }, ..set("s0", 0) };
        let c = b.engine(request, now, at).unwrap();
        assert_eq!(c.expires_at, Some(at + chrono::Duration::seconds(5)));
        assert_eq!(b.next_deadline(now, at), Some(now + Duration::from_secs(5)));
        b.take_effects();
        b.tick(now + Duration::from_secs(5), at + chrono::Duration::seconds(5));
        let expired = b.take_effects().changes;
        assert_eq!(expired.len(), 1);
        assert_eq!((expired[0].outcome, expired[0].previous, expired[0].effective), (Outcome::Expired, 90, 30));
        assert_eq!(b.view("s0").baseline_source, BaselineSource::Manifest);
    }

    #[test]
    fn a_replaced_expiry_is_not_due_and_a_rolled_back_one_is_due_again() {
        let (mut b, now, at) = (book(2), Instant::now(), Utc::now());
        let expiring = |value, secs| EngineRequest {
            op: EngineOp::Set { value, ttl: Some(Duration::from_secs(secs)) },
            ..set("s0", 0)
        };
        b.engine(expiring(90, 5), now, at).unwrap();
        b.engine(set("s0", 80), now, at).unwrap();
        assert_eq!(b.next_deadline(now, at), None, "the adjustment that expired was replaced by one that does not");
        b.take_effects();
        b.committed();
        b.engine(expiring(70, 30), now, at).unwrap();
        b.take_effects();
        b.committed();
        // The expiry is decided in a batch that cannot be stored: the adjustment comes back, and
        // so does its expiry.
        let later = at + chrono::Duration::seconds(30);
        b.tick(now + Duration::from_secs(30), later);
        assert_eq!(b.effective("s0"), 50);
        let lost = b.take_effects();
        assert_eq!(lost.changes.len(), 1);
        b.rollback(lost);
        assert_eq!(b.effective("s0"), 70);
        assert_eq!(b.next_deadline(now, at), Some(now + Duration::from_secs(30)));
        b.tick(now + Duration::from_secs(30), later);
        assert_eq!(b.take_effects().changes[0].outcome, Outcome::Expired);
    }

    #[test]
    fn rollback_restores_entries() {
        let (mut b, now, at) = (book(2), Instant::now(), Utc::now());
        b.engine(set("s0", 80), now, at).unwrap();
        b.take_effects();
        b.committed();
        b.engine(set("s0", 90), now, at).unwrap();
        b.engine(set("new", 10), now, at).unwrap();
        let lost = b.take_effects();
        b.rollback(lost);
        assert_eq!((b.effective("s0"), b.effective("new")), (80, 50));
        assert!(b.take_effects().changes.is_empty());
    }
}
