//! The run's journal, `events.jsonl`: one JSON object per line, each line written whole and fsynced before
//! the run goes on. A line that cannot be written (a full disk, say) is cut back off the file and remembered,
//! and the run fails on it (resumably) instead of ending with a journal that stops mid-line.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::Utc;
use serde_json::Value;

use crate::engine::events::{Event, EventListener};

/// Appends every event to `events.jsonl`, one fsynced line each.
pub struct Journal {
    path: PathBuf,
    /// The first write that failed: the run cannot claim a complete journal after it.
    failed: Mutex<Option<String>>,
}

impl Journal {
    pub fn new(path: PathBuf) -> Self {
        Journal {
            path,
            failed: Mutex::new(None),
        }
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let before = file.metadata()?.len();
        let written = file.write_all(line).and_then(|()| file.sync_data());
        if written.is_err() {
            // A torn line would corrupt every later one: take it back off (best effort).
            let _ = file.set_len(before);
            let _ = file.sync_data();
        }
        written
    }
}

impl EventListener for Journal {
    fn event(&self, event: &Event) {
        // Progress ticks would swamp the journal; their start and end are in the step events.
        if matches!(event, Event::Progress { .. }) {
            return;
        }
        let mut line = serde_json::json!({ "at": Utc::now().to_rfc3339() });
        if let (Value::Object(obj), Ok(Value::Object(ev))) =
            (&mut line, serde_json::to_value(event))
        {
            obj.extend(ev);
        }
        #[cfg(feature = "test-hooks")]
        let name = match event {
            Event::Call { operation, .. } => format!("call:{operation}"),
            _ => format!(
                "{}:{}",
                line["event"].as_str().unwrap_or(""),
                line["kind"].as_str().unwrap_or("")
            ),
        };
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        match self.append(&bytes) {
            Ok(()) => {
                #[cfg(feature = "test-hooks")]
                crate::faults::crash_after(&name);
            }
            Err(e) => {
                let mut failed = self.failed.lock().expect("journal state");
                if failed.is_none() {
                    *failed = Some(format!("cannot write {}: {e}", self.path.display()));
                }
            }
        }
    }

    fn health(&self) -> Result<(), String> {
        match self.failed.lock().expect("journal state").clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::EventSink;
    use std::sync::Arc;

    fn note() -> Event {
        Event::Note {
            kind: crate::plan::StepKind::Backup,
            message: "a note".into(),
        }
    }

    #[test]
    fn a_journal_that_cannot_write_fails_the_run_it_belongs_to() {
        // /dev/full answers every write with ENOSPC, as a full disk does.
        let journal = Arc::new(Journal::new(PathBuf::from("/dev/full")));
        let sink = EventSink::new(vec![journal.clone()]);
        assert!(sink.check().is_ok());
        sink.emit(note());
        let err = sink.check().unwrap_err().to_string();
        assert!(err.contains("journal is incomplete"), "{err}");
        assert!(err.contains("/dev/full"), "{err}");
    }

    #[test]
    fn every_line_is_whole_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let journal = Journal::new(path.clone());
        journal.event(&note());
        journal.event(&note());
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["event"], "note");
        }
        assert!(journal.health().is_ok());
    }
}
