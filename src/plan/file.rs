//! Reading a plan file with bounds: only a regular file, only up to [`MAX_PLAN_BYTES`], only UTF-8.
//!
//! A plan path is user input: it can name `/dev/zero` (endless), a FIFO (an open blocks until a writer
//! comes), a directory, or a file that grows while it is read. Each is refused from its metadata before
//! any byte is read, and the read itself stops one byte past the cap.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest plan file read. A full plan is a few KiB; a thousand-step plan stays far below this.
pub const MAX_PLAN_BYTES: u64 = 1024 * 1024;

/// The cap in words, as messages say it.
const CAP_WORDS: &str = "1 MiB (1,048,576 bytes)";

/// Why a plan file was not read: the rule it breaks and, when known, the line.
pub(crate) type Refused = (Option<usize>, String);

/// The text of the plan file at `path`, or why it was refused (for the `(file)` issue).
pub(crate) fn read_bounded(path: &Path) -> Result<String, Refused> {
    read_checked(path)
        .map_err(|rule| (None, rule))
        .and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|e| not_utf8(e.as_bytes(), e.utf8_error().valid_up_to()))
        })
}

fn read_checked(path: &Path) -> Result<Vec<u8>, String> {
    // Metadata first: it neither opens nor blocks, so a FIFO or a device is refused before anything
    // waits on it or reads from it.
    let meta =
        std::fs::metadata(path).map_err(|e| format!("the plan file must be readable: {e}"))?;
    check_metadata(&meta)?;
    // O_NONBLOCK: should the path be swapped for a FIFO after the check, the open returns at once
    // instead of waiting for a writer; on a regular file it changes nothing.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("the plan file must be readable: {e}"))?;
    // The file opened is the one checked: check it again through the handle.
    let meta = file
        .metadata()
        .map_err(|e| format!("the plan file must be readable: {e}"))?;
    check_metadata(&meta)?;
    read_capped(file)
}

/// Refuse anything but a regular file within the cap.
fn check_metadata(meta: &Metadata) -> Result<(), String> {
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO (named pipe)"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "a plan must be a regular file, and this is {what}; name the plan's YAML file"
        ));
    }
    if meta.len() > MAX_PLAN_BYTES {
        return Err(too_big(&format!(
            "this one has {} bytes",
            thousands(meta.len())
        )));
    }
    Ok(())
}

/// Read at most one byte past the cap: a file that grew after its size was checked is refused too.
fn read_capped(file: File) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("the plan file must be readable: {e}"))?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(too_big("this one grew past that while it was read"));
    }
    Ok(bytes)
}

fn too_big(why: &str) -> String {
    format!("a plan file is at most {CAP_WORDS}; {why}")
}

/// Where the first byte that is not UTF-8 is, by line (bytes before it are valid text).
fn not_utf8(bytes: &[u8], valid_up_to: usize) -> Refused {
    let line = 1 + bytes[..valid_up_to].iter().filter(|b| **b == b'\n').count();
    let rule = format!(
        "a plan must be UTF-8 text; line {line} holds a byte that is not (save the file as UTF-8)"
    );
    (Some(line), rule)
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
