//! The scheduler: on the leader, it sleeps until the next firing of any schedule, then commits
//! each due schedule's firings ([`super::schedule::due`]) with its next firing time in one fenced
//! transaction (`storage::workflows::fire`). A firing is therefore started exactly once: a
//! leader that dies before the commit leaves it to the next one (which finds it due, late, and
//! applies the catch-up policy), and a deposed leader cannot commit at all.

use std::time::Duration;

use chrono::Utc;

use super::executor::Workflows;
use super::machine::Execution;
use super::schedule::{self, Overlap, Schedule, ScheduleSpec};
use crate::shutdown::Shutdown;
use crate::storage::workflows::{self, NewExecution, StoredSchedule};

/// A firing at most this late is on time; a later one was missed (catch-up policy).
pub const TOLERANCE: Duration = Duration::from_secs(5);

/// The longest the scheduler sleeps: storing a definition wakes it, this is a safety net.
const LOOK_EVERY: Duration = Duration::from_secs(60);

pub async fn run(pool: sqlx::PgPool, executor: Workflows, mut shutdown: Shutdown) {
    let mut changed = executor.watch_definitions();
    let definitions = super::definitions::Definitions::default();
    loop {
        let now = Utc::now();
        let wait = match workflows::next_firing(&pool).await {
            Ok(Some(next)) => (next - now).to_std().unwrap_or_default().min(LOOK_EVERY),
            Ok(None) => LOOK_EVERY,
            Err(e) => {
                tracing::warn!(error = %e, "the workflow schedules cannot be read; trying again");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.requested() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = changed.changed() => continue,
        }
        let now = Utc::now();
        let due = match workflows::due_schedules(&pool, now).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "the due workflow schedules cannot be read; trying again");
                continue;
            }
        };
        // Every due schedule's firings in one transaction: a thousand schedules due on the same
        // second cost one commit. A schedule that cannot be prepared is left due (logged).
        if let Err(e) = fire_all(&pool, &executor, &definitions, &due).await {
            tracing::warn!(schedules = due.len(), error = %e, "the due schedules' firings were not committed; they are tried again");
        }
    }
}

/// What one due schedule fires, before it is committed.
struct Prepared<'a> {
    row: &'a StoredSchedule,
    definition: std::sync::Arc<super::definition::Definition>,
    overlap: Overlap,
    due: schedule::Due,
    next: chrono::DateTime<Utc>,
    inputs: serde_json::Value,
}

/// Prepares each due schedule's firings (schedules that cannot be are logged and left due),
/// commits them all in one transaction, then queues the started executions and cancels the
/// replaced ones.
async fn fire_all(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    definitions: &super::definitions::Definitions,
    rows: &[StoredSchedule],
) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut prepared = Vec::with_capacity(rows.len());
    for row in rows {
        match prepare(pool, definitions, row, now).await {
            Ok(p) => prepared.push(p),
            Err(e) => {
                tracing::warn!(workflow = %row.workflow, schedule = row.idx, error = %e, "a schedule cannot fire; it is tried again")
            }
        }
    }
    let mut firings = Vec::with_capacity(prepared.len());
    for p in &prepared {
        let trigger = format!("cron:{}", p.row.idx);
        let mut executions = Vec::with_capacity(p.due.fire.len());
        for fire_at in &p.due.fire {
            let id = schedule::execution_id(&p.row.workflow, p.row.idx as usize, *fire_at);
            let execution = Execution::new(id.to_string(), &p.definition, p.inputs.clone());
            executions.push(NewExecution {
                id,
                workflow: &p.row.workflow,
                version: p.row.version,
                queue: &p.definition.workflow.queue,
                priority: i16::from(p.definition.workflow.priority),
                state: serde_json::to_value(&execution)?,
                by: "orchestrator",
                trigger: trigger.clone(),
                fire_at: Some(*fire_at),
            });
        }
        firings.push(workflows::Firing {
            schedule: p.row,
            expected: p.row.next_fire_at,
            executions,
            skip_overlap: p.overlap == Overlap::Skip,
            replace: p.overlap == Overlap::Replace,
            next: p.next,
        });
    }
    let all_fired = workflows::fire_all(pool, &firings).await?;
    for (p, fired) in prepared.iter().zip(all_fired) {
        if p.due.dropped > 0 || fired.skipped > 0 || !fired.started.is_empty() {
            tracing::debug!(
                workflow = %p.row.workflow,
                schedule = p.row.idx,
                started = fired.started.len(),
                skipped_overlapping = fired.skipped,
                dropped_missed = p.due.dropped,
                next = %p.next,
                "schedule fired"
            );
        }
        for id in &fired.replaced {
            if let Err(e) = executor.cancel(*id, "replaced by a newer firing of its schedule".into()).await {
                tracing::warn!(execution = %id, error = %e, "a replaced execution could not be cancelled");
            }
        }
        for id in fired.started {
            executor.queued(id);
        }
    }
    Ok(())
}

/// What a due schedule fires now.
async fn prepare<'a>(
    pool: &sqlx::PgPool,
    definitions: &super::definitions::Definitions,
    row: &'a StoredSchedule,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<Prepared<'a>> {
    let spec: ScheduleSpec = serde_json::from_value(row.spec.0.clone())?;
    let schedule = Schedule::new(spec).map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))?;
    let definition = definitions.get(pool, &row.workflow, row.version).await?;
    let due = schedule::due(&schedule, row.next_fire_at, now, TOLERANCE);
    let Some(next) = due.next else {
        anyhow::bail!("the pattern {:?} never fires again", schedule.spec.cron);
    };
    let inputs = serde_json::to_value(&schedule.spec.inputs)?;
    let inputs = definition.check_inputs("inputs", Some(inputs)).map_err(|e| anyhow::anyhow!(e.0.message))?;
    Ok(Prepared { row, definition, overlap: schedule.spec.overlap, due, next, inputs })
}
