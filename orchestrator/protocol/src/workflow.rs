//! Workflow executions on the wire: the kinds of their events (`orch.evt.workflow.<workflow>.<kind>`)
//! and the data every one of them carries (docs/protocol.md §16).

use serde::{Deserialize, Serialize};

/// A change of an execution or of one of its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowEvent {
    Started,
    StepStarted,
    StepSucceeded,
    StepRetrying,
    StepFailed,
    StepSkipped,
    CompensationStarted,
    Succeeded,
    Failed,
    Cancelled,
}

impl WorkflowEvent {
    pub const ALL: [WorkflowEvent; 10] = [
        WorkflowEvent::Started,
        WorkflowEvent::StepStarted,
        WorkflowEvent::StepSucceeded,
        WorkflowEvent::StepRetrying,
        WorkflowEvent::StepFailed,
        WorkflowEvent::StepSkipped,
        WorkflowEvent::CompensationStarted,
        WorkflowEvent::Succeeded,
        WorkflowEvent::Failed,
        WorkflowEvent::Cancelled,
    ];

    /// The last token of the subject, e.g. `step_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowEvent::Started => "started",
            WorkflowEvent::StepStarted => "step_started",
            WorkflowEvent::StepSucceeded => "step_succeeded",
            WorkflowEvent::StepRetrying => "step_retrying",
            WorkflowEvent::StepFailed => "step_failed",
            WorkflowEvent::StepSkipped => "step_skipped",
            WorkflowEvent::CompensationStarted => "compensation_started",
            WorkflowEvent::Succeeded => "succeeded",
            WorkflowEvent::Failed => "failed",
            WorkflowEvent::Cancelled => "cancelled",
        }
    }

    /// The CloudEvents `type`, e.g. `io.orch.workflow.step_failed.v1`.
    pub fn type_str(self) -> &'static str {
        match self {
            WorkflowEvent::Started => "io.orch.workflow.started.v1",
            WorkflowEvent::StepStarted => "io.orch.workflow.step_started.v1",
            WorkflowEvent::StepSucceeded => "io.orch.workflow.step_succeeded.v1",
            WorkflowEvent::StepRetrying => "io.orch.workflow.step_retrying.v1",
            WorkflowEvent::StepFailed => "io.orch.workflow.step_failed.v1",
            WorkflowEvent::StepSkipped => "io.orch.workflow.step_skipped.v1",
            WorkflowEvent::CompensationStarted => "io.orch.workflow.compensation_started.v1",
            WorkflowEvent::Succeeded => "io.orch.workflow.succeeded.v1",
            WorkflowEvent::Failed => "io.orch.workflow.failed.v1",
            WorkflowEvent::Cancelled => "io.orch.workflow.cancelled.v1",
        }
    }
}

/// The data of every workflow event; the fields that do not apply are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowEventData {
    pub execution_id: String,
    pub workflow: String,
    pub version: i32,
    /// The execution's status after the change.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Why a step failed, or is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why a step was skipped, or the execution failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a retried step's next attempt is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<String>,
    /// The compensating step that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<String>,
}
