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
        for row in due {
            if let Err(e) = fire(&pool, &executor, &definitions, &row).await {
                tracing::warn!(workflow = %row.workflow, schedule = row.idx, error = %e, "a schedule's firing was not committed; it is tried again");
            }
        }
    }
}

/// Commits the due firings of one schedule.
async fn fire(
    pool: &sqlx::PgPool,
    executor: &Workflows,
    definitions: &super::definitions::Definitions,
    row: &StoredSchedule,
) -> anyhow::Result<()> {
    let spec: ScheduleSpec = serde_json::from_value(row.spec.0.clone())?;
    let schedule = Schedule::new(spec).map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))?;
    let definition = definitions.get(pool, &row.workflow, row.version).await?;
    let now = Utc::now();
    let due = schedule::due(&schedule, row.next_fire_at, now, TOLERANCE);
    let Some(next) = due.next else {
        anyhow::bail!("the pattern {:?} never fires again", schedule.spec.cron);
    };
    let inputs = serde_json::to_value(&schedule.spec.inputs)?;
    let inputs = definition.check_inputs("inputs", Some(inputs)).map_err(|e| anyhow::anyhow!(e.0.message))?;
    let trigger = format!("cron:{}", row.idx);
    let mut executions = Vec::new();
    for fire_at in &due.fire {
        let id = schedule::execution_id(&row.workflow, row.idx as usize, *fire_at);
        let execution = Execution::new(id.to_string(), &definition, inputs.clone());
        executions.push(NewExecution {
            id,
            workflow: &row.workflow,
            version: row.version,
            queue: &definition.workflow.queue,
            priority: i16::from(definition.workflow.priority),
            state: serde_json::to_value(&execution)?,
            by: "orchestrator",
            trigger: trigger.clone(),
            fire_at: Some(*fire_at),
        });
    }
    let overlap = schedule.spec.overlap;
    let fired = workflows::fire(
        pool,
        row,
        row.next_fire_at,
        &executions,
        overlap == Overlap::Skip,
        overlap == Overlap::Replace,
        next,
    )
    .await?;
    if due.dropped > 0 || fired.skipped > 0 || !fired.started.is_empty() {
        tracing::info!(
            workflow = %row.workflow,
            schedule = row.idx,
            started = fired.started.len(),
            skipped_overlapping = fired.skipped,
            dropped_missed = due.dropped,
            next = %next,
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
    Ok(())
}
