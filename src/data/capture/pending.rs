//! The capture's pending set: changed keys in memory up to a bound, then appended to a spill file.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use super::ChangedKey;

/// The pending set: in memory up to a bound, then appended to a spill file (duplicates across the two are
/// harmless: a replay copies the key's current state, twice at worst).
pub(super) struct Pending {
    pub(super) memory: HashSet<ChangedKey>,
    pub(super) bound: usize,
    pub(super) spill_path: PathBuf,
    spill: Option<BufWriter<std::fs::File>>,
    spilled: u64,
    /// Spill records already read back.
    spill_read: u64,
    pub(super) oldest: Option<Instant>,
}

impl Pending {
    pub(super) fn new(bound: usize, spill_path: PathBuf) -> Pending {
        Pending {
            memory: HashSet::new(),
            bound: bound.max(1),
            spill_path,
            spill: None,
            spilled: 0,
            spill_read: 0,
            oldest: None,
        }
    }

    pub(super) fn insert(&mut self, key: ChangedKey) -> std::io::Result<()> {
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        if self.memory.len() < self.bound || self.memory.contains(&key) {
            self.memory.insert(key);
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(s) => s,
            None => {
                if let Some(parent) = self.spill_path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(&self.spill_path)?;
                self.spill.insert(BufWriter::new(f))
            }
        };
        // One record: db (8 bytes), key length (4 bytes), key.
        spill.write_all(&key.0.to_le_bytes())?;
        spill.write_all(&(key.1.len() as u32).to_le_bytes())?;
        spill.write_all(&key.1)?;
        self.spilled += 1;
        Ok(())
    }

    pub(super) fn len(&self) -> u64 {
        self.memory.len() as u64 + (self.spilled - self.spill_read)
    }

    /// Up to `max` keys: from memory first, then from the spill file.
    pub(super) fn take(&mut self, max: usize) -> std::io::Result<Vec<ChangedKey>> {
        let mut out: Vec<ChangedKey> = Vec::with_capacity(max.min(self.memory.len()));
        let keys: Vec<ChangedKey> = self.memory.iter().take(max).cloned().collect();
        for k in keys {
            self.memory.remove(&k);
            out.push(k);
        }
        if out.len() < max && self.spilled > self.spill_read {
            if let Some(s) = &mut self.spill {
                s.flush()?;
            }
            let mut reader = BufReader::new(std::fs::File::open(&self.spill_path)?);
            // Skip what was read before (spill files are bounded by the churn between two drains).
            for _ in 0..self.spill_read {
                read_record(&mut reader)?;
            }
            while out.len() < max && self.spill_read < self.spilled {
                out.push(read_record(&mut reader)?);
                self.spill_read += 1;
            }
            if self.spill_read == self.spilled {
                self.spill = None;
                let _ = std::fs::remove_file(&self.spill_path);
                self.spilled = 0;
                self.spill_read = 0;
            }
        }
        if self.len() == 0 {
            self.oldest = None;
        }
        Ok(out)
    }
}

fn read_record(r: &mut impl BufRead) -> std::io::Result<ChangedKey> {
    let mut db = [0u8; 8];
    let mut len = [0u8; 4];
    r.read_exact(&mut db)?;
    r.read_exact(&mut len)?;
    let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut key)?;
    Ok((i64::from_le_bytes(db), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_spills_past_its_bound_and_gives_everything_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Pending {
            memory: HashSet::new(),
            bound: 10,
            spill_path: dir.path().join("spill"),
            spill: None,
            spilled: 0,
            spill_read: 0,
            oldest: None,
        };
        for i in 0..100u32 {
            p.insert((0, format!("k{i}").into_bytes())).unwrap();
            p.insert((0, format!("k{}", i % 5).into_bytes())).unwrap();
        }
        assert_eq!(p.memory.len(), 10);
        assert!(p.spilled > 0);
        let mut seen = HashSet::new();
        loop {
            let batch = p.take(7).unwrap();
            if batch.is_empty() {
                break;
            }
            seen.extend(batch);
        }
        assert_eq!(seen.len(), 100);
        assert_eq!(p.len(), 0);
        assert!(!dir.path().join("spill").exists());
    }
}
