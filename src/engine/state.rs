//! The checkpoint ledger: `state.json` (format version, plan checksum, one record per step) and the
//! append-only `events.jsonl`, both written so that a crash never leaves a torn file; and the per-plan lock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::plan::{Plan, StepKind};
use serde::de::DeserializeOwned;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    NotStarted,
    Running,
    Waiting,
    Failed,
    Done,
    /// `ecmigrate rollback` pointed clients back at the source; the plan cannot be run again.
    RolledBack,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::NotStarted => "not_started",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Failed => "failed",
            RunStatus::Done => "done",
            RunStatus::RolledBack => "rolled_back",
        }
    }

    /// The state as `status` shows it: a run recorded `running`/`waiting` that no process holds (`active`)
    /// was interrupted (a crash, a kill, a reboot); `ecmigrate run` resumes it.
    pub fn shown(self, active: bool) -> &'static str {
        match self {
            RunStatus::Running | RunStatus::Waiting if !active => "interrupted",
            other => other.as_str(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub kind: StepKind,
    /// Checksum of this step's spec: a finished step whose spec changed cannot be resumed.
    pub checksum: String,
    pub status: StepStatus,
    pub attempt: u32,
    /// What the step is about to create, recorded before the mutating call, so a resumed step finds it.
    #[serde(default)]
    pub intent: Map<String, Value>,
    #[serde(default)]
    pub outputs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StepRecord {
    pub fn new(spec: &crate::plan::StepSpec) -> Self {
        StepRecord {
            kind: spec.kind(),
            checksum: checksum(spec),
            status: StepStatus::Pending,
            attempt: 0,
            intent: Map::new(),
            outputs: Map::new(),
            started_at: None,
            finished_at: None,
            error: None,
        }
    }

    /// This step's recorded intent as the step's own type (absent keys take their defaults).
    pub fn intent_as<T: DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(Value::Object(self.intent.clone())).unwrap_or_default()
    }

    /// The step has run, or is running: its spec is part of what the run did.
    pub fn started(&self) -> bool {
        self.status != StepStatus::Pending
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub format_version: u32,
    pub plan_name: String,
    pub plan_checksum: String,
    /// The plan this run is running: the one it started with plus the accepted edits of steps that had
    /// not started (it holds no secrets: tokens are referenced, never inlined).
    pub plan: Value,
    pub run_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub state: RunStatus,
    pub steps: Vec<StepRecord>,
}

/// SHA-256 of a value's JSON, hex.
pub fn checksum<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).expect("serializable");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl RunState {
    pub fn new(plan: &Plan, run_id: String) -> Self {
        let now = Utc::now();
        RunState {
            format_version: FORMAT_VERSION,
            plan_name: plan.name.clone(),
            plan_checksum: checksum(plan),
            plan: serde_json::to_value(plan).expect("plan serializes"),
            run_id,
            created_at: now,
            updated_at: now,
            state: RunStatus::NotStarted,
            steps: plan.steps.iter().map(StepRecord::new).collect(),
        }
    }

    /// The typed outputs of the first finished step of `kind` (fields it did not record take defaults).
    pub fn outputs_as<T: DeserializeOwned>(&self, kind: StepKind) -> Option<T> {
        self.outputs_of(kind)
            .and_then(|o| serde_json::from_value(Value::Object(o.clone())).ok())
    }

    /// Outputs of the first step of `kind`, if it finished.
    pub fn outputs_of(&self, kind: StepKind) -> Option<&Map<String, Value>> {
        self.steps
            .iter()
            .find(|s| s.kind == kind && s.status == StepStatus::Done)
            .map(|s| &s.outputs)
    }

    pub fn step_done(&self, kind: StepKind) -> bool {
        self.steps
            .iter()
            .any(|s| s.kind == kind && s.status == StepStatus::Done)
    }

    /// Nothing was created yet: no step finished and none recorded an intent (say, preflight refused).
    /// Such a run can start over with whatever the plan says now.
    pub fn nothing_created(&self) -> bool {
        self.steps
            .iter()
            .all(|s| s.status != StepStatus::Done && s.intent.is_empty())
    }
}

/// Where a plan's state lives.
#[derive(Debug, Clone)]
pub struct StatePaths {
    pub dir: PathBuf,
}

impl StatePaths {
    pub fn new(state_dir: &Path, plan_name: &str) -> Self {
        StatePaths {
            dir: state_dir.join(plan_name),
        }
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn events_file(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }

    pub fn load(&self) -> Result<Option<RunState>> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::failed(
                    format!("cannot read {}: {e}", path.display()),
                    "check the permissions of the state folder (--state-dir)",
                ));
            }
        };
        // The format version first: a state of another version may not parse as this one.
        let version = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("format_version").and_then(Value::as_u64));
        if let Some(v) = version
            && v != u64::from(FORMAT_VERSION)
        {
            return Err(Error::StateVersion {
                message: format!(
                    "the state file {} has format version {v}; this ecmigrate reads and writes version {FORMAT_VERSION}",
                    path.display()
                ),
                hint:
                    "nothing was changed; finish the run with the ecmigrate version that started it"
                        .into(),
            });
        }
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::failed(
                format!("the state file {} is not readable: {e}", path.display()),
                "restore it from a backup, or move it away to start the migration over",
            )
        })
    }

    /// Is a run of this plan holding the lock right now?
    pub fn is_locked(&self) -> bool {
        match File::open(self.lock_file()) {
            Ok(f) => match f.try_lock_shared() {
                Ok(()) => {
                    let _ = f.unlock();
                    false
                }
                Err(_) => true,
            },
            Err(_) => false,
        }
    }
}

/// The exclusive lock of one plan's state; only its holder writes the state.
pub struct StateLock {
    paths: StatePaths,
    _file: File,
}

impl StateLock {
    pub fn acquire(paths: &StatePaths) -> Result<StateLock> {
        std::fs::create_dir_all(&paths.dir).map_err(|e| {
            Error::failed(
                format!(
                    "cannot create the state folder {}: {e}",
                    paths.dir.display()
                ),
                "choose a writable folder with --state-dir or ECMIGRATE_STATE_DIR",
            )
        })?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(paths.lock_file())
            .map_err(|e| {
                Error::failed(
                    format!("cannot open the lock file: {e}"),
                    "check the state folder",
                )
            })?;
        file.try_lock().map_err(|_| Error::Busy {
            message: format!(
                "another ecmigrate process is working on this plan ({} is locked)",
                paths.lock_file().display()
            ),
            hint: "nothing was changed; wait for it to finish, or watch it with `ecmigrate status PLAN`"
                .into(),
        })?;
        Ok(StateLock {
            paths: paths.clone(),
            _file: file,
        })
    }

    /// Write the state atomically: temp file, fsync, rename, fsync of the folder.
    pub fn save(&self, state: &RunState) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
        write_atomic(&self.paths.state_file(), &bytes).map_err(|e| {
            Error::failed(
                format!("cannot write the state file: {e}"),
                "check disk space and permissions of the state folder",
            )
        })
    }

    pub fn journal(&self) -> crate::engine::journal::Journal {
        crate::engine::journal::Journal::new(self.paths.events_file())
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // A full disk leaves no half-written temp file behind: the previous state stays as it was.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}
